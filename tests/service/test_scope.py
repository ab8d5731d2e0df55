"""Scope: the service touches only the registered models that opt in, on real servers.

Another team's model in the same registry (a plain pyfunc, or any model without
``sslmem.managed=true`` and not in ``SSLMEM_SERVICE_MODELS``), and names that do not exist at
all, get no job, no tag, no lease, no metric series and no failure count -- through every
door: the reconcile pass, webhook deliveries, ``POST /v1/score`` and
``score_registered_version`` itself.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import pytest
from pydantic import SecretStr

from sslmem.cli import main
from sslmem.config import RuntimeSettings
from sslmem.coordination.conditional_store import open_conditional_store
from sslmem.coordination.lease import LeaseManager, version_lease_key
from sslmem.data.store import open_store
from sslmem.service.core import ScoringService
from sslmem.service.webhooks import EventKind, RegistryEvent, sign
from sslmem.tracking import RetryPolicy, configure_mlflow, get_version_tags
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.tracking.webhooks import ensure_webhook
from sslmem.workflow.register_external import register_external_encoder
from sslmem.workflow.scope import ModelOutOfScopeError, ModelScope, opt_in_model, read_model_tags
from sslmem.workflow.score_version import score_registered_version
from tests.servers import (
    MlflowServer,
    S3Server,
    outlast_webhook_cache,
    sslmem_serve_env,
    start_mlflow_server,
    start_sslmem_serve,
    webhook_mlflow_env,
)
from tests.service.http import metric, request, scrape, serve_in_thread, wait_until
from tests.service.scoring_setup import FAST_SCORING, Encoders, make_encoders, service_settings

pytestmark = [pytest.mark.slow, pytest.mark.s3]

SECRET = "scope-" + secrets.token_hex(8)
TOKEN = "token-" + secrets.token_hex(8)


class _Plain(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Another team's model: nothing to do with sslmem."""

    def predict(self, context: Any, model_input: list[Any], params: Any = None) -> list[Any]:
        return model_input


def _foreign_model(name: str) -> str:
    """Register a plain pyfunc model version (no sslmem tags at all); its version number."""
    with mlflow.start_run(run_name=f"other-team-{name}"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=_Plain(), pip_requirements=[], registered_model_name=name
        )
    return str(info.registered_model_version)


def _runtime(tracking_uri: str, s3: S3Server, bucket: str) -> RuntimeSettings:
    return RuntimeSettings(
        mlflow_tracking_uri=tracking_uri,
        store_uri=f"s3://{bucket}/sslmem",
        s3_endpoint=s3.endpoint,
        s3_access_key=SecretStr(s3.access_key),
        s3_secret_key=SecretStr(s3.secret_key),
        s3_secure=False,
        device="cpu",
    )


def _encoders(runtime: RuntimeSettings, root: Path) -> Encoders:
    local = make_encoders(root)
    open_store(runtime.store_uri, runtime).put_bytes(
        "splits/split.json", Path(local.split_uri).read_bytes()
    )
    split = f"{runtime.store_uri}/splits/split.json"
    return Encoders(split, local.candidate, local.other_candidate, local.reference)


def _register_pair(encoders: Encoders, runtime: RuntimeSettings, model: str) -> str:
    reference = register_external_encoder(
        encoders.reference, model_name=f"{model}-ref", split_uri=encoders.split_uri,
        settings=runtime,
    )  # fmt: skip
    return str(register_external_encoder(
        encoders.candidate, model_name=model, split_uri=encoders.split_uri,
        reference_uri=f"models:/{model}-ref/{reference.version}", settings=runtime,
    ).version)  # fmt: skip


# -- in process, on the shared MLflow server ------------------------------------------------------


@pytest.fixture
def runtime(webhook_mlflow: MlflowServer, s3_server: S3Server) -> Iterator[RuntimeSettings]:
    configure_mlflow(webhook_mlflow.url, retry=RetryPolicy(max_retries=2, timeout=30))
    yield _runtime(webhook_mlflow.url, s3_server, s3_server.make_bucket("scope"))


