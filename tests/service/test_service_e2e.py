"""End to end: a real ``mlflow server`` (webhooks on, artifacts on SeaweedFS S3) and real
``sslmem serve`` processes on 127.0.0.1.

* a version registered while the service runs is delivered by MLflow's webhook and scored
  (the reconcile interval is an hour, so only the webhook can have triggered it);
* two replicas sharing MLflow and S3 score each of a burst of versions exactly once;
* a replica killed with SIGKILL mid-scoring: the other takes the lease over after it expires,
  and the version has exactly one result;
* two replicas whose wall clocks are 10 minutes ahead and 10 minutes behind (libfaketime)
  never take each other's live leases: each version has one result set.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from sslmem.config import RuntimeSettings
from sslmem.coordination.conditional_store import open_conditional_store
from sslmem.coordination.lease import LeaseManager, LeaseRecord, version_lease_key
from sslmem.data.store import open_store
from sslmem.tracking import RetryPolicy, configure_mlflow, get_version_tags
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.tracking.webhooks import ensure_webhook
from sslmem.workflow.register_external import register_external_encoder
from tests.servers import (
    MlflowServer,
    S3Server,
    outlast_webhook_cache,
    skewed_clock_env,
    sslmem_serve_env,
    start_mlflow_server,
    start_sslmem_serve,
    webhook_mlflow_env,
)
from tests.service.http import metric, request, scrape, wait_until
from tests.service.scoring_setup import FAST_SCORING, Encoders, make_encoders

pytestmark = [pytest.mark.slow, pytest.mark.s3]

SECRET = "e2e-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def stack(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MlflowServer, str]]:
    """An MLflow server delivering webhooks, artifacts in a fresh bucket; the bucket's name."""
    bucket = s3_server.make_bucket("svc")
    root = tmp_path_factory.mktemp("svc-mlflow")
    env = webhook_mlflow_env(s3_server)
    with start_mlflow_server(root, f"s3://{bucket}/mlflow/", env=env) as server:
        yield server, bucket


