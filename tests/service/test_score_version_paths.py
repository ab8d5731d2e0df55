"""Every path of ``score_registered_version`` and ``score_pair_claimed``, in process.

A real MLflow store (sqlite, in process), a real local lease store and tiny encoders scored for
real: each test pins one outcome of the module's decision table (docs/service.md, "Failure
taxonomy") against hand-written expectations -- what the result says, which tags MLflow holds
afterwards, whether a lease is left. Faults are injected through ``on_publish``, the hook the
module calls right after each publishing fence passed. Part of ``make mutation``'s selection
(docs/service.md#mutation-testing), which is why the paths are pinned one by one here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sslmem.config import RuntimeSettings
from sslmem.coordination.conditional_store import open_conditional_store
from sslmem.coordination.lease import LeaseManager, LeaseRenewer, version_lease_key
from sslmem.coordination.settings import LeaseSettings
from sslmem.errors import (
    OutputWriteError,
    ScoringError,
    StoreError,
    StoreUnavailableError,
    TrackingUnavailableError,
)
from sslmem.memorization.scoring import ScoreReport
from sslmem.tracking import get_version_tags, register_encoder, set_alias
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.workflow.register_external import register_external_encoder
from sslmem.workflow.score_version import (
    score_registered_version,
    service_config,
)
from tests.service.scoring_setup import (
    Encoders,
    register_pair,
    score_in_pipeline,
    service_settings,
)

pytestmark = [pytest.mark.slow, pytest.mark.mutation]

#: The publishing steps in the order the module promises to fence them (module docstring).
STEPS = ["running", "score_run", "model_metrics", "version_tags", "reference_tags", "status"]


@pytest.fixture
def env(scoring_env: tuple[Encoders, RuntimeSettings]) -> tuple[Encoders, RuntimeSettings]:
    return scoring_env  # tests/service/conftest.py


def _pair(encoders: Encoders, runtime: RuntimeSettings, model: str = "enc") -> str:
    return register_pair(encoders, runtime, model)


def _lose_the_lease_at(
    runtime: RuntimeSettings, version: str, at: str, *, to: str | None = None
) -> tuple[list[str], Callable[[str], None]]:
    """An ``on_publish`` hook recording the steps that takes the version's lease away at ``at``.

    Over to holder ``to`` (a conditional replace: another replica took it over), or deleted.
    """
    store = open_conditional_store(runtime.store_uri, runtime)
    key = version_lease_key("enc", version)
    steps: list[str] = []

    def hook(step: str) -> None:
        steps.append(step)
        if step != at:
            return
        found = store.read(key)
        assert found is not None
        if to is None:
            assert store.delete(key, found[1])
            return
        record = json.loads(found[0])
        record["holder"] = to
        assert store.replace(key, json.dumps(record).encode(), found[1]) is not None

    return steps, hook


def _raise_at(at: str, error: Exception) -> Callable[[str], None]:
    """An ``on_publish`` hook that raises ``error`` at step ``at`` (a fault mid-publish)."""

    def hook(step: str) -> None:
        if step == at:
            raise error

    return hook


def _assert_reference_never_failed() -> None:
    """The candidate's problem never marks its shared reference."""
    ref = get_version_tags("enc-ref", "1")
    assert ref.get(T.STATUS) != "failed" and T.FAILURE_REASON not in ref


def _lease_holder(runtime: RuntimeSettings, model: str, version: str) -> str | None:
    store = open_conditional_store(runtime.store_uri, runtime)
    found = LeaseManager(store, "observer", 60).current(version_lease_key(model, version))
    return None if found is None or found[0] is None else found[0].holder


def _runs_of(model: str, version: str) -> list[str]:
    runs = client().search_runs(
        [e.experiment_id for e in client().search_experiments()],
        filter_string=f"tags.`sslmem.model_version` = 'models:/{model}/{version}'",
    )
    return [r.info.run_id for r in runs]


