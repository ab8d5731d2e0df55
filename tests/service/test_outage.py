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
        webhook_secret=SecretStr(SECRET), reconcile_interval_s=3600.0, retry_max_s=2.0
    )
    service = ScoringService(settings, runtime)
    with serve_in_thread(service) as base:
        status, ready = request("GET", f"{base}/readyz")
        assert status == 503 and "unreachable" in ready["mlflow"], ready
        # The registration's webhook, delivered just before MLflow went down.
        body, headers = _delivery("enc", version)
        status, got = request("POST", f"{base}/v1/webhooks/mlflow", body, headers)
        assert status == 202 and got["queued"] is True, got

        def retries() -> float:
            return metric(scrape(base), "sslmem_scoring_retries_total", reason="tracking") or 0.0

        # Retried with backoff, not dropped: still pending after several attempts.
        wait_until(lambda: retries() >= 3, 60, "three retries while MLflow is down")
        assert service.worker.depth() == 1
        assert request("GET", f"{base}/readyz")[0] == 503
        assert (
            metric(scrape(base), "sslmem_versions_failed_total", model="enc", reason="tracking")
            is None
        )

        with start_mlflow_server(root, artifacts, port=urlsplit(server.url).port) as again:
            assert again.url == server.url
            wait_until(lambda: request("GET", f"{base}/readyz")[0] == 200, 60, "ready again")
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
