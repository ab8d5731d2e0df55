"""Publication under faults, on a real ``mlflow server``: one result set, no false failures.

Each test injects a fault at a publishing step through ``score_registered_version``'s
``on_publish`` hook (called right after each fence passed) and asserts the end state in MLflow:
the version's status and reason, the reference never marked, and *one result set* -- the score
run the version's provenance names is this version's, and every metric of it (and of the
version's logged model) has a history of length 1.

Faults: the artifact store refusing writes (``chattr +i`` on the server's local artifacts
destination; the MLflow API stays up), MLflow killed and restarted, a replica stalled past its
lease TTL while another took over, the lease lost right before the final status, artifact
downloads answering 503 (a fault proxy in front of the real server), a stale failure reason.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sslmem.config import RuntimeSettings
from sslmem.coordination.lease import LeaseRenewer
from sslmem.errors import LeaseLostError, TrackingUnavailableError, TransientError
from sslmem.service.settings import ServiceSettings
from sslmem.tracking import get_version_tags, version_metrics
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.workflow.score_version import VersionResult, score_registered_version
from tests.fault_proxy import start_fault_proxy
from tests.servers import MlflowServer, _child_pids, _stop_pid, start_mlflow_server
from tests.service.scoring_setup import (
    make_encoders,
    register_pair,
    runtime_settings,
    service_settings,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Served:
    """A running MLflow server and its local artifacts destination."""

    server: MlflowServer
    artifacts: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("mlflow-publication")
    artifacts = root / "artifacts"
    with start_mlflow_server(root / "server", str(artifacts)) as server:
        yield Served(server, artifacts)


@contextlib.contextmanager
def immutable(folder: Path) -> Iterator[Callable[[], None]]:
    """Yield a function that makes ``folder`` refuse writes (``chattr -R +i``); undone after."""

    def freeze() -> None:
        subprocess.run(["chattr", "-R", "+i", str(folder)], check=True)

    try:
        yield freeze
    finally:
        subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)


def _pair(tmp_path: Path, url: str, model: str) -> tuple[RuntimeSettings, str]:
    """A registered reference and candidate of ``model``; the split lies in the object store."""
    store = tmp_path / "store"
    encoders = make_encoders(store / "encoders")
    runtime = runtime_settings(url, store, mlflow_max_retries=0, mlflow_timeout_s=5)
    return runtime, register_pair(encoders, runtime, model)


def _settings(**overrides: object) -> ServiceSettings:
    return service_settings(**{"lease_ttl_s": 4.0, "lease_renew_s": 1.0, **overrides})


def _never_failed(model: str, version: str) -> None:
    """Neither the candidate nor its reference is (or was left) marked failed."""
    for name, number in ((model, version), (f"{model}-ref", "1")):
        tags = get_version_tags(name, number)
        assert tags.get(T.STATUS) != "failed", (name, tags.get(T.FAILURE_REASON))
        assert T.FAILURE_REASON not in tags, (name, tags[T.FAILURE_REASON])


def _assert_one_result_set(model: str, version: str, result: VersionResult) -> str:
    """Scored, with one coherent result set; returns the score run's id."""
    assert result.outcome == "scored", result.reason
    assert result.report is not None
    tags = get_version_tags(model, version)
    assert tags[T.STATUS] == "scored"
    _never_failed(model, version)
    run_id = T.score_run_id(tags)
    assert run_id
    mlflow = client()
    run = mlflow.get_run(run_id)
    assert run.data.tags[T.MODEL_VERSION] == f"models:/{model}/{version}"
    assert run.data.tags[T.CANDIDATE_SHA256] == tags[T.CHECKPOINT_SHA256]
    assert run.data.metrics, "the named score run holds its metrics"
    for key in run.data.metrics:
        assert len(mlflow.get_metric_history(run_id, key)) == 1, key
    source = mlflow.get_model_version(model, version).run_id
    for key in version_metrics(result.report):
        history = mlflow.get_metric_history(source, key)
        assert len(history) <= 1, (key, [m.value for m in history])
    return str(run_id)


