"""Reliability: a scoring job that meets an MLflow outage is retried with backoff, not dropped.

A real ``mlflow server`` on 127.0.0.1 is stopped by PID after a version is registered, while
the service (in-process, under uvicorn) receives the version's webhook delivery; the server is
restarted on the same port and data. The reconcile interval is an hour, so only the worker's
own retries can have scored the version once MLflow returned.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from sslmem.service.core import ScoringService
from sslmem.service.metrics import ServiceMetrics
from sslmem.service.webhooks import sign
from sslmem.service.worker import retry_delay
from sslmem.tracking import get_version_tags
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.workflow.register_external import register_external_encoder
from tests.servers import start_mlflow_server
from tests.service.http import metric, request, scrape, serve_in_thread, wait_until
from tests.service.scoring_setup import make_encoders, runtime_settings, service_settings

SECRET = "outage-webhook-secret"


def test_retry_delay_doubles_from_the_initial_wait_up_to_the_cap_with_jitter() -> None:
    # Base waits 1, 2, 4, 8, then capped at 10; jitter 1 gives the base, 0 half of it.
    bases = [retry_delay(n, initial_s=1.0, max_s=10.0, jitter=1.0) for n in range(1, 7)]
    assert bases == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert retry_delay(3, initial_s=1.0, max_s=10.0, jitter=0.0) == 2.0
    assert retry_delay(3, initial_s=1.0, max_s=10.0, jitter=0.5) == 3.0
    assert retry_delay(10_000, initial_s=1.0, max_s=60.0, jitter=1.0) == 60.0  # no overflow
    with pytest.raises(ValueError, match="attempt"):
        retry_delay(0, initial_s=1.0, max_s=10.0, jitter=0.5)
    with pytest.raises(ValueError, match="jitter"):
        retry_delay(1, initial_s=1.0, max_s=10.0, jitter=1.5)


def test_retries_are_counted_only_for_outage_reasons() -> None:
    metrics = ServiceMetrics()
    assert metric(metrics.render().decode(), "sslmem_scoring_retries_total", reason="tracking") == 0
    metrics.scoring_retry("object_store")
    text = metrics.render().decode()
    assert metric(text, "sslmem_scoring_retries_total", reason="object_store") == 1.0
    with pytest.raises(ValueError, match="not retried"):
        metrics.scoring_retry("invalid_checkpoint")  # a verdict on the version: never retried


def _delivery(name: str, version: str) -> tuple[bytes, dict[str, str]]:
    """A signed ``model_version.created`` delivery, as MLflow sends it."""
    data = {"name": name, "version": version, "source": "models:/m-1", "run_id": "r", "tags": {}}
    payload = {"entity": "model_version", "action": "created", "timestamp": "t", "data": data}
    body = json.dumps(payload).encode()
    delivery, timestamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": sign(SECRET, delivery, timestamp, body),
    }
    return body, headers


@pytest.mark.slow
def test_mlflow_outage_while_scoring_backs_off_then_scores_the_version_once(
    tmp_path: Path,
) -> None:
    encoders = make_encoders(tmp_path / "enc")
    root, artifacts = tmp_path / "mlflow", str(tmp_path / "artifacts")
    with start_mlflow_server(root, artifacts) as server:
        runtime = runtime_settings(
            server.url, tmp_path / "store", mlflow_max_retries=0, mlflow_timeout_s=5
        )
        register_external_encoder(
            encoders.reference, model_name="enc-ref", split_uri=encoders.split_uri,
            settings=runtime,
        )  # fmt: skip
        version = register_external_encoder(
            encoders.candidate, model_name="enc", split_uri=encoders.split_uri,
            reference_uri="models:/enc-ref/1", settings=runtime,
        ).version  # fmt: skip
        assert get_version_tags("enc", version)[T.STATUS] == "pending"
    # The server and its uvicorn child are stopped (by PID): MLflow is down.

    settings = service_settings(
        webhook_secret=SecretStr(SECRET), reconcile_interval_s=3600.0, retry_max_s=2.0,
        allowed_uri_prefixes=[str(tmp_path)],  # the split manifest is a local file here
    )  # fmt: skip
    service = ScoringService(settings, runtime)
    with serve_in_thread(service) as base:
        # Ready all along: intake works while MLflow is down (its health is a metric).
        assert request("GET", f"{base}/readyz")[0] == 200
        wait_until(
            lambda: metric(scrape(base), "sslmem_dependency_up", dependency="mlflow") == 0.0,
            60,
            "MLflow reported down",
        )
        # The registration's webhook, delivered just before MLflow went down.
        body, headers = _delivery("enc", version)
        status, got = request("POST", f"{base}/v1/webhooks/mlflow", body, headers)
        assert status == 202 and got["queued"] is True, got

        def retries() -> float:
            return metric(scrape(base), "sslmem_scoring_retries_total", reason="tracking") or 0.0

        # Retried with backoff, not dropped: still pending after several attempts.
        wait_until(lambda: retries() >= 3, 60, "three retries while MLflow is down")
        assert service.worker.depth() == 1
        assert request("GET", f"{base}/readyz")[0] == 200
        text = scrape(base)
        assert metric(text, "sslmem_versions_failed_total", model="enc", reason="tracking") is None
        assert (metric(text, "sslmem_jobs_total", kind="score", outcome="retried") or 0) >= 3
        assert metric(text, "sslmem_jobs_total", kind="score", outcome="failed") == 0

        with start_mlflow_server(root, artifacts, port=urlsplit(server.url).port) as again:
            assert again.url == server.url
            tags = wait_until(
                lambda: (t := get_version_tags("enc", version)).get(T.STATUS) == "scored" and t,
                120,
                "the version scored after MLflow returned",
            )
            assert T.FAILURE_REASON not in tags
            assert T.score_run_id(tags)
            wait_until(lambda: service.worker.depth() == 0, 30, "the job to leave the queue")
            runs = client().search_runs(
                [client().get_experiment_by_name(settings.experiment).experiment_id],
                filter_string="tags.`sslmem.step` = 'score'",
            )
            assert len(runs) == 1  # scored exactly once
            text = scrape(base)
            assert metric(text, "sslmem_versions_scored_total", model="enc") == 1.0
            assert (
                metric(text, "sslmem_versions_failed_total", model="enc", reason="tracking") is None
            )
            assert metric(text, "sslmem_jobs_total", kind="score", outcome="scored") == 1.0
            assert metric(text, "sslmem_jobs_total", kind="score", outcome="failed") == 0.0
            # The reconcile loop retried its failed passes: gauges and health are back too.
            wait_until(
                lambda: metric(scrape(base), "sslmem_dependency_up", dependency="mlflow") == 1.0,
                60,
                "MLflow reported up",
            )


def test_stop_drops_jobs_waiting_out_their_backoff(tmp_path: Path) -> None:
    from tests.servers import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: MLflow is down
    runtime = runtime_settings(closed, tmp_path / "store", mlflow_max_retries=0, mlflow_timeout_s=2)
    service = ScoringService(service_settings(retry_max_s=30.0), runtime)
    service.worker.start()
    assert service.worker.submit("enc", "1")
    wait_until(
        lambda: (metric(service.metrics.render().decode(), "sslmem_scoring_retries_total",
                       reason="tracking") or 0) >= 1.0,
        30,
        "the first retry scheduled",
    )  # fmt: skip
    assert not service.worker.submit("enc", "1")  # still pending: not queued twice
    assert service.worker.depth() == 1
    # Threads exit within the grace (an attempt in flight fails fast); the retry is cancelled.
    assert service.worker.stop(10) == []
    assert service.worker.depth() == 0


def test_queue_depth_counts_jobs_waiting_on_a_retry_timer(tmp_path: Path) -> None:
    """A job waiting out its backoff is still waiting: the backlog gauge shows it."""
    from tests.servers import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: MLflow is down
    runtime = runtime_settings(closed, tmp_path / "store", mlflow_max_retries=0, mlflow_timeout_s=2)
    service = ScoringService(service_settings(retry_max_s=30.0), runtime)
    worker = service.worker
    worker.start()
    assert worker.submit("enc", "1")

    def depth_while_on_its_timer() -> float | None:
        # Under the worker's lock the timer cannot fire: the job is neither queued nor running.
        with worker._lock:
            if not worker._retries or worker._running:
                return None
            return metric(service.metrics.render().decode(), "sslmem_queue_depth")

    assert wait_until(depth_while_on_its_timer, 30, "the job waiting on its retry timer") == 1.0
    assert worker.waiting() == 1
    text = service.metrics.render().decode()
    assert (metric(text, "sslmem_jobs_total", kind="score", outcome="retried") or 0) >= 1
    assert metric(text, "sslmem_jobs_total", kind="score", outcome="crashed") == 0
    worker.stop(10)
    assert metric(service.metrics.render().decode(), "sslmem_queue_depth") == 0


def test_a_job_that_raises_a_bug_is_counted_crashed_and_the_worker_lives_on(
    tmp_path: Path,
) -> None:
    from sslmem.service.worker import Job, Worker
    from sslmem.workflow.score_version import VersionResult

    class Buggy(Worker):
        def _run(self, job: Job) -> tuple[VersionResult | None, str]:
            if job.version == "1":
                raise RuntimeError("a bug")
            return None, "skipped"

    runtime = runtime_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "store")
    settings = service_settings()
    metrics = ServiceMetrics()
    worker = Buggy(settings, runtime, metrics).start()
    assert worker.submit("enc", "1") and worker.wait_idle(30)
    assert worker.submit("enc", "2") and worker.wait_idle(30)  # the thread survived the bug
    text = metrics.render().decode()
    assert metric(text, "sslmem_jobs_total", kind="score", outcome="crashed") == 1.0
    assert metric(text, "sslmem_jobs_total", kind="score", outcome="skipped") == 1.0
    assert metric(text, "sslmem_queue_depth") == 0.0
    worker.stop(5)


@pytest.mark.slow
def test_mlflow_down_at_startup_the_port_answers_at_once_and_gauges_follow_its_return(
    tmp_path: Path,
) -> None:
    """Start-up never waits for MLflow; the background rebuild retries until it answers."""
    from sslmem.tracking import configure_from_settings
    from tests.service.test_metrics import _client_model, _record, _scored_version

    root, artifacts = tmp_path / "mlflow", str(tmp_path / "artifacts")
    with start_mlflow_server(root, artifacts) as server:
        runtime = runtime_settings(
            server.url, tmp_path / "store", mlflow_max_retries=0, mlflow_timeout_s=5
        )
        configure_from_settings(runtime)  # the helpers below write to this server
        _client_model("enc")
        version = _scored_version("enc", _record("2", True), tmp_path)
    # MLflow is down. A reconcile interval of an hour: only the start-up retries can bring
    # the gauges once it is back.
    settings = service_settings(
        webhook_secret=SecretStr(SECRET), reconcile_interval_s=3600.0, retry_max_s=2.0
    )
    service = ScoringService(settings, runtime)
    with serve_in_thread(service) as base:  # returns once /healthz answers
        assert request("GET", f"{base}/healthz")[0] == 200
        assert request("GET", f"{base}/readyz")[0] == 200
        at = {"model": "enc", "version": version, "alias": ""}
        wait_until(
            lambda: metric(scrape(base), "sslmem_dependency_up", dependency="mlflow") == 0.0,
            60,
            "MLflow reported down",
        )
        assert metric(scrape(base), "sslmem_version_regression", **at) is None
        with start_mlflow_server(root, artifacts, port=urlsplit(server.url).port):
            wait_until(
                lambda: metric(scrape(base), "sslmem_version_regression", **at) == 1.0,
                120,
                "the gauges rebuilt once MLflow answered",
            )
            assert metric(scrape(base), "sslmem_dependency_up", dependency="mlflow") == 1.0


@pytest.mark.slow
@pytest.mark.s3
def test_object_store_down_for_the_whole_service_jobs_wait_then_score(tmp_path: Path) -> None:
    """SeaweedFS stopped: still ready, intake works, the store reported down, jobs retried
    (never failed); restarted on the same address and data: the version is scored once."""
    from pydantic import SecretStr as Secret

    from sslmem.config import RuntimeSettings
    from sslmem.data.store import open_store
    from tests.servers import start_seaweedfs
    from tests.service.http import wait_until as until

    encoders = make_encoders(tmp_path / "enc")
    s3_dir = tmp_path / "s3"
    s3_dir.mkdir()
    with start_mlflow_server(tmp_path / "mlflow", str(tmp_path / "artifacts")) as server:
        with start_seaweedfs(s3_dir) as s3:
            bucket = s3.make_bucket("down")
            runtime = RuntimeSettings(
                mlflow_tracking_uri=server.url, store_uri=f"s3://{bucket}/sslmem",
                s3_endpoint=s3.endpoint, s3_access_key=Secret(s3.access_key),
                s3_secret_key=Secret(s3.secret_key), s3_secure=False, device="cpu",
                store_retries=0, mlflow_max_retries=1, mlflow_timeout_s=10,
            )  # fmt: skip
            store = open_store(runtime.store_uri, runtime)
            store.put_bytes("splits/split.json", Path(encoders.split_uri).read_bytes())
            split = f"{runtime.store_uri}/splits/split.json"  # inside the store: allowed
            register_external_encoder(
                encoders.reference, model_name="enc-ref", split_uri=split, settings=runtime
            )
            version = register_external_encoder(
                encoders.candidate, model_name="enc", split_uri=split,
                reference_uri="models:/enc-ref/1", settings=runtime,
            ).version  # fmt: skip
            endpoint = s3.endpoint
        # The object store is down (stopped by PID); MLflow is up.
        settings = service_settings(
            webhook_secret=SecretStr(SECRET), api_token=SecretStr("t"),
            reconcile_interval_s=2.0, retry_max_s=2.0,
        )  # fmt: skip
        service = ScoringService(settings, runtime)
        with serve_in_thread(service) as base:
            assert request("GET", f"{base}/readyz")[0] == 200
            auth = {"Authorization": "Bearer t"}
            job = {"name": "enc", "version": version}
            status, body = request("POST", f"{base}/v1/score", job, auth)
            assert status == 202, body  # intake works without the store

            def text() -> str:
                return scrape(base)

            until(
                lambda: metric(text(), "sslmem_dependency_up", dependency="object_store") == 0.0,
                60,
                "the object store reported down",
            )
            until(
                lambda: (metric(text(), "sslmem_scoring_retries_total", reason="object_store")
                         or 0) >= 2,
                120,
                "two retries while the store is down",
            )  # fmt: skip
            assert request("GET", f"{base}/readyz")[0] == 200  # never out of the Service
            now = text()
            assert metric(now, "sslmem_dependency_up", dependency="mlflow") == 1.0
            assert metric(now, "sslmem_jobs_total", kind="score", outcome="failed") == 0.0
            assert (metric(now, "sslmem_jobs_total", kind="score", outcome="retried") or 0) >= 2
            assert metric(now, "sslmem_queue_depth") in (0.0, 1.0)
            assert get_version_tags("enc", version).get(T.STATUS) == "pending"

            with start_seaweedfs(s3_dir) as again:
                assert again.endpoint == endpoint

                def scored() -> dict[str, str] | None:
                    tags = get_version_tags("enc", version)
                    return tags if tags.get(T.STATUS) == "scored" else None

                def store_up() -> bool:
                    return metric(text(), "sslmem_dependency_up", dependency="object_store") == 1

                def counted() -> str | None:  # the job ends (and is counted) after publishing
                    now = text()
                    found = metric(now, "sslmem_jobs_total", kind="score", outcome="scored")
                    return now if found else None

                tags = until(scored, 240, "the version scored once the store returned")
                assert T.FAILURE_REASON not in tags
                until(store_up, 60, "the object store reported up")
                done = until(counted, 60, "the job counted")
                assert metric(done, "sslmem_jobs_total", kind="score", outcome="scored") == 1.0
                assert metric(done, "sslmem_jobs_total", kind="score", outcome="failed") == 0.0
                assert metric(done, "sslmem_versions_scored_total", model="enc") == 1.0
                service.stop()  # before the store goes away again
