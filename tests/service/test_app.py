"""The service over real HTTP (uvicorn on 127.0.0.1), on a real local MLflow store.

With a SQLite store no webhook fires: these tests show the reconcile pass alone finds, scores
and re-judges versions, and that the HTTP intake refuses what it must.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from sslmem.cli import main
from sslmem.config import RuntimeSettings
from sslmem.service.core import ScoringService
from sslmem.service.reconcile import plan_model
from sslmem.service.state import ModelState
from sslmem.service.webhooks import sign
from sslmem.tracking import TrackingTarget, get_version_tags, register_encoder, set_alias
from sslmem.tracking import tags as T
from sslmem.workflow.scope import opt_in_model
from tests.service.http import metric, request, scrape, serve_in_thread, wait_until
from tests.service.scoring_setup import make_encoders, runtime_settings, service_settings

SECRET = "webhook-test-secret"
TOKEN = "api-test-token"


@pytest.fixture
def runtime(local_mlflow: TrackingTarget, tmp_path: Path) -> RuntimeSettings:
    return runtime_settings(local_mlflow.tracking_uri, tmp_path / "store")


def _signed(body: bytes, *, secret: str = SECRET, delivery: str | None = None, age: int = 0):  # type: ignore[no-untyped-def]
    delivery = delivery or str(uuid.uuid4())
    timestamp = str(int(time.time()) - age)
    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": sign(secret, delivery, timestamp, body),
    }


def _event(name: str, version: str) -> bytes:
    data = {"name": name, "version": version, "source": "models:/m-1", "run_id": "r", "tags": {}}
    payload = {"entity": "model_version", "action": "created", "timestamp": "t", "data": data}
    return json.dumps(payload).encode()


def test_plan_model_scores_unfinished_and_rejudges_when_the_champion_moves() -> None:
    versions = {
        "1": {T.STATUS: "scored", T.JUDGED_AGAINST: "none"},
        "2": {T.STATUS: "scored", T.JUDGED_AGAINST: "1"},
        "3": {T.STATUS: "pending"},
        "4": {T.STATUS: "running"},
        "5": {T.STATUS: "failed"},
        "6": {T.STATUS: "scored", T.ROLE: "reference"},
        "7": {},
        "8": {T.STATUS: "training"},
    }
    model = ModelState("m", versions, {"champion": "1"}, {})
    # v1 was judged before there was a champion; v2 already against v1.
    assert plan_model(model, "champion") == (["3", "4", "7", "8"], ["1"])
    versions["1"][T.JUDGED_AGAINST] = "1"
    assert plan_model(model, "champion") == (["3", "4", "7", "8"], [])
    moved = ModelState("m", versions, {"champion": "2"}, {})
    assert plan_model(moved, "champion")[1] == ["1", "2"]
    assert plan_model(ModelState("m", versions, {}, {}), "champion")[1] == ["1", "2"]


def test_webhook_intake_refuses_bad_deliveries_and_queues_nothing(
    runtime: RuntimeSettings,
) -> None:
    from sslmem.tracking.connection import client

    client().create_registered_model("enc", tags={T.MANAGED: T.MANAGED_VALUE})  # in scope
    settings = service_settings(
        webhook_secret=SecretStr(SECRET), webhook_max_body_bytes=2048, max_concurrent_jobs=1
    )
    service = ScoringService(settings, runtime)
    service.worker.start(run_jobs=False)  # jobs stay in the queue, where we can count them
    with serve_in_thread(service, manage_lifecycle=False) as base:
        url = f"{base}/v1/webhooks/mlflow"
        body = _event("enc", "3")
        cases = [
            ("forged", _signed(body, secret="not-the-secret"), body, 401),
            ("unsigned", {}, body, 401),
            ("stale", _signed(body, age=3600), body, 401),
            ("malformed", _signed(b"{not json"), b"{not json", 400),
            ("oversized", _signed(b"x" * 5000), b"x" * 5000, 413),
        ]
        for outcome, headers, payload, status in cases:
            got = request("POST", url, payload, headers)
            assert got[0] == status and got[1]["outcome"] == outcome, (outcome, got)
            assert service.worker.depth() == 0, outcome
        # MLflow's test_webhook payload: 200, nothing queued.
        test_payload = json.dumps(
            {
                "entity": "model_version",
                "action": "created",
                "timestamp": "2025-01-01T00:00:00Z",
                "data": {
                    "name": "example_model",
                    "version": "1",
                    "source": "models:/123",
                    "run_id": "abcd1234abcd5678",
                    "tags": {"example_key": "example_value"},
                    "description": "An example model version",
                },
            }
        ).encode()
        got = request("POST", url, test_payload, _signed(test_payload))
        assert got[0] == 200 and got[1]["outcome"] == "ignored" and not got[1]["queued"]
        assert service.worker.depth() == 0
        # A good delivery queues one job; its replay (same delivery id) queues nothing more.
        headers = _signed(body)
        assert request("POST", url, body, headers) == (
            202,
            {"outcome": "accepted", "detail": "model_version.created enc/3", "queued": True},
        )
        got = request("POST", url, body, headers)
        assert got[0] == 200 and got[1]["outcome"] == "duplicate"
        assert service.worker.depth() == 1
        text = scrape(base)
        for outcome in ("forged", "unsigned", "stale", "malformed", "oversized", "ignored"):
            assert metric(text, "sslmem_webhook_deliveries_total", outcome=outcome) == 1.0
        assert metric(text, "sslmem_webhook_deliveries_total", outcome="accepted") == 1.0
        assert metric(text, "sslmem_webhook_deliveries_total", outcome="duplicate") == 1.0
        assert metric(text, "sslmem_queue_depth") == 1.0
    service.worker.stop(0)


@pytest.mark.slow
def test_score_endpoint_requires_the_bearer_token(runtime: RuntimeSettings, tmp_path: Path) -> None:
    service = ScoringService(service_settings(), runtime)
    service.worker.start(run_jobs=False)
    with serve_in_thread(service, manage_lifecycle=False) as base:
        status, body = request("POST", f"{base}/v1/score", {"name": "enc", "version": "1"})
        assert status == 403 and "SSLMEM_SERVICE_API_TOKEN" in body["detail"]
    service.worker.stop(0)

    encoders = make_encoders(tmp_path / "enc")
    version = register_encoder(encoders.candidate, model_name="enc", tags={T.STATUS: "pending"})
    opt_in_model("enc")  # registered without `sslmem register`: bring it into scope
    service = ScoringService(service_settings(api_token=SecretStr(TOKEN)), runtime)
    service.worker.start(run_jobs=False)
    with serve_in_thread(service, manage_lifecycle=False) as base:
        url = f"{base}/v1/score"
        job = {"name": "enc", "version": version.version}
        assert request("POST", url, job)[0] == 401
        assert request("POST", url, job, {"Authorization": "Bearer wrong"})[0] == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, body = request("POST", url, {"name": "enc", "version": "99"}, auth)
        assert status == 404
        status, body = request("POST", url, job, auth)
        assert status == 202 and body["queued"] is True
        assert request("POST", url, job, auth)[1]["queued"] is False  # de-duplicated
        assert service.worker.depth() == 1
        assert TOKEN not in json.dumps(body)
    service.worker.stop(0)


@pytest.mark.slow
def test_reconcile_alone_scores_fails_and_rejudges_then_metrics_survive_a_restart(
    runtime: RuntimeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoders = make_encoders(tmp_path / "enc")
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", str(runtime.mlflow_tracking_uri))
    monkeypatch.setenv("SSLMEM_STORE_URI", runtime.store_uri)
    split = encoders.split_uri
    assert main(["register", "--encoder", str(encoders.reference), "--model", "enc-ref",
                 "--split", split, "--as-reference"]) == 0  # fmt: skip
    assert main(["register", "--encoder", str(encoders.candidate), "--model", "enc",
                 "--split", split, "--reference", "models:/enc-ref/1"]) == 0  # fmt: skip
    bare = register_encoder(encoders.candidate, model_name="bare", tags={T.STATUS: "pending"})
    opt_in_model("bare")  # in scope, so that its missing provenance fails it

    settings = service_settings(
        reconcile_interval_s=1.0,
        webhook_secret=SecretStr(SECRET),
        allowed_uri_prefixes=[str(tmp_path)],  # the split manifest is a local file here
    )
    service = ScoringService(settings, runtime)
    with serve_in_thread(service) as base:

        def finished(name: str, version: str) -> dict[str, object] | None:
            status, body = request("GET", f"{base}/v1/models/{name}/versions/{version}")
            assert status == 200, body
            # The judgement is written right after the scores.
            done = body["status"] == "failed" or body["judgement"] is not None
            return body if done else None

        scored = wait_until(lambda: finished("enc", "1"), 240, "enc/1 scored")
        failed = wait_until(lambda: finished("bare", bare.version), 240, "bare failed")
        assert scored["status"] == "scored"
        assert scored["summary"]["sets"]["candidate"]["n"] == 8
        assert scored["judgement"]["outcome"] == "incomparable"  # no champion yet
        assert failed["status"] == "failed"
        for key in T.REQUIRED_PROVENANCE:
            assert key in str(failed["failure_reason"])
        assert request("GET", f"{base}/healthz")[0] == 200  # still serving
        assert request("GET", f"{base}/readyz")[0] == 200
        assert request("GET", f"{base}/v1/models/enc/versions/9")[0] == 404

        # The API shows the judgement once its JSON tag is written; the worker then writes the
        # description and display tags and refreshes the gauges before it counts the outcome.
        def counted() -> str | None:
            text = scrape(base)
            done = (
                metric(text, "sslmem_versions_scored_total", model="enc") is not None
                and metric(
                    text, "sslmem_versions_failed_total", model="bare", reason="missing_provenance"
                )
                is not None
            )
            return text if done else None

        text = wait_until(counted, 60, "both outcomes counted")
        mean = float(get_version_tags("enc", "1")[T.sslmem_mean_key("candidate")])
        labels = {"model": "enc", "version": "1", "alias": ""}
        assert metric(text, "sslmem_versions_scored_total", model="enc") == 1.0
        assert (
            metric(text, "sslmem_versions_failed_total", model="bare", reason="missing_provenance")
            == 1.0
        )
        assert metric(text, "sslmem_version_sslmem_mean", set="candidate", **labels) == (
            pytest.approx(mean, rel=1e-8)
        )
        # The champion alias is set: the next pass re-judges version 1 against it (itself).
        set_alias("enc", "champion", "1")
        wait_until(
            lambda: get_version_tags("enc", "1").get(T.JUDGED_AGAINST) == "1", 60, "re-judged"
        )
    # A new replica rebuilds the per-version gauges from MLflow (its first reconcile pass, in
    # the background: the port is open before) without scoring anything.
    restarted = ScoringService(settings, runtime)
    with serve_in_thread(restarted) as base:
        champion = {"model": "enc", "version": "1", "alias": "champion"}

        def rebuilt() -> str | None:
            text = scrape(base)
            found = metric(text, "sslmem_version_sslmem_mean", set="candidate", **champion)
            return text if found is not None else None

        text = wait_until(rebuilt, 60, "the gauges rebuilt")
        assert metric(text, "sslmem_version_sslmem_mean", set="candidate", **champion) == (
            pytest.approx(mean, rel=1e-8)
        )
        assert metric(text, "sslmem_versions_scored_total", model="enc") is None


def test_readyz_means_can_accept_intake_not_dependencies_answer(
    runtime: RuntimeSettings,
) -> None:
    """MLflow and the store unreachable: still ready (200), their health is a metric instead.

    Readiness that followed the dependencies would take every replica out of the Service at
    once on a blip, and MLflow would drop its deliveries after a few seconds of retries.
    """
    from tests.servers import free_port

    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    down = runtime.model_copy(
        update={"store_uri": "s3://bucket/sslmem", "s3_endpoint": closed, "s3_secure": False,
                "store_retries": 0, "mlflow_tracking_uri": f"http://{closed}",
                "mlflow_max_retries": 0, "mlflow_timeout_s": 2}
    )  # fmt: skip
    service = ScoringService(service_settings(webhook_secret=SecretStr(SECRET)), down)
    service.worker.start(run_jobs=False)
    with serve_in_thread(service, manage_lifecycle=False) as base:
        status, body = request("GET", f"{base}/readyz")
        assert status == 200 and body["ready"] is True, body
        # Intake still works: a signed delivery is queued (scored once MLflow answers).
        payload = _event("enc", "3")
        got = request("POST", f"{base}/v1/webhooks/mlflow", payload, _signed(payload))
        assert got[0] in (202, 503), got  # 503 only if the shared replay ledger is unreachable
        problems = service.probe_dependencies()
        assert problems["mlflow"] and problems["object_store"]
        text = scrape(base)
        assert metric(text, "sslmem_dependency_up", dependency="mlflow") == 0.0
        assert metric(text, "sslmem_dependency_up", dependency="object_store") == 0.0
        assert request("GET", f"{base}/readyz")[0] == 200
    service.worker.stop(0)


def test_readyz_is_503_without_a_webhook_secret_before_start_and_when_stopping(
    runtime: RuntimeSettings,
) -> None:
    no_secret = ScoringService(service_settings(), runtime)
    no_secret.worker.start(run_jobs=False)
    with serve_in_thread(no_secret, manage_lifecycle=False) as base:
        status, body = request("GET", f"{base}/readyz")
        assert status == 503 and body["webhook_secret"] == "missing", body
    no_secret.worker.stop(0)

    service = ScoringService(service_settings(webhook_secret=SecretStr(SECRET)), runtime)
    with serve_in_thread(service, manage_lifecycle=False) as base:
        status, body = request("GET", f"{base}/readyz")
        assert status == 503 and body["accepting"] is False  # the worker is not started
        service.worker.start(run_jobs=False)
        assert request("GET", f"{base}/readyz")[0] == 200
        service.stop()
        status, body = request("GET", f"{base}/readyz")
        assert status == 503 and body["stopping"] is True
        assert request("GET", f"{base}/healthz")[0] == 200  # alive, just not ready