def test_artifact_writes_failing_mid_publish_are_retried_never_failed(
    served: Served, tmp_path: Path
) -> None:
    runtime, version = _pair(tmp_path, served.server.url, "art")
    with immutable(served.artifacts) as freeze:

        def refuse_artifact_writes(step: str) -> None:
            if step == "score_run":  # the fence passed; the artifact store now refuses writes
                freeze()

        with pytest.raises(TransientError):
            score_registered_version(
                "art", version, settings=_settings(), runtime=runtime,
                on_publish=refuse_artifact_writes,
            )  # fmt: skip
    # A blip, not a verdict: nothing marked, on the candidate or on its shared reference.
    tags = get_version_tags("art", version)
    assert tags[T.STATUS] == "running"
    _never_failed("art", version)
    # The store is back: the retry scores the version, with one result set.
    result = score_registered_version("art", version, settings=_settings(), runtime=runtime)
    _assert_one_result_set("art", version, result)


def test_candidate_weights_unavailable_is_not_a_failure(served: Served, tmp_path: Path) -> None:
    with start_fault_proxy(served.server.url) as proxy:
        runtime, version = _pair(tmp_path, proxy.url, "dl")

        def weights_unavailable(method: str, path: str) -> int | None:
            return 503 if method == "GET" and "checkpoint.safetensors" in path else None

        proxy.fault = weights_unavailable
        with pytest.raises(TrackingUnavailableError):
            score_registered_version("dl", version, settings=_settings(), runtime=runtime)
        assert proxy.injected, "the fault was injected"
        assert get_version_tags("dl", version)[T.STATUS] == "running"
        _never_failed("dl", version)
        proxy.fault = None
        result = score_registered_version("dl", version, settings=_settings(), runtime=runtime)
        _assert_one_result_set("dl", version, result)


def test_a_stale_failure_reason_is_cleared_by_a_later_success(
    served: Served, tmp_path: Path
) -> None:
    runtime, version = _pair(tmp_path, served.server.url, "stale")
    mlflow = client()
    mlflow.set_model_version_tag("stale", version, T.FAILURE_REASON, "an earlier blip")
    mlflow.set_model_version_tag("stale-ref", "1", T.FAILURE_REASON, "an earlier blip")
    result = score_registered_version("stale", version, settings=_settings(), runtime=runtime)
    _assert_one_result_set("stale", version, result)  # asserts both reasons are gone


def test_a_lease_lost_before_the_final_status_publishes_no_status(
    served: Served, tmp_path: Path
) -> None:
    runtime, version = _pair(tmp_path, served.server.url, "last")

    def lose_at_status(step: str) -> None:
        if step == "status":
            raise LeaseLostError("the lease was taken over (injected)")

    result = score_registered_version(
        "last", version, settings=_settings(), runtime=runtime, on_publish=lose_at_status
    )
    assert result.outcome == "lost"
    tags = get_version_tags("last", version)
    # Everything but the status was published; the status is written only after a fence.
    assert tags[T.STATUS] == "running" and T.score_run_id(tags)
    _never_failed("last", version)


def test_a_lease_lost_after_the_score_run_marks_that_run_abandoned(
    served: Served, tmp_path: Path
) -> None:
    runtime, version = _pair(tmp_path, served.server.url, "cut")

    def lose_at_version_tags(step: str) -> None:
        if step == "version_tags":  # the score run and the model metrics are written
            raise LeaseLostError("the lease was taken over (injected)")

    result = score_registered_version(
        "cut", version, settings=_settings(), runtime=runtime, on_publish=lose_at_version_tags
    )
    assert result.outcome == "lost"
    assert get_version_tags("cut", version)[T.STATUS] == "running"
    experiment = client().get_experiment_by_name(_settings().experiment)
    query = f"tags.`{T.MODEL_VERSION}` = 'models:/cut/{version}'"
    (cut,) = client().search_runs([experiment.experiment_id], filter_string=query)
    # No version points to it, and it says so: KILLED, with the reason.
    assert cut.info.status == "KILLED"
    assert "lease lost before the result set was complete" in cut.data.tags[T.ABANDONED]
    result = score_registered_version("cut", version, settings=_settings(), runtime=runtime)
    run_id = _assert_one_result_set("cut", version, result)
    assert run_id != cut.info.run_id
    assert T.ABANDONED not in client().get_run(run_id).data.tags