def test_register_and_opt_in_tag_the_model(
    runtime: RuntimeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = f"mine-{secrets.token_hex(3)}"
    _register_pair(_encoders(runtime, tmp_path), runtime, model)
    for name in (model, f"{model}-ref"):  # candidate and reference models alike
        assert T.is_managed(read_model_tags(name) or {}), name
    # An existing model (registered before the tag existed) is opted in by the CLI.
    legacy = f"legacy-{secrets.token_hex(3)}"
    client().create_registered_model(legacy, tags={"team": "x"})
    assert not ModelScope().allows(legacy)
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", str(runtime.mlflow_tracking_uri))
    assert main(["models", "opt-in", legacy]) == 0
    assert ModelScope().allows(legacy)
    assert read_model_tags(legacy) == {"team": "x", T.MANAGED: "true"}  # other tags kept
    assert opt_in_model(legacy) is False  # idempotent


def test_foreign_and_missing_models_are_ignored_by_scoring(runtime: RuntimeSettings) -> None:
    name = f"other-team-{secrets.token_hex(3)}"
    version = _foreign_model(name)
    # Even a status tag that requests scoring does not bring it into scope.
    client().set_model_version_tag(name, version, T.STATUS, "pending")
    before = get_version_tags(name, version)
    settings = service_settings()
    for model in (name, f"ghost-{secrets.token_hex(3)}"):
        result = score_registered_version(model, version, settings=settings, runtime=runtime)
        assert (result.outcome, result.failure) == ("ignored", None), result
    assert get_version_tags(name, version) == before  # no tag written
    store = open_conditional_store(runtime.store_uri, runtime)
    assert LeaseManager(store, "observer", 60).current(version_lease_key(name, version)) is None

    # Listed in SSLMEM_SERVICE_MODELS, the same model is in scope (the upgrade path): it is
    # claimed and, lacking provenance, fails like any sslmem version would.
    listed = score_registered_version(
        name, version, settings=service_settings(models=[name]), runtime=runtime
    )
    assert (listed.outcome, listed.failure) == ("failed", "missing_provenance")


def test_service_intake_reconcile_and_metrics_skip_foreign_models(
    runtime: RuntimeSettings, tmp_path: Path
) -> None:
    mine = f"mine-{secrets.token_hex(3)}"
    version = _register_pair(_encoders(runtime, tmp_path), runtime, mine)
    foreign = f"other-team-{secrets.token_hex(3)}"
    foreign_version = _foreign_model(foreign)
    client().set_model_version_tag(foreign, foreign_version, T.STATUS, "pending")
    client().set_registered_model_alias(foreign, "champion", foreign_version)
    ghost = f"ghost-{secrets.token_hex(3)}"

    service = ScoringService(service_settings(api_token=SecretStr(TOKEN)), runtime)
    service.worker.start(run_jobs=False)  # jobs wait in the queue: inspect what was queued
    try:
        passed = service.reconciler.run_once()
        assert passed.error is None, passed
        queued = {(job.name, job.version) for job in service.worker._pending}
        assert (mine, version) in queued
        assert not any(name in (foreign, ghost) for name, _ in queued)

        for name in (foreign, ghost):
            created = RegistryEvent(EventKind.VERSION_CREATED, name, "1", "d", "t")
            assert not service.handle_event(created)
            status = RegistryEvent(EventKind.VERSION_TAG_SET, name, "1", "d", "t")
            status = replace(status, tag_key=T.STATUS, tag_value="pending")  # requests scoring
            assert not service.handle_event(status)
        with serve_in_thread(service, manage_lifecycle=False) as base:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for name in (foreign, ghost):
                status, body = request(
                    "POST", f"{base}/v1/score", {"name": name, "version": "1"}, auth
                )
                assert status == 404 and "not managed by sslmem" in body["detail"], body
            text = scrape(base)
        assert f'model="{mine}"' in text  # the managed model's policy series
        assert foreign not in text and ghost not in text
        with pytest.raises(ModelOutOfScopeError):
            service.request_score(foreign, foreign_version)
        assert get_version_tags(foreign, foreign_version) == {T.STATUS: "pending"}
    finally:
        service.worker.stop(0)


# -- end to end: `sslmem serve` with MLflow's webhooks -------------------------------------------


@pytest.fixture(scope="module")
def stack(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MlflowServer, RuntimeSettings]]:
    """An MLflow server of its own (webhooks on), the object store in a fresh bucket."""
    root = tmp_path_factory.mktemp("scope-mlflow")
    with start_mlflow_server(root, str(root / "artifacts"), env=webhook_mlflow_env()) as server:
        yield server, _runtime(server.url, s3_server, s3_server.make_bucket("scope-e2e"))


