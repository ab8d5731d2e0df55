"""score_registered_version on a real local MLflow store and a real local lease store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sslmem.config import RuntimeSettings
from sslmem.coordination.conditional_store import open_conditional_store
from sslmem.coordination.lease import LeaseManager, version_lease_key
from sslmem.errors import ScoringError, TrackingError, is_transient
from sslmem.memorization.scoring import ScoreReport
from sslmem.tracking import get_version_tags, register_encoder, set_alias
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.workflow.judge import judge_registered_version
from sslmem.workflow.register_external import register_external_encoder
from sslmem.workflow.score_version import (
    score_registered_version,
)
from sslmem.workflow.scoring_inputs import MissingProvenanceError, scoring_inputs_from_tags
from tests.service.scoring_setup import (
    Encoders,
    register_pair,
    score_in_pipeline,
    service_settings,
)

# Seconds each (in-process MLflow on sqlite, a local lease store, tiny encoders really scored):
# slow for the default run, yet `make mutation` runs them for workflow/score_version.py.
pytestmark = [pytest.mark.slow, pytest.mark.mutation]


@pytest.fixture
def env(scoring_env: tuple[Encoders, RuntimeSettings]) -> tuple[Encoders, RuntimeSettings]:
    return scoring_env  # tests/service/conftest.py


def _pair(encoders: Encoders, runtime: RuntimeSettings, model: str = "enc") -> str:
    return register_pair(encoders, runtime, model)


def test_missing_provenance_names_every_missing_tag() -> None:
    with pytest.raises(MissingProvenanceError) as caught:
        scoring_inputs_from_tags(
            "m", "3", {T.PROVENANCE: T.dump_provenance({T.LAYER: "backbone", T.SEED_FIELD: 0})}
        )
    assert caught.value.missing == [
        "sslmem.reference_version",
        "sslmem.split_manifest_uri",
        "sslmem.split_manifest_sha256",
        "sslmem.provenance.augmentation",
    ]
    assert "sslmem.provenance.augmentation" in caught.value.problem


def test_pending_version_is_scored_once_then_skipped(env: tuple[Encoders, RuntimeSettings]) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    assert get_version_tags("enc", version)[T.STATUS] == "pending"
    settings = service_settings()
    result = score_registered_version("enc", version, settings=settings, runtime=runtime)
    assert result.outcome == "scored", result.reason
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "scored"
    assert T.score_run_id(tags) and float(tags[T.sslmem_mean_key("candidate")]) == pytest.approx(
        result.summary.sets["candidate"].mean if result.summary else None, rel=1e-8
    )
    # The scored set sizes follow the split: 80 points x 10% in S_C and in S_I.
    assert result.summary is not None
    assert result.summary.sets["candidate"].n == 8 == result.summary.sets["independent"].n
    # No champion: judged incomparable against nothing.
    assert tags[T.JUDGEMENT] == "incomparable" and tags[T.JUDGED_AGAINST] == "none"
    assert json.loads(tags[T.JUDGEMENT_JSON])["champion_version"] is None
    # Exactly one score run, and the lease released.
    runs = client().search_runs(
        [client().get_experiment_by_name("sslmem").experiment_id],
        filter_string="tags.`sslmem.step` = 'score'",
    )
    assert len(runs) == 1
    store = open_conditional_store(runtime.store_uri, runtime)
    assert LeaseManager(store, "observer", 60).current(version_lease_key("enc", version)) is None
    again = score_registered_version("enc", version, settings=settings, runtime=runtime)
    assert again.outcome == "skipped"


def test_a_held_lease_leaves_the_version_alone(env: tuple[Encoders, RuntimeSettings]) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    store = open_conditional_store(runtime.store_uri, runtime)
    other = LeaseManager(store, "other-replica", ttl_s=60)
    assert other.acquire(version_lease_key("enc", version)) is not None
    result = score_registered_version(
        "enc",
        version,
        settings=service_settings(),
        runtime=runtime,
    )
    assert result.outcome == "busy"
    assert get_version_tags("enc", version)[T.STATUS] == "pending"


def test_missing_provenance_and_corrupt_weights_end_failed(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path
) -> None:
    encoders, runtime = env
    bare = register_encoder(encoders.candidate, model_name="bare", tags={T.STATUS: "pending"})
    result = score_registered_version(
        "bare",
        bare.version,
        settings=service_settings(models=["bare"]),  # in scope by configuration, not by tag
        runtime=runtime,
    )
    assert (result.outcome, result.failure) == ("failed", "missing_provenance")
    tags = get_version_tags("bare", bare.version)
    assert tags[T.STATUS] == "failed"
    for key in T.REQUIRED_PROVENANCE:
        assert key in tags[T.FAILURE_REASON]

    version = _pair(encoders, runtime, model="corrupt")
    # Corrupt the stored weights (and tag their hash, so the weights, not the hash, are wrong).
    import mlflow

    source = client().get_model_version("corrupt", version).source
    model = mlflow.get_logged_model(source.removeprefix("models:/"))
    stored = Path(model.artifact_location.removeprefix("file://")) / "artifacts"
    garbage = b"\x08\x00\x00\x00\x00\x00\x00\x00{not json"
    (stored / "checkpoint.safetensors").write_bytes(garbage)
    import hashlib

    client().set_model_version_tag(
        "corrupt", version, T.CHECKPOINT_SHA256, hashlib.sha256(garbage).hexdigest()
    )
    settings = service_settings(model_cache_dir=tmp_path / "cache")
    result = score_registered_version("corrupt", version, settings=settings, runtime=runtime)
    assert (result.outcome, result.failure) == ("failed", "invalid_checkpoint")
    tags = get_version_tags("corrupt", version)
    assert tags[T.STATUS] == "failed" and "candidate weights" in tags[T.FAILURE_REASON]


def test_unknown_version_fails_without_tagging(env: tuple[Encoders, RuntimeSettings]) -> None:
    _, runtime = env
    settings = service_settings(models=["nope"])  # configured, yet absent from the registry
    result = score_registered_version("nope", 1, settings=settings, runtime=runtime)
    assert (result.outcome, result.failure) == ("failed", "unknown_model")
    with pytest.raises(TrackingError):
        get_version_tags("nope", 1)


def test_same_weights_as_the_champion_judge_neutral_paired(
    env: tuple[Encoders, RuntimeSettings],
) -> None:
    encoders, runtime = env
    first = _pair(encoders, runtime)
    settings = service_settings()
    assert (
        score_registered_version("enc", first, settings=settings, runtime=runtime).outcome
        == "scored"
    )
    set_alias("enc", "champion", first)
    # The champion itself is not judged against itself: its own budget only, said so.
    own = judge_registered_version("enc", first, settings=settings, runtime=runtime)
    assert own is not None and own.champion_version is None
    assert own.reasons == [
        "this version is the champion (alias 'champion'); it is not judged against itself"
    ]
    assert get_version_tags("enc", first)[T.JUDGED_AGAINST] == first  # reconcile: judged
    second = register_external_encoder(
        encoders.candidate, model_name="enc", split_uri=encoders.split_uri,
        reference_uri="models:/enc-ref/1", settings=runtime,
    ).version  # fmt: skip
    result = score_registered_version("enc", second, settings=settings, runtime=runtime)
    assert result.outcome == "scored" and result.judgement is not None
    # Same weights, same split, same seeded views: every point scores the same, Δ = 0 exactly.
    judgement = result.judgement
    assert judgement.paired and judgement.mean is not None
    assert judgement.mean.delta == 0.0 and judgement.mean.p_value == 1.0
    assert judgement.outcome.value == "neutral"
    tags = get_version_tags("enc", second)
    assert (tags[T.JUDGEMENT], tags[T.JUDGED_AGAINST]) == ("neutral", first)
    # A per-model policy tag applies: a budget the candidate breaks makes it a regression.
    client().set_registered_model_tag("enc", "sslmem.policy.budget_mean", "-1000")
    rejudged = judge_registered_version("enc", second, settings=settings, runtime=runtime)
    assert rejudged is not None and rejudged.outcome.value == "regression"
    assert get_version_tags("enc", second)[T.JUDGEMENT] == "regression"


def test_an_unreachable_object_store_is_not_a_verdict_on_the_version(
    env: tuple[Encoders, RuntimeSettings],
) -> None:
    from sslmem.errors import StoreError
    from tests.servers import free_port

    encoders, runtime = env
    version = _pair(encoders, runtime)
    # The split now lives on an S3 endpoint that does not answer (an outage while scoring).
    client().set_model_version_tag("enc", version, T.SPLIT_MANIFEST_URI, "s3://splits/split.json")
    down = runtime.model_copy(
        update={"s3_endpoint": f"127.0.0.1:{free_port()}", "s3_secure": False, "store_retries": 0}
    )
    allowed = service_settings(allowed_uri_prefixes=["s3://splits/"])  # inside the allow-list
    with pytest.raises(StoreError) as caught:
        score_registered_version("enc", version, settings=allowed, runtime=down)
    assert is_transient(caught.value)
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "running" and T.FAILURE_REASON not in tags  # not failed
    store = open_conditional_store(runtime.store_uri, runtime)
    key = version_lease_key("enc", version)
    assert LeaseManager(store, "observer", 60).current(key) is None  # released for the retry
    # The store is back: the next attempt scores it.
    client().set_model_version_tag("enc", version, T.SPLIT_MANIFEST_URI, encoders.split_uri)
    result = score_registered_version("enc", version, settings=service_settings(), runtime=runtime)
    assert result.outcome == "scored"


def test_a_reference_that_no_longer_exists_ends_failed_unknown_model(
    env: tuple[Encoders, RuntimeSettings],
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    client().delete_model_version("enc-ref", "1")
    result = score_registered_version("enc", version, settings=service_settings(), runtime=runtime)
    assert (result.outcome, result.failure) == ("failed", "unknown_model")
    tags = get_version_tags("enc", version)
    assert tags[T.STATUS] == "failed" and "models:/enc-ref/1" in tags[T.FAILURE_REASON]


def _pipeline_scoring(
    encoders: Encoders,
    runtime: RuntimeSettings,
    version: str,
    out: Path,
    wait_s: float = 3600.0,
    poll_s: float = 5.0,
) -> ScoreReport:
    """The pipeline's scoring step under the service's lease settings."""
    lease_settings = service_settings().lease_settings()
    return score_in_pipeline(
        encoders, runtime, version, out, wait_s=wait_s, poll_s=poll_s, lease_settings=lease_settings
    )


def _score_runs(version: str) -> list[str]:
    runs = client().search_runs(
        [e.experiment_id for e in client().search_experiments()],
        filter_string=f"tags.`sslmem.model_version` = 'models:/enc/{version}'",
    )
    return [r.info.run_id for r in runs]


def test_pipeline_scoring_after_the_service_reuses_its_result(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    served = score_registered_version("enc", version, settings=service_settings(), runtime=runtime)
    assert served.outcome == "scored" and served.summary is not None
    runs = _score_runs(version)
    assert len(runs) == 1
    report = _pipeline_scoring(encoders, runtime, version, tmp_path / "out")
    # The service's result, read back: same numbers, same points, no second score run.
    assert report.summary == served.summary
    assert len(report.columns["sample_index"]) == sum(s.n for s in served.summary.sets.values())
    assert (tmp_path / "out" / "summary.json").is_file()
    assert _score_runs(version) == runs


def test_service_after_the_pipeline_skips_the_version(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    report = _pipeline_scoring(encoders, runtime, version, tmp_path / "out")
    assert get_version_tags("enc", version)[T.STATUS] == "scored"
    assert report.summary.sets["candidate"].n == 8
    served = score_registered_version("enc", version, settings=service_settings(), runtime=runtime)
    assert served.outcome == "skipped"
    assert len(_score_runs(version)) == 1


def test_pipeline_scoring_waits_for_a_held_claim_and_then_gives_up(
    env: tuple[Encoders, RuntimeSettings], tmp_path: Path
) -> None:
    encoders, runtime = env
    version = _pair(encoders, runtime)
    store = open_conditional_store(runtime.store_uri, runtime)
    other = LeaseManager(store, "the-service", ttl_s=60)
    assert other.acquire(version_lease_key("enc", version)) is not None
    with pytest.raises(ScoringError, match="being scored by another scorer"):
        _pipeline_scoring(encoders, runtime, version, tmp_path / "out", wait_s=0.5, poll_s=0.1)
    assert get_version_tags("enc", version)[T.STATUS] == "pending"
    assert _score_runs(version) == []
