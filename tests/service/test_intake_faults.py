"""Intake under faults, on real servers: replicas sharing SeaweedFS S3, uvicorn over HTTP.

* one delivery replayed to two replicas is queued once; replayed after a restart (a new
  service, its memory empty) it is a duplicate; a delivery signed in the future and replayed
  after the window's worth of time is still a duplicate (the ledger's TTL covers the ± window);
* the object store unreachable (a real TCP connection refused/reset by a proxy in front of
  SeaweedFS): 503 ``unavailable``, nothing remembered, MLflow's retry accepted once it is back;
* JSON nested 10,000 deep: 400, and the same delivery id retried with a readable body is
  accepted; non-canonical version numbers: 400, never queued; the read API answers 422 for
  ``²``, ``007`` and ``0`` and 404 for an unknown version;
* a 1,000-delivery signed burst over two replicas for 10 versions: each delivery id accepted
  exactly once across the replicas and each version queued at most once per replica (the
  benchmark ``benchmarks/service_load.py --modes burst`` scores them: exactly 10 score runs).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from sslmem.config import RuntimeSettings
from sslmem.service.core import ScoringService
from sslmem.service.webhooks import sign
from sslmem.tracking import TrackingTarget
from tests.servers import (
    HOST,
    MlflowServer,
    S3Server,
    free_port,
    sslmem_serve_env,
    start_sslmem_serve,
)
from tests.service.http import metric, request, scrape, serve_in_thread, wait_until
from tests.service.scoring_setup import runtime_settings, service_settings

pytestmark = [pytest.mark.slow, pytest.mark.s3]

SECRET = "intake-faults-" + uuid.uuid4().hex[:8]
MAX_AGE_S = 300.0


def _event(name: str, version: str, *, extra: str = "") -> bytes:
    data = {"name": name, "version": version, "source": "models:/m-1", "run_id": "r", "tags": {}}
    payload = {"entity": "model_version", "action": "created", "timestamp": "t", "data": data}
    text = json.dumps(payload)
    return (text[:-1] + f', "extra": {extra}}}' if extra else text).encode()


def _signed(body: bytes, delivery: str, *, timestamp: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if timestamp is None else timestamp))
    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign(SECRET, delivery, stamp, body),
    }


class TcpProxy:
    """A real TCP hop in front of a server that can be cut (connections reset) and restored."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.port = free_port()
        self.up = True
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, self.port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    def cut(self) -> None:
        """Refuse new connections (reset at once) and reset every open one."""
        with self._lock:
            self.up = False
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.close()
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self.up = True

    def close(self) -> None:
        self._stopped.set()
        self.cut()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if not self.up:
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    client.close()  # RST: what a blipping store looks like to the client
                    continue
                server = socket.create_connection(self.upstream, timeout=10)
                self._open |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _runtime(local_mlflow: TrackingTarget, s3: S3Server, bucket: str, endpoint: str) -> Any:
    return runtime_settings(
        local_mlflow.tracking_uri,
        f"s3://{bucket}/svc",
        s3_endpoint=endpoint,
        s3_access_key=SecretStr(s3.access_key),
        s3_secret_key=SecretStr(s3.secret_key),
        s3_secure=False,
        s3_region="us-east-1",
    )


def _replica(runtime: RuntimeSettings, name: str) -> ScoringService:
    """One replica whose worker keeps jobs queued (where they can be counted), never runs them."""
    settings = service_settings(
        webhook_secret=SecretStr(SECRET),
        webhook_max_age_s=MAX_AGE_S,
        replica_id=name,
        models=["enc", "burst"],  # in scope by name: no registered model needed
    )
    service = ScoringService(settings, runtime)
    service.worker.start(run_jobs=False)
    return service


@contextlib.contextmanager
def _serving(runtime: RuntimeSettings, *names: str) -> Iterator[list[tuple[ScoringService, str]]]:
    with contextlib.ExitStack() as stack:
        replicas = []
        for name in names:
            service = _replica(runtime, name)
            stack.callback(service.worker.stop, 0)
            base = stack.enter_context(serve_in_thread(service, manage_lifecycle=False))
            replicas.append((service, f"{base}/v1/webhooks/mlflow"))
        yield replicas


@pytest.fixture
def runtime(local_mlflow: TrackingTarget, s3_server: S3Server) -> Any:
    bucket = s3_server.make_bucket("intake")
    return _runtime(local_mlflow, s3_server, bucket, s3_server.endpoint)