def test_a_replica_stalled_past_its_ttl_resumes_mid_publish_and_is_lost(
    served: Served, tmp_path: Path
) -> None:
    runtime, version = _pair(tmp_path, served.server.url, "stall")
    renewers: list[LeaseRenewer] = []
    stalled, taken_over = threading.Event(), threading.Event()
    outcome: list[VersionResult | BaseException] = []

    def track(renewer: LeaseRenewer | None) -> None:
        if renewer is not None:
            renewers.append(renewer)

    def stall(step: str) -> None:
        # Like SIGSTOP right after the fence passed: no renewal, no progress, past the TTL.
        if step == "version_tags":
            renewers[0].stop(release=False)
            stalled.set()
            assert taken_over.wait(180), "the other replica never took over"

    def replica_a() -> None:
        try:
            result = score_registered_version(
                "stall", version, settings=_settings(replica_id="replica-a"),
                runtime=runtime, on_claim=track, on_publish=stall,
            )  # fmt: skip
            outcome.append(result)
        except BaseException as exc:  # reported by the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=replica_a, daemon=True)
    thread.start()
    assert stalled.wait(180), "replica A never reached its publication"
    b_settings = _settings(replica_id="replica-b")
    deadline_polls = 600
    result_b = None
    for _ in range(deadline_polls):  # replica B polls until the stalled lease is taken over
        result_b = score_registered_version("stall", version, settings=b_settings, runtime=runtime)
        if result_b.outcome != "busy":
            break
        threading.Event().wait(0.2)
    taken_over.set()
    thread.join(180)
    assert result_b is not None and result_b.outcome == "scored", result_b
    assert len(outcome) == 1 and isinstance(outcome[0], VersionResult), outcome
    assert outcome[0].outcome == "lost"
    run_id = _assert_one_result_set("stall", version, result_b)
    # The two claims published to two runs (version x generation), never into one.
    runs = client().search_runs(
        [client().get_experiment_by_name(b_settings.experiment).experiment_id],
        filter_string="tags.`sslmem.model_version` = 'models:/stall/1'",
    )
    assert run_id in {r.info.run_id for r in runs}
    for run in runs:
        for key in run.data.metrics:
            assert len(client().get_metric_history(run.info.run_id, key)) == 1, key


def test_mlflow_killed_mid_publish_then_restarted_scores_once(tmp_path: Path) -> None:
    root, artifacts = tmp_path / "mlflow", str(tmp_path / "artifacts")
    with start_mlflow_server(root, artifacts) as server:
        runtime, version = _pair(tmp_path, server.url, "kill")

        def kill_mlflow(step: str) -> None:
            if step == "version_tags":  # score run and model metrics are published already
                for pid in [*_child_pids(server.pid), server.pid]:
                    _stop_pid(pid, grace=5)

        with pytest.raises(TrackingUnavailableError):
            score_registered_version(
                "kill", version, settings=_settings(), runtime=runtime, on_publish=kill_mlflow
            )
    with start_mlflow_server(root, artifacts, port=urlsplit(server.url).port):
        assert get_version_tags("kill", version)[T.STATUS] == "running"
        _never_failed("kill", version)
        result = score_registered_version("kill", version, settings=_settings(), runtime=runtime)
        _assert_one_result_set("kill", version, result)