def test_a_model_that_did_not_opt_in_is_ignored_untouched(
    env: tuple[Encoders, RuntimeSettings],
) -> None:
    encoders, runtime = env
    foreign = register_encoder(encoders.candidate, model_name="other-team", tags={"x": "1"})
    before = get_version_tags("other-team", foreign.version)
    result = score_registered_version(
        "other-team", foreign.version, settings=service_settings(), runtime=runtime
    )
    assert (result.outcome, result.reason) == ("ignored", "the model is not managed by sslmem")
    assert result.tags is None and result.failure is None
    assert get_version_tags("other-team", foreign.version) == before  # not even `running`
    store = open_conditional_store(runtime.store_uri, runtime)
    assert store.read(version_lease_key("other-team", foreign.version)) is None  # no claim


def test_publishing_is_fenced_step_by_step_and_keyed_by_the_generation(
    env: tuple[Encoders, RuntimeSettings],
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    claims: list[LeaseRenewer | None] = []
    steps: list[tuple[str, bool]] = []

    def publishing(step: str) -> None:  # is shutdown told to let this step finish?
        renewer = claims[0]
        assert renewer is not None
        steps.append((step, renewer.publishing))

    result = score_registered_version(
        "enc",
        version,
        settings=service_settings(),
        runtime=runtime,
        on_claim=claims.append,
        on_publish=publishing,
    )
    assert result.outcome == "scored" and result.reason == "" and result.failure is None
    # `running` is no result set; from the score run on, the result set is open ...
    assert steps == [("running", False)] + [(step, True) for step in STEPS[1:]]
    assert len(claims) == 2 and claims[0] is not None and claims[-1] is None  # claimed, released
    assert claims[0].publishing is False  # ... and closed once published
    # The tags the job read once, at its start: the version was still pending then.
    assert result.tags is not None and result.tags[T.STATUS] == "pending"
    assert result.seconds > 0
    # The result carries the published report: the same points the summary counts.
    assert result.report is not None and result.summary is result.report.summary
    assert len(result.report.columns["sample_index"]) == sum(
        s.n for s in result.summary.sets.values()
    )
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "scored" and T.FAILURE_REASON not in tags
    run = client().get_run(T.score_run_id(tags))
    assert run.data.tags[T.PIPELINE_RUN] == f"service/enc/{version}/g1"  # generation 1
    assert run.data.tags["sslmem.compute.device"] == "cpu"
    # The layer and augmentation come from the version's provenance, not the service default.
    provenance = json.loads(tags[T.PROVENANCE])
    assert run.data.params["scoring.layer"] == provenance[T.LAYER]
    assert _lease_holder(runtime, "enc", version) is None
    assert (
        score_registered_version("enc", version, settings=service_settings(), runtime=runtime)
        .reason
        == "status 'scored', role 'candidate'"
    )  # fmt: skip
    assert (
        score_registered_version("enc-ref", "1", settings=service_settings(), runtime=runtime)
        .reason
        == "status 'scored', role 'reference'"
    )  # fmt: skip


def test_a_lease_taken_over_mid_publish_drops_the_rest(
    env: tuple[Encoders, RuntimeSettings], caplog: pytest.LogCaptureFixture
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    # Another replica takes the lease over right after the version-tags fence passed.
    steps, take_over = _lose_the_lease_at(runtime, version, "version_tags", to="other-replica")
    with caplog.at_level(logging.WARNING, logger="sslmem.workflow.score_version"):
        result = score_registered_version(
            "enc", version, settings=service_settings(), runtime=runtime, on_publish=take_over
        )
    assert (result.outcome, result.reason) == (
        "lost",
        "the lease was lost before publishing finished",
    )
    assert result.failure is None and result.summary is None and result.judgement is None
    assert result.tags is not None and result.tags[T.STATUS] == "pending"
    assert steps == STEPS[:4]  # the next fence refused: reference tags and status never came
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "running" and T.FAILURE_REASON not in tags
    assert T.JUDGEMENT not in tags
    assert any("lease of enc/" in r.getMessage() for r in caplog.records)
    assert _lease_holder(runtime, "enc", version) == "other-replica"  # theirs, not released


@pytest.mark.parametrize(
    "error",
    [
        TrackingUnavailableError("MLflow answered 503", "retry"),
        StoreUnavailableError("the object store timed out", "retry"),
        OutputWriteError("no space left on the scratch volume", "free space"),
    ],
    ids=["tracking-down", "store-down", "scratch-full"],
)
def test_a_dependency_failing_mid_publish_is_retried_never_failed(
    env: tuple[Encoders, RuntimeSettings], error: Exception
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)

    fail = _raise_at("model_metrics", error)
    with pytest.raises(type(error)):
        score_registered_version(
            "enc", version, settings=service_settings(), runtime=runtime, on_publish=fail
        )
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "running" and T.FAILURE_REASON not in tags
    _assert_reference_never_failed()
    assert _lease_holder(runtime, "enc", version) is None  # released for the retry
    # The dependency is back: the retry scores the version.
    again = score_registered_version("enc", version, settings=service_settings(), runtime=runtime)
    assert again.outcome == "scored"
    assert get_version_tags("enc", version)[T.STATUS] == "scored"


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (StoreError("the split manifest object is gone", "re-upload it"), "data"),
        (ScoringError("representations are not finite", "check the encoder"), "scoring"),
    ],
    ids=["store-permanent", "scoring"],
)
def test_a_permanent_error_while_scoring_fails_the_candidate_only(
    env: tuple[Encoders, RuntimeSettings], error: Exception, failure: str
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)

    fail = _raise_at("score_run", error)
    result = score_registered_version(
        "enc", version, settings=service_settings(), runtime=runtime, on_publish=fail
    )
    assert isinstance(error, ScoringError | StoreError)
    problem = error.problem
    assert (result.outcome, result.failure, result.reason) == ("failed", failure, problem)
    assert result.tags is not None and result.tags[T.STATUS] == "pending"
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "failed" and problem in tags[T.FAILURE_REASON]
    _assert_reference_never_failed()
    assert _lease_holder(runtime, "enc", version) is None