def test_one_delivery_to_two_replicas_and_after_a_restart_is_queued_once(
    runtime: RuntimeSettings,
) -> None:
    body = _event("enc", "3")
    headers = _signed(body, str(uuid.uuid4()))
    with _serving(runtime, "a", "b") as [(a, url_a), (b, url_b)]:
        with ThreadPoolExecutor(2) as pool:  # both at once: the conditional create decides
            answers = list(
                pool.map(lambda url: request("POST", url, body, headers), [url_a, url_b])
            )
        assert sorted(status for status, _ in answers) == [200, 202], answers
        assert sorted(answer["outcome"] for _, answer in answers) == ["accepted", "duplicate"]
        assert a.worker.depth() + b.worker.depth() == 1
        # MLflow's retry to either replica, later: answered from memory or the ledger.
        for url in (url_a, url_b):
            assert request("POST", url, body, headers)[1]["outcome"] == "duplicate"
        assert a.worker.depth() + b.worker.depth() == 1
    with _serving(runtime, "a-restarted") as [(restarted, url)]:
        status, answer = request("POST", url, body, headers)
        assert (status, answer["outcome"], answer["queued"]) == (200, "duplicate", False)
        assert restarted.worker.depth() == 0


def test_future_timestamped_delivery_replayed_after_the_window_is_still_duplicate(
    runtime: RuntimeSettings,
) -> None:
    start = time.time()
    body = _event("enc", "4")
    headers = _signed(body, str(uuid.uuid4()), timestamp=start + MAX_AGE_S - 10)
    with _serving(runtime, "a") as [(a, url)]:
        assert request("POST", url, body, headers)[1]["outcome"] == "accepted"
        assert a.worker.depth() == 1
    # Another replica (nothing in memory), almost 2 x max age later by its clock: the
    # timestamp is still inside its window, so only the ledger's TTL can refuse the replay.
    with _serving(runtime, "b") as [(b, url)]:
        b.verifier.clock = lambda: time.time() + 2 * MAX_AGE_S - 30
        status, answer = request("POST", url, body, headers)
        assert (status, answer["outcome"]) == (200, "duplicate"), answer
        assert b.worker.depth() == 0


def test_store_unreachable_answers_503_and_the_retry_is_accepted_later(
    local_mlflow: TrackingTarget, s3_server: S3Server
) -> None:
    proxy = TcpProxy(s3_server.endpoint)
    try:
        bucket = s3_server.make_bucket("intake-blip")
        runtime = _runtime(local_mlflow, s3_server, bucket, proxy.endpoint)
        body = _event("enc", "5")
        headers = _signed(body, str(uuid.uuid4()))
        with _serving(runtime, "a") as [(a, url)]:
            base = url.rsplit("/v1/", 1)[0]
            proxy.cut()
            status, answer = request("POST", url, body, headers)
            assert (status, answer["outcome"], answer["queued"]) == (503, "unavailable", False)
            assert SECRET not in json.dumps(answer)
            assert a.worker.depth() == 0
            text = scrape(base)
            assert metric(text, "sslmem_webhook_deliveries_total", outcome="unavailable") == 1
            proxy.restore()  # MLflow retries the same delivery: nothing was remembered
            status, answer = request("POST", url, body, headers)
            assert (status, answer["outcome"], answer["queued"]) == (202, "accepted", True)
            assert request("POST", url, body, headers)[1]["outcome"] == "duplicate"
            assert a.worker.depth() == 1
    finally:
        proxy.close()


def test_deep_json_is_400_and_the_retry_of_its_id_is_accepted(runtime: RuntimeSettings) -> None:
    delivery = str(uuid.uuid4())
    deep = _event("enc", "6", extra="[" * 10_000 + "]" * 10_000)
    with _serving(runtime, "a") as [(a, url)]:
        status, answer = request("POST", url, deep, _signed(deep, delivery))
        assert (status, answer["outcome"]) == (400, "malformed"), answer
        assert "deeper than 32" in answer["detail"]
        body = _event("enc", "6")  # the same id, readable now (MLflow's retry)
        status, answer = request("POST", url, body, _signed(body, delivery))
        assert (status, answer["outcome"], answer["queued"]) == (202, "accepted", True)
        assert a.worker.depth() == 1


@pytest.mark.parametrize("version", ["0", "007", "1" * 20, "²"])
def test_non_canonical_versions_are_400_and_never_queued(
    runtime: RuntimeSettings, version: str
) -> None:
    body = _event("enc", version)
    with _serving(runtime, "a") as [(a, url)]:
        status, answer = request("POST", url, body, _signed(body, str(uuid.uuid4())))
        assert (status, answer["outcome"], answer["queued"]) == (400, "malformed", False)
        assert a.worker.depth() == 0