def test_serve_never_touches_another_teams_model(
    stack: tuple[MlflowServer, RuntimeSettings], s3_server: S3Server, tmp_path: Path
) -> None:
    server, runtime = stack
    configure_mlflow(server.url, retry=RetryPolicy(max_retries=2, timeout=30))
    mine = "mine"
    version = _register_pair(_encoders(runtime, tmp_path / "enc"), runtime, mine)
    foreign = "other-team"
    first = _foreign_model(foreign)
    client().set_model_version_tag(foreign, first, T.STATUS, "pending")  # asks for scoring

    env = sslmem_serve_env(
        tmp_path, mlflow=server, s3=s3_server, store_uri=runtime.store_uri,
        webhook_secret=SECRET, replica="scope", config_overrides=FAST_SCORING,
        reconcile_interval_s="1",
    )  # fmt: skip
    with start_sslmem_serve(tmp_path, env, name="scope") as (base, _):
        # The reconcile pass scores the managed version; the same passes list the foreign one.
        def judged() -> dict[str, Any] | None:
            body = request("GET", f"{base}/v1/models/{mine}/versions/{version}")[1]
            return body if body.get("judgement") or body.get("status") == "failed" else None

        assert wait_until(judged, 300, "the managed version to be judged")["status"] == "scored"
        ensure_webhook(f"{base}/v1/webhooks/mlflow", SecretStr(SECRET))
        outlast_webhook_cache()
        # Webhook events about the foreign model: a new version, a status tag, an alias.
        second = _foreign_model(foreign)
        client().set_model_version_tag(foreign, second, T.STATUS, "pending")
        client().set_registered_model_alias(foreign, "champion", second)
        # A signed delivery for a model that does not exist.
        body = json.dumps(
            {
                "entity": "model_version",
                "action": "created",
                "timestamp": "2026-01-01T00:00:00Z",
                "data": {"name": "ghost", "version": "1", "source": "s3://x/y", "tags": {}},
            }
        ).encode()
        delivery, now = str(uuid.uuid4()), str(int(time.time()))
        headers = {
            "X-MLflow-Delivery-Id": delivery,
            "X-MLflow-Timestamp": now,
            "X-MLflow-Signature": sign(SECRET, delivery, now, body),
        }
        status, answer = request("POST", f"{base}/v1/webhooks/mlflow", body, headers)
        assert status in (200, 202) and answer["queued"] is False, answer

        def delivered() -> str | None:
            text = scrape(base)
            accepted = metric(text, "sslmem_webhook_deliveries_total", outcome="accepted") or 0
            return text if accepted >= 4 else None  # 3 from MLflow, 1 ghost

        text = wait_until(delivered, 120, "MLflow's deliveries")
        text = scrape(base)
        assert metric(text, "sslmem_versions_scored_total", model=mine) == 1.0
        for name in (foreign, "ghost"):
            assert f'model="{name}"' not in text, [ln for ln in text.splitlines() if name in ln]
        for number in (first, second):
            assert get_version_tags(foreign, number) == {T.STATUS: "pending"}
        proc_log = (tmp_path / "serve-scope.log").read_text(errors="replace")
    noisy = [
        line
        for line in proc_log.splitlines()
        if foreign in line and any(level in line for level in ("WARNING", "ERROR", "Traceback"))
    ]
    assert noisy == []