@pytest.fixture(scope="module")
def encoders(
    stack: tuple[MlflowServer, str], s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Encoders:
    """Tiny checkpoints, their split manifest uploaded to S3 (where the service reads it)."""
    _, bucket = stack
    local = make_encoders(tmp_path_factory.mktemp("svc-enc"))
    store = open_store(f"s3://{bucket}/sslmem", _runtime(stack, s3_server))
    store.put_bytes("splits/split.json", Path(local.split_uri).read_bytes())
    return Encoders(
        f"s3://{bucket}/sslmem/splits/split.json",
        local.candidate,
        local.other_candidate,
        local.reference,
    )


def _runtime(stack: tuple[MlflowServer, str], s3: S3Server) -> RuntimeSettings:
    server, bucket = stack
    return RuntimeSettings(
        mlflow_tracking_uri=server.url,
        store_uri=f"s3://{bucket}/sslmem",
        s3_endpoint=s3.endpoint,
        s3_access_key=SecretStr(s3.access_key),
        s3_secret_key=SecretStr(s3.secret_key),
        s3_secure=False,
        device="cpu",
    )


@pytest.fixture(autouse=True)
def _client(stack: tuple[MlflowServer, str]) -> None:
    configure_mlflow(stack[0].url, retry=RetryPolicy(max_retries=2, timeout=30))


@contextlib.contextmanager
def serve(
    tmp: Path,
    stack: tuple[MlflowServer, str],
    s3: S3Server,
    replica: str,
    extra_env: dict[str, str] | None = None,
    **settings: str,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``sslmem serve`` as a subprocess; yield its base URL and process."""
    server, bucket = stack
    settings.setdefault("config_overrides", json.dumps(FAST_SCORING))
    overrides = json.loads(settings.pop("config_overrides"))
    env = sslmem_serve_env(
        tmp, mlflow=server, s3=s3, store_uri=f"s3://{bucket}/sslmem", webhook_secret=SECRET,
        replica=replica, config_overrides=overrides, **settings,
    )  # fmt: skip
    env.update(extra_env or {})
    try:
        with start_sslmem_serve(tmp, env, name=replica) as running:
            yield running
    finally:
        log_text = (tmp / f"serve-{replica}.log").read_text(errors="replace")
        assert SECRET not in log_text  # the HMAC secret never reaches the logs


def _register(encoders: Encoders, runtime: RuntimeSettings, model: str, n: int = 1) -> list[str]:
    register_external_encoder(
        encoders.reference, model_name=f"{model}-ref", split_uri=encoders.split_uri,
        settings=runtime,
    )  # fmt: skip
    versions = []
    for _ in range(n):
        registered = register_external_encoder(
            encoders.candidate, model_name=model, split_uri=encoders.split_uri,
            reference_uri=f"models:/{model}-ref/1", settings=runtime,
        )  # fmt: skip
        versions.append(registered.version)
    return versions


def _status(model: str, version: str) -> str:
    return str(get_version_tags(model, version).get(T.STATUS, ""))


def _score_runs(model: str, version: str) -> int:
    experiment = client().get_experiment_by_name("sslmem")
    query = (
        # One run per lease generation (service/<model>/<version>/g<n>): count them all.
        f"tags.`sslmem.pipeline_run_id` LIKE 'service/{model}/{version}/%' "
        "AND tags.`sslmem.step` = 'score'"
    )
    return len(client().search_runs([experiment.experiment_id], filter_string=query))


def test_webhook_delivery_gets_a_new_version_scored(
    stack: tuple[MlflowServer, str], s3_server: S3Server, encoders: Encoders, tmp_path: Path
) -> None:
    runtime = _runtime(stack, s3_server)
    with serve(tmp_path, stack, s3_server, "hook", reconcile_interval_s="3600") as (base, _):
        ensure_webhook(f"{base}/v1/webhooks/mlflow", SecretStr(SECRET))
        outlast_webhook_cache()
        (version,) = _register(encoders, runtime, "hooked")

        def done() -> dict[str, object] | None:
            got = request("GET", f"{base}/v1/models/hooked/versions/{version}")[1]
            # The judgement is written right after the scores.
            finished = got["status"] == "failed" or got["judgement"] is not None
            return got if finished else None

        body = wait_until(done, 240, "the webhook-triggered scoring")
        assert body["status"] == "scored", body
        assert body["judgement"]["outcome"] == "incomparable"

        def counted() -> str | None:
            # The worker counts a version after re-reading its gauges, i.e. after the judgement
            # tag this test polled for: wait for the count instead of racing it.
            text = scrape(base)
            return text if metric(text, "sslmem_versions_scored_total", model="hooked") else None

        text = wait_until(counted, 60, "the version to be counted as scored")
        assert (metric(text, "sslmem_webhook_deliveries_total", outcome="accepted") or 0) >= 2
        assert metric(text, "sslmem_webhook_deliveries_total", outcome="forged") == 0.0
        assert metric(text, "sslmem_versions_scored_total", model="hooked") == 1.0
        labels = {"model": "hooked", "version": version, "alias": "", "set": "candidate"}
        assert metric(text, "sslmem_version_sslmem_mean", **labels) == pytest.approx(
            body["summary"]["sets"]["candidate"]["mean"], rel=1e-8
        )
        assert _score_runs("hooked", version) == 1
        # The champion alias moves onto the version: its alias event re-judges it at once
        # (the next reconcile pass is an hour away).
        client().set_registered_model_alias("hooked", "champion", version)
        wait_until(
            lambda: get_version_tags("hooked", version).get(T.JUDGED_AGAINST) == version,
            60,
            "the re-judgement triggered by model_version_alias.created",
        )
    # Leave no webhook pointing at a stopped receiver for the next tests.
    from mlflow import MlflowClient

    mlflow_client = MlflowClient(stack[0].url)
    for hook in mlflow_client.list_webhooks():
        mlflow_client.delete_webhook(hook.webhook_id)


def test_two_replicas_score_each_version_exactly_once(
    stack: tuple[MlflowServer, str], s3_server: S3Server, encoders: Encoders, tmp_path: Path
) -> None:
    runtime = _runtime(stack, s3_server)
    with (
        serve(tmp_path, stack, s3_server, "one", reconcile_interval_s="1") as (a, _),
        serve(tmp_path, stack, s3_server, "two", reconcile_interval_s="1") as (b, _),
    ):
        versions = _register(encoders, runtime, "burst", n=4)
        wait_until(
            lambda: all(get_version_tags("burst", v).get(T.JUDGEMENT) for v in versions),
            300,
            "4 versions scored and judged",
        )
        # Each replica counts a version once its job has returned (right after the judgement).
        wait_until(
            lambda: all(request("GET", f"{url}/readyz")[1]["queue"] == 0 for url in (a, b)),
            60,
            "idle workers",
        )
        counts = [metric(scrape(url), "sslmem_versions_scored_total", model="burst") or 0.0
                  for url in (a, b)]  # fmt: skip
    assert sum(counts) == 4.0, counts
    for version in versions:
        assert _score_runs("burst", version) == 1


SKEW_S = 600  # 10 minutes each way: inside S3's 15-minute signature window, far beyond a TTL


def test_replicas_with_clocks_ten_minutes_off_each_way_never_take_a_live_lease(
    stack: tuple[MlflowServer, str], s3_server: S3Server, encoders: Encoders, tmp_path: Path
) -> None:
    # The defect this guards: with expiry judged from the writer's wall time, a replica whose
    # clock ran ahead took over every live lease of the other ("expired 574 s ago") and both
    # published. Expiry is now judged by the reader's own monotonic clock (docs/service.md).
    runtime = _runtime(stack, s3_server)
    busy = json.dumps([*FAST_SCORING, "scoring.views=8"])  # leases live long enough to contend
    with (
        serve(
            tmp_path, stack, s3_server, "ahead", skewed_clock_env(+SKEW_S),
            reconcile_interval_s="1", config_overrides=busy,
        ) as (ahead, _),
        serve(
            tmp_path, stack, s3_server, "behind", skewed_clock_env(-SKEW_S),
            reconcile_interval_s="1", config_overrides=busy,
        ) as (behind, _),
    ):  # fmt: skip
        versions = _register(encoders, runtime, "skewed", n=4)
        wait_until(
            lambda: all(get_version_tags("skewed", v).get(T.JUDGEMENT) for v in versions),
            400,
            "4 versions scored and judged",
        )
        wait_until(
            lambda: all(request("GET", f"{u}/readyz")[1]["queue"] == 0 for u in (ahead, behind)),
            60,
            "idle workers",
        )
        texts = {url: scrape(url) for url in (ahead, behind)}
    # Each replica measured its own skew against the store's Date header (1 s resolution).
    skew_ahead = metric(texts[ahead], "sslmem_clock_skew_seconds")
    skew_behind = metric(texts[behind], "sslmem_clock_skew_seconds")
    assert skew_ahead is not None and abs(skew_ahead - SKEW_S) < 30, skew_ahead
    assert skew_behind is not None and abs(skew_behind + SKEW_S) < 30, skew_behind
    scored = [
        metric(t, "sslmem_versions_scored_total", model="skewed") or 0.0 for t in texts.values()
    ]
    assert sum(scored) == 4.0, scored
    taken = [
        metric(t, "sslmem_jobs_total", kind="score", outcome="taken_over") or 0.0
        for t in texts.values()
    ]
    assert taken == [0.0, 0.0], taken  # nobody stole a live lease ...
    refused = [
        metric(t, "sslmem_jobs_total", kind="score", outcome="busy") or 0.0 for t in texts.values()
    ]
    assert sum(refused) > 0, refused  # ... although they met live leases of the other
    mlflow = client()
    for version in versions:
        assert _score_runs("skewed", version) == 1
        run_id = T.score_run_id(get_version_tags("skewed", version))
        run = mlflow.get_run(run_id)
        assert run.data.metrics
        for key in run.data.metrics:  # published once: no second writer appended a value
            assert len(mlflow.get_metric_history(run_id, key)) == 1, key


def test_replica_killed_mid_scoring_is_taken_over_after_the_lease_expires(
    stack: tuple[MlflowServer, str], s3_server: S3Server, encoders: Encoders, tmp_path: Path
) -> None:
    runtime = _runtime(stack, s3_server)
    store = open_conditional_store(runtime.store_uri, runtime)
    slow = json.dumps([*FAST_SCORING, "scoring.views=64"])  # a scoring run long enough to kill
    with serve(
        tmp_path, stack, s3_server, "doomed", reconcile_interval_s="1", config_overrides=slow
    ) as (_, doomed):
        (version,) = _register(encoders, runtime, "killed")
        key = version_lease_key("killed", version)
        wait_until(lambda: _status("killed", version) == "running", 180, "scoring to start")
        found = store.read(key)
        assert found is not None
        record = LeaseRecord.from_bytes(found[0])
        assert record is not None and record.holder == "doomed"
        assert record.expires > time.time()  # live when killed: the heir must wait it out
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
    assert _status("killed", version) == "running"  # nobody finished it
    with serve(tmp_path, stack, s3_server, "heir", reconcile_interval_s="1") as (base, _):
        wait_until(
            lambda: get_version_tags("killed", version).get(T.JUDGEMENT), 240, "the takeover"
        )
        wait_until(lambda: request("GET", f"{base}/readyz")[1]["queue"] == 0, 60, "idle")
        assert metric(scrape(base), "sslmem_versions_scored_total", model="killed") == 1.0
    assert _score_runs("killed", version) == 1
    assert LeaseManager(store, "observer", 60).current(key) is None  # released by the heir


def test_sigterm_mid_scoring_releases_the_lease_within_the_grace_period(
    stack: tuple[MlflowServer, str], s3_server: S3Server, encoders: Encoders, tmp_path: Path
) -> None:
    runtime = _runtime(stack, s3_server)
    store = open_conditional_store(runtime.store_uri, runtime)
    # Slow enough that SIGTERM lands while scoring, not while publishing: the daemon worker
    # dies with the process, but a publish step that passed its fence just before the release
    # would leave a second (orphan) score run (seen once in a loaded CI run with views=64).
    slow = json.dumps([*FAST_SCORING, "scoring.views=256"])
    with serve(
        tmp_path,
        stack,
        s3_server,
        "leaving",
        reconcile_interval_s="1",
        config_overrides=slow,
        lease_ttl_s="600",  # only a release, not an expiry, can free it during this test
        lease_renew_s="1",
        shutdown_grace_s="0",
    ) as (_, proc):
        (version,) = _register(encoders, runtime, "termed")
        key = version_lease_key("termed", version)
        wait_until(lambda: _status("termed", version) == "running", 180, "scoring to start")
        assert store.read(key) is not None
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM).
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    # Released at shutdown: another replica may claim it now.
    assert LeaseManager(store, "observer", 60).current(key) is None
    with serve(tmp_path, stack, s3_server, "next", reconcile_interval_s="1"):
        wait_until(lambda: _status("termed", version) == "scored", 240, "the next replica")
    assert _score_runs("termed", version) == 1