def test_read_api_is_422_for_non_canonical_versions_and_404_for_unknown(
    runtime: RuntimeSettings,
) -> None:
    with _serving(runtime, "a") as [(_, url)]:
        base = url.rsplit("/v1/", 1)[0]
        for version in ("²", "007", "0", "1" * 11, "-1"):
            path = f"/v1/models/enc/versions/{urllib.parse.quote(version)}"
            status, answer = request("GET", base + path)
            assert status == 422, (version, status, answer)
        status, _ = request("GET", f"{base}/v1/models/no-such-model/versions/1")
        assert status == 404


def test_burst_of_1000_deliveries_over_two_replicas_for_10_versions(
    runtime: RuntimeSettings,
) -> None:
    """500 delivery ids (50 per version), each sent to both replicas at once: 1,000 requests."""
    deliveries = []
    for version in range(1, 11):
        body = _event("burst", str(version))
        deliveries += [(body, _signed(body, str(uuid.uuid4()))) for _ in range(50)]
    with _serving(runtime, "a", "b") as [(a, url_a), (b, url_b)]:
        requests = [(url, body, h) for body, h in deliveries for url in (url_a, url_b)]
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda r: request("POST", *r), requests))
        outcomes = [answer["outcome"] for _, answer in answers]
        assert outcomes.count("accepted") == 500 and outcomes.count("duplicate") == 500
        assert all(status in (200, 202) for status, _ in answers)
        queued = [
            (url, json.loads(body)["data"]["version"])
            for (url, body, _), (_, answer) in zip(requests, answers, strict=True)
            if answer["queued"]
        ]
        assert len(queued) == len(set(queued))  # each version at most once per replica
        assert {version for _, version in queued} == {str(v) for v in range(1, 11)}
        assert a.worker.depth() + b.worker.depth() == len(queued) <= 20


def test_sslmem_serve_writes_json_lines_with_delivery_and_job_ids(
    webhook_mlflow: MlflowServer, s3_server: S3Server, tmp_path: Path
) -> None:
    """The real process: every line one JSON object; the ids on the lines they belong to."""
    env = sslmem_serve_env(
        tmp_path, mlflow=webhook_mlflow, s3=s3_server,
        store_uri=f"s3://{s3_server.make_bucket('intake-logs')}/svc", webhook_secret=SECRET,
        replica="logs", config_overrides=[], log_format="json", reconcile_interval_s="3600",
        models='["enc-logs"]',
    )  # fmt: skip
    delivery = str(uuid.uuid4())
    body = _event("enc-logs", "1")  # no such version: the job finds nothing to score
    log = tmp_path / "serve-logs.log"

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines()]  # each one JSON

    with start_sslmem_serve(tmp_path, env, name="logs") as (base, _):
        status, answer = request(
            "POST", f"{base}/v1/webhooks/mlflow", body, _signed(body, delivery)
        )
        assert (status, answer["outcome"]) == (202, "accepted")
        wait_until(lambda: any("job_id" in line for line in lines()), 120, "a job's log line")
    records = lines()
    accepted = [r for r in records if r.get("delivery_id") == delivery]
    assert accepted and all((r["model"], r["version"]) == ("enc-logs", "1") for r in accepted)
    jobs = [r for r in records if "job_id" in r]
    assert jobs[0]["job_id"].startswith("score-") and jobs[0]["model"] == "enc-logs"
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert SECRET not in log.read_text()


def test_api_token_file_rotated_without_a_restart(runtime: RuntimeSettings, tmp_path: Path) -> None:
    token_file = tmp_path / "api-token"
    token_file.write_text("token-one\n")
    settings = service_settings(webhook_secret=SecretStr(SECRET), api_token_file=token_file)
    service = ScoringService(settings, runtime)
    service.worker.start(run_jobs=False)
    job = {"name": "no-such-model", "version": "1"}
    try:
        with serve_in_thread(service, manage_lifecycle=False) as base:

            def status(token: str) -> int:
                auth = {"Authorization": f"Bearer {token}"}
                return request("POST", f"{base}/v1/score", job, auth)[0]

            assert status("token-one") == 404  # authorised: the version does not exist
            assert status("token-two") == 401
            fresh = tmp_path / "api-token.new"  # the kubelet's swap: a new file moved in place
            fresh.write_text("token-two\n")
            fresh.replace(token_file)
            wait_until(lambda: status("token-two") == 404, 60, "the rotated token")
            assert status("token-one") == 401
    finally:
        service.worker.stop(0)