@pytest.mark.parametrize(
    ("tag", "value", "named"),
    [
        (T.KNN_ACCURACY, "nan", T.KNN_ACCURACY),
        (T.LINEAR_PROBE_ACCURACY, "abc", T.LINEAR_PROBE_ACCURACY),
        (T.SPLIT_MANIFEST_URI, "/etc/passwd", T.SPLIT_MANIFEST_URI),
    ],
    ids=["nan-accuracy", "text-accuracy", "uri-outside-the-store"],
)
def test_inputs_not_bound_to_the_version_fail_it_with_the_reason(
    env: tuple[Encoders, RuntimeSettings], tag: str, value: str, named: str
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    client().set_model_version_tag("enc", version, tag, value)
    steps: list[str] = []
    result = score_registered_version(
        "enc", version, settings=service_settings(), runtime=runtime, on_publish=steps.append
    )
    assert (result.outcome, result.failure) == ("failed", "data")
    assert named in result.reason
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "failed" and tags[T.FAILURE_REASON].startswith(result.reason[:40])
    assert steps == ["running"]  # refused before anything was read or published
    assert _runs_of("enc", version) == []


def test_missing_candidate_weights_fail_it_as_invalid_checkpoint(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    import mlflow

    source = client().get_model_version("enc", version).source
    model = mlflow.get_logged_model(source.removeprefix("models:/"))
    stored = Path(model.artifact_location.removeprefix("file://")) / "artifacts"
    (stored / "checkpoint.safetensors").unlink()
    settings = service_settings(model_cache_dir=tmp_path / "cache")
    result = score_registered_version("enc", version, settings=settings, runtime=runtime)
    assert (result.outcome, result.failure) == ("failed", "invalid_checkpoint")
    assert result.reason.startswith("candidate weights: ")
    assert get_version_tags("enc", version)[T.FAILURE_REASON].startswith("candidate weights: ")
    assert T.FAILURE_REASON not in get_version_tags("enc-ref", "1")


def test_corrupt_reference_weights_fail_the_candidate_not_the_reference(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path
) -> None:
    import hashlib

    import mlflow

    encoders, runtime = env
    version = _pair(encoders, runtime)
    source = client().get_model_version("enc-ref", "1").source
    model = mlflow.get_logged_model(source.removeprefix("models:/"))
    stored = Path(model.artifact_location.removeprefix("file://")) / "artifacts"
    garbage = b"\x08\x00\x00\x00\x00\x00\x00\x00{not json"
    (stored / "checkpoint.safetensors").write_bytes(garbage)
    client().set_model_version_tag(
        "enc-ref", "1", T.CHECKPOINT_SHA256, hashlib.sha256(garbage).hexdigest()
    )
    settings = service_settings(model_cache_dir=tmp_path / "cache")
    result = score_registered_version("enc", version, settings=settings, runtime=runtime)
    assert (result.outcome, result.failure) == ("failed", "invalid_checkpoint")
    assert result.reason.startswith("reference weights: ")
    assert get_version_tags("enc", version)[T.STATUS] == "failed"
    _assert_reference_never_failed()


def test_a_judgement_that_cannot_be_made_leaves_the_score_standing(
    env: tuple[Encoders, RuntimeSettings], caplog: pytest.LogCaptureFixture
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    # Scoring does not read the judging policy; judging refuses an invalid one.
    client().set_registered_model_tag("enc", "sslmem.policy.budget_mean", "abc")
    with caplog.at_level(logging.WARNING, logger="sslmem.workflow.score_version"):
        result = score_registered_version(
            "enc", version, settings=service_settings(), runtime=runtime
        )
    assert result.outcome == "scored" and result.judgement is None and result.summary is not None
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "scored" and T.JUDGEMENT not in tags
    assert any(f"could not judge enc/{version}" in r.getMessage() for r in caplog.records)


def test_a_champion_judgement_is_returned_and_tagged(
    env: tuple[Encoders, RuntimeSettings],
) -> None:
    encoders, runtime = env
    first = _pair(encoders, runtime)
    settings = service_settings()
    assert score_registered_version("enc", first, settings=settings, runtime=runtime).judgement
    set_alias("enc", "champion", first)
    second = register_external_encoder(
        encoders.other_candidate, model_name="enc", split_uri=encoders.split_uri,
        reference_uri="models:/enc-ref/1", settings=runtime,
    ).version  # fmt: skip
    result = score_registered_version("enc", second, settings=settings, runtime=runtime)
    assert result.judgement is not None and result.judgement.champion_version == first
    assert get_version_tags("enc", str(second))[T.JUDGED_AGAINST] == first


def _pipeline(
    encoders: Encoders, runtime: RuntimeSettings, version: str, out: Path, **claim: Any
) -> ScoreReport:
    return score_in_pipeline(encoders, runtime, version, out, **claim)


def test_pipeline_scoring_refuses_a_version_another_scorer_failed(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    client().set_model_version_tag("enc", version, T.STATUS, "failed")
    client().set_model_version_tag("enc", version, T.FAILURE_REASON, "weights refused")
    with pytest.raises(ScoringError) as caught:
        _pipeline(encoders, runtime, version, tmp_path / "out")
    assert caught.value.problem == (
        f"models:/enc/{version} was failed by another scorer: weights refused"
    )
    assert caught.value.fix == "fix the cause, then re-run the pipeline"
    assert _runs_of("enc", version) == []


def test_pipeline_scoring_claims_under_the_given_lease_settings(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    store = open_conditional_store(runtime.store_uri, runtime)
    # Someone holds the claim under a custom prefix; the environment names another one.
    held = LeaseManager(store, "the-service", ttl_s=60)
    assert held.acquire(version_lease_key("enc", version, "custom")) is not None
    monkeypatch.setenv("SSLMEM_SERVICE_LEASE_PREFIX", "elsewhere")
    custom = service_settings(lease_prefix="custom")
    with pytest.raises(ScoringError) as caught:
        _pipeline(
            encoders, runtime, version, tmp_path / "a", wait_s=0.3, poll_s=0.1,
            service_settings=custom,
        )  # fmt: skip
    assert caught.value.problem == (
        f"models:/enc/{version} is being scored by another scorer (its claim was held for 0 s)"
    )
    assert caught.value.fix is not None and "wait for the scoring service" in caught.value.fix
    with pytest.raises(ScoringError):  # explicit lease settings win over the service's
        _pipeline(
            encoders, runtime, version, tmp_path / "b", wait_s=0.2, poll_s=0.1,
            lease_settings=LeaseSettings(prefix="custom", ttl_s=6.0, renew_s=1.0, holder="p"),
            service_settings=service_settings(lease_prefix="elsewhere"),
        )  # fmt: skip
    # Without settings, the environment's prefix: free there, so the pipeline scores it.
    report = _pipeline(encoders, runtime, version, tmp_path / "c", wait_s=0.2, poll_s=0.1)
    assert report.summary.sets["candidate"].n == 8 and (tmp_path / "c" / "summary.json").is_file()
    assert get_version_tags("enc", version)[T.STATUS] == "scored"


def test_pipeline_scoring_waits_for_a_claim_released_in_time_then_scores(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path
) -> None:
    import threading

    encoders, runtime = env
    version = _pair(encoders, runtime)
    store = open_conditional_store(runtime.store_uri, runtime)
    holder = LeaseManager(store, "the-service", ttl_s=60)
    lease = holder.acquire(version_lease_key("enc", version))
    assert lease is not None
    release = threading.Timer(1.0, holder.release, args=(lease,))  # done within the wait
    release.start()
    try:
        report = _pipeline(encoders, runtime, version, tmp_path / "out", wait_s=60, poll_s=0.2)
    finally:
        release.cancel()
    assert report.summary.sets["candidate"].n == 8
    assert get_version_tags("enc", version)[T.STATUS] == "scored"
    assert len(_runs_of("enc", version)) == 1


def test_pipeline_scoring_rescores_a_version_whose_publisher_lost_its_lease(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    # The lease vanishes once the version's tags name the run: the status never comes.
    _, take_over_before_the_status = _lose_the_lease_at(runtime, version, "reference_tags")

    lost = score_registered_version(
        "enc",
        version,
        settings=service_settings(),
        runtime=runtime,
        on_publish=take_over_before_the_status,
    )
    assert lost.outcome == "lost"
    tags = get_version_tags("enc", version)
    abandoned = T.score_run_id(tags)
    assert tags[T.STATUS] == "running" and abandoned  # a run id without `scored`
    report = _pipeline(encoders, runtime, version, tmp_path / "out")
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "scored" and T.score_run_id(tags) != abandoned  # scored anew
    assert report.summary.sets["candidate"].n == 8


def test_a_reference_that_did_not_opt_in_fails_the_candidate(
    env: tuple[Encoders, RuntimeSettings],
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    client().delete_registered_model_tag("enc-ref", T.MANAGED)  # another team's model now
    result = score_registered_version("enc", version, settings=service_settings(), runtime=runtime)
    assert (result.outcome, result.failure) == ("failed", "data")
    assert result.reason == (
        f"the reference model 'enc-ref' (tag {T.REFERENCE_MODEL}) is not managed by sslmem"
    )
    assert T.FAILURE_REASON not in get_version_tags("enc-ref", "1")  # nothing written there


def test_pipeline_scoring_is_fenced_and_drops_the_rest_when_the_claim_is_lost(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path
) -> None:
    from sslmem.errors import LeaseLostError

    encoders, runtime = env
    version = _pair(encoders, runtime)
    steps, lose_the_claim = _lose_the_lease_at(runtime, version, "model_metrics")
    with pytest.raises(LeaseLostError):
        _pipeline(encoders, runtime, version, tmp_path / "out", on_publish=lose_the_claim)
    assert steps == STEPS[1:3]  # score run, model metrics; then the fence refused
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "pending" and T.score_run_id(tags) is None


def test_a_versions_tags_are_read_once_per_step(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sslmem.tracking

    encoders, runtime = env
    first = _pair(encoders, runtime)
    second = register_external_encoder(  # the same weights again: the pipeline scores those
        encoders.candidate, model_name="enc", split_uri=encoders.split_uri,
        reference_uri="models:/enc-ref/1", settings=runtime,
    ).version  # fmt: skip
    read = sslmem.tracking.get_version_tags
    reads: list[tuple[str, str]] = []

    def counted(name: str, version: str | int) -> dict[str, str]:
        reads.append((name, str(version)))
        tags: dict[str, str] = read(name, version)
        return tags

    monkeypatch.setattr(sslmem.tracking, "get_version_tags", counted)
    served = score_registered_version("enc", first, settings=service_settings(), runtime=runtime)
    assert served.outcome == "scored"
    # Once to score (checks and publishing reuse it), once to judge: the judging step reads
    # what was published, as it does when reconcile judges a version on its own.
    assert reads.count(("enc", first)) == 2
    _pipeline(encoders, runtime, str(second), tmp_path / "out")
    assert reads.count(("enc", str(second))) == 1


def test_the_given_config_the_versions_layer_and_the_reference_cache_are_used(
    env: tuple[Encoders, RuntimeSettings],
) -> None:
    encoders, runtime = env
    register_external_encoder(
        encoders.reference, model_name="enc-ref", split_uri=encoders.split_uri, settings=runtime
    )
    version = register_external_encoder(
        encoders.candidate, model_name="enc", split_uri=encoders.split_uri,
        reference_uri="models:/enc-ref/1", layer="head", settings=runtime,
    ).version  # fmt: skip
    settings = service_settings()
    config = service_config(settings)
    config = config.model_copy(update={"scoring": config.scoring.model_copy(update={"views": 3})})
    result = score_registered_version(
        "enc", version, settings=settings, runtime=runtime, config=config
    )
    assert result.outcome == "scored", result.reason
    run = client().get_run(T.score_run_id(get_version_tags("enc", str(version))))
    assert run.data.params["scoring.views"] == "3"  # the config given, not the service's (2)
    assert run.data.params["scoring.layer"] == "head"  # the version's layer, not "backbone"
    # The reference's losses went to the store's cache: one entry for this protocol.
    cached = list((Path(runtime.store_uri) / "cache" / "reference-alignment").glob("*.bin"))
    assert len(cached) == 1


def test_busy_unknown_and_skipped_results_say_why_and_how_long(
    env: tuple[Encoders, RuntimeSettings],
) -> None:
    import time

    encoders, runtime = env
    version = _pair(encoders, runtime)
    store = open_conditional_store(runtime.store_uri, runtime)
    assert LeaseManager(store, "other", ttl_s=60).acquire(version_lease_key("enc", version))
    started = time.monotonic()
    busy = score_registered_version("enc", version, settings=service_settings(), runtime=runtime)
    took = time.monotonic() - started
    assert (busy.outcome, busy.reason) == ("busy", "another process holds the lease")
    assert 0 < busy.seconds <= took  # the attempt's own duration
    assert busy.tags is None  # nothing was read

    unknown = score_registered_version(
        "gone", "7", settings=service_settings(models=["gone"]), runtime=runtime
    )
    assert (unknown.outcome, unknown.failure) == ("failed", "unknown_model")
    assert "gone" in unknown.reason  # MLflow's own words, naming the model

    client().set_model_version_tag("enc-ref", "1", T.STATUS, "pending")
    skipped = score_registered_version("enc-ref", "1", settings=service_settings(), runtime=runtime)
    assert (skipped.outcome, skipped.reason) == ("skipped", "status 'pending', role 'reference'")
    assert skipped.tags == get_version_tags("enc-ref", "1")  # what the job read
