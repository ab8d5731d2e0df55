"""Judging registered versions: a champion scored otherwise is re-scored, under the lease.

Real local MLflow (sqlite) and a real local object store; tiny encoders scored for real.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sslmem.config import RuntimeSettings
from sslmem.coordination.conditional_store import open_conditional_store
from sslmem.coordination.lease import version_lease_key
from sslmem.data import load_manifest
from sslmem.data.store import LocalStore
from sslmem.errors import LeaseLostError
from sslmem.memorization.judgement import JudgementOutcome
from sslmem.models import save_checkpoint
from sslmem.service.settings import ServiceSettings
from sslmem.tracking import TrackingTarget, get_version_tags, set_alias
from sslmem.tracking import tags as T
from sslmem.workflow.judge import judge_registered_version
from sslmem.workflow.register_external import register_external_encoder
from sslmem.workflow.rescoring import RESCORED_PREFIX
from sslmem.workflow.score_version import score_registered_version, version_claim
from tests.service.scoring_setup import make_encoders, runtime_settings, service_settings
from tests.tracking.conftest import tiny_registry_encoder

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Versions:
    runtime: RuntimeSettings
    settings: ServiceSettings
    store: Path
    champion: str
    candidate: str


def _retrained_reference(old: Path, split_uri: str) -> Path:
    """Another reference checkpoint of the same split and recipe (a retrained reference)."""
    from sslmem.models.checkpoint import load_checkpoint

    metadata = dict(load_checkpoint(old).header.metadata)
    metadata["seed"] = 7
    assert metadata["split_manifest_sha256"] == load_manifest(split_uri).manifest_sha256
    return save_checkpoint(tiny_registry_encoder(7), old.with_name("g7.safetensors"),
                           metadata=metadata)  # fmt: skip


@pytest.fixture
def versions(local_mlflow: TrackingTarget, tmp_path: Path) -> Versions:
    """Champion v1 scored against reference v1; candidate v2 scored against reference v2."""
    store = tmp_path / "store"
    encoders = make_encoders(store / "inputs")  # inside the store: a readable location
    runtime = runtime_settings(local_mlflow.tracking_uri, store)
    settings = service_settings()
    split = encoders.split_uri

    def register(path: Path, model: str, reference: str | None = None) -> str:
        return register_external_encoder(
            path, model_name=model, split_uri=split, reference_uri=reference, settings=runtime
        ).version

    register(encoders.reference, "enc-ref")
    champion = register(encoders.candidate, "enc", "models:/enc-ref/1")
    result = score_registered_version("enc", champion, settings=settings, runtime=runtime)
    assert result.outcome == "scored", result.reason
    set_alias("enc", "champion", champion)
    register(_retrained_reference(encoders.reference, split), "enc-ref")
    candidate = register(encoders.other_candidate, "enc", "models:/enc-ref/2")
    result = score_registered_version("enc", candidate, settings=settings, runtime=runtime)
    assert result.outcome == "scored", result.reason
    # Judged right after scoring, under the scoring step's own claim (not refused as busy).
    assert result.judgement is not None and result.judgement.champion_rescored
    return Versions(runtime, settings, store, champion, candidate)


def test_a_champion_scored_under_an_old_reference_is_rescored_for_a_paired_judgement(
    versions: Versions,
) -> None:
    v = versions
    # The old path refuses: the references differ, so the raw scores are not comparable.
    refused = judge_registered_version(
        "enc", v.candidate, settings=v.settings, runtime=v.runtime, rescore=False
    )
    assert refused is not None and refused.outcome is JudgementOutcome.INCOMPARABLE
    assert [d.split(":")[0] for d in refused.differences] == ["reference_sha256"]

    judged = judge_registered_version("enc", v.candidate, settings=v.settings, runtime=v.runtime)
    assert judged is not None and judged.outcome is not JudgementOutcome.INCOMPARABLE
    assert judged.champion_rescored and judged.differences == [] and judged.paired
    assert judged.mean is not None and judged.mean.test == "paired_t"
    assert judged.champion_version == v.champion
    # The champion's side is the champion's weights against the *candidate's* reference:
    # not the published mean (old reference).
    published = float(get_version_tags("enc", v.champion)[T.sslmem_mean_key("candidate")])
    assert judged.mean.champion_mean != pytest.approx(published, abs=1e-9)
    # Cached in the object store: judging again reads it, and the numbers are the same.
    entries = LocalStore(v.store).list(RESCORED_PREFIX)
    assert len(entries) == 1
    again = judge_registered_version("enc", v.candidate, settings=v.settings, runtime=v.runtime)
    assert again is not None and again.mean == judged.mean
    assert LocalStore(v.store).list(RESCORED_PREFIX) == entries


def test_the_champion_side_is_a_true_paired_rescoring(versions: Versions) -> None:
    """The re-scored champion: the champion's weights, the candidate's reference and points."""
    from sslmem.tracking.reports import read_score_report
    from sslmem.workflow.rescoring import RescoredChampions

    v = versions
    judged = judge_registered_version("enc", v.candidate, settings=v.settings, runtime=v.runtime)
    assert judged is not None and judged.mean is not None
    (name,) = LocalStore(v.store).list(RESCORED_PREFIX)
    key = json.loads(LocalStore(v.store).get_bytes(name))["key"]
    loaded = RescoredChampions(LocalStore(v.store)).load(key)
    assert loaded is not None
    columns, summary = loaded
    candidate = read_score_report(T.score_run_id(get_version_tags("enc", v.candidate)) or "")
    champion = read_score_report(T.score_run_id(get_version_tags("enc", v.champion)) or "")
    assert summary.references == candidate.summary.references != champion.summary.references
    assert [c.sha256 for c in summary.candidates] == [c.sha256 for c in champion.summary.candidates]
    s_c = candidate.columns["set"] == "candidate"
    np.testing.assert_array_equal(columns["sample_index"], candidate.columns["sample_index"][s_c])
    assert float(np.mean(columns["sslmem_raw"])) == pytest.approx(judged.mean.champion_mean)


def test_the_judgement_is_one_json_tag_written_first_under_the_fence(versions: Versions) -> None:
    v = versions
    judged = judge_registered_version("enc", v.candidate, settings=v.settings, runtime=v.runtime)
    assert judged is not None
    tags = get_version_tags("enc", v.candidate)
    record = json.loads(tags[T.JUDGEMENT_JSON])
    assert record["outcome"] == judged.outcome.value == tags[T.JUDGEMENT]
    assert record["champion_version"] == v.champion == tags[T.JUDGED_AGAINST]
    assert record["mean"]["delta"] == judged.mean.delta if judged.mean else False
    assert {"ci95_low", "ci95_high", "p_value"} <= set(record["mean"])
    assert record["policy"] == judged.policy.model_dump(mode="json")


def test_a_lost_lease_writes_no_judgement(versions: Versions) -> None:
    v = versions
    from sslmem.tracking import set_version_tags

    set_version_tags(
        "enc", v.candidate, {T.JUDGEMENT_JSON: "", T.JUDGEMENT: "", T.JUDGED_AGAINST: ""}
    )
    store = open_conditional_store(v.runtime.store_uri, v.runtime)
    key = version_lease_key("enc", v.candidate, v.settings.lease_settings().prefix)
    with version_claim("enc", v.candidate, settings=v.settings, runtime=v.runtime) as claim:
        assert claim is not None
        # Another holder rewrites the lease object (a take-over): our etag is stale now.
        current = store.read(key)
        assert current is not None
        assert store.replace(key, current[0], current[1]) is not None
        with pytest.raises(LeaseLostError):
            judge_registered_version(
                "enc", v.candidate, settings=v.settings, runtime=v.runtime, claim=claim
            )
    tags = get_version_tags("enc", v.candidate)
    assert not tags.get(T.JUDGEMENT_JSON) and not tags.get(T.JUDGEMENT)


def test_judging_a_version_another_process_holds_waits(versions: Versions) -> None:
    v = versions
    from sslmem.coordination.lease import LeaseManager

    store = open_conditional_store(v.runtime.store_uri, v.runtime)
    lease_settings = v.settings.lease_settings()
    other = LeaseManager(store, "other-replica", lease_settings.ttl_s)
    held = other.acquire(version_lease_key("enc", v.candidate, lease_settings.prefix))
    assert held is not None
    before = get_version_tags("enc", v.candidate).get(T.JUDGEMENT_JSON)
    assert (
        judge_registered_version(
            "enc", v.candidate, settings=v.settings, runtime=v.runtime, rescore=False
        )
        is None
    )
    assert get_version_tags("enc", v.candidate).get(T.JUDGEMENT_JSON) == before


def test_any_protocol_difference_is_rescored_views_here(
    local_mlflow: TrackingTarget, tmp_path: Path
) -> None:
    """A champion scored with another K (same reference) is re-scored with the candidate's K."""
    from tests.service.scoring_setup import FAST_SCORING

    store = tmp_path / "store"
    encoders = make_encoders(store / "inputs")
    runtime = runtime_settings(local_mlflow.tracking_uri, store)
    split = encoders.split_uri
    register_external_encoder(encoders.reference, model_name="k-ref", split_uri=split,
                              settings=runtime)  # fmt: skip

    def candidate(path: Path, views: int) -> str:
        version = register_external_encoder(
            path, model_name="k", split_uri=split, reference_uri="models:/k-ref/1",
            settings=runtime,
        ).version  # fmt: skip
        settings = service_settings(config_overrides=[*FAST_SCORING, f"scoring.views={views}"])
        result = score_registered_version("k", version, settings=settings, runtime=runtime)
        assert result.outcome == "scored", result.reason
        return version

    champion = candidate(encoders.candidate, 3)
    set_alias("k", "champion", champion)
    version = candidate(encoders.other_candidate, 2)
    settings = service_settings()
    refused = judge_registered_version("k", version, settings=settings, runtime=runtime,
                                       rescore=False)  # fmt: skip
    assert refused is not None and refused.differences == ["views: 2 vs 3"]
    judged = judge_registered_version("k", version, settings=settings, runtime=runtime)
    assert judged is not None and judged.champion_rescored and judged.paired
    assert judged.outcome is not JudgementOutcome.INCOMPARABLE
    assert any("views: 2 vs 3" in reason for reason in judged.reasons)


def test_the_json_tag_is_written_before_the_display_tags(versions: Versions) -> None:
    """A lease lost between the writes leaves the new JSON and the old display tags."""
    from sslmem.coordination.lease import Lease
    from sslmem.tracking import set_version_tags
    from sslmem.workflow.score_version import VersionClaim

    v = versions
    old = {T.JUDGEMENT_JSON: "{}", T.JUDGEMENT: "old", T.JUDGED_AGAINST: "old"}
    set_version_tags("enc", v.candidate, old)
    store = open_conditional_store(v.runtime.store_uri, v.runtime)
    key = version_lease_key("enc", v.candidate, v.settings.lease_settings().prefix)

    class TakenOverAfterFirstWrite(VersionClaim):
        """The real claim; another holder rewrites the lease after the first fenced write."""

        fences = 0

        def fence(self, *, publishing: bool = False) -> Lease:
            self.fences += 1
            if self.fences == 2:
                current = store.read(key)
                assert current is not None
                store.replace(key, current[0], current[1])
            return super().fence(publishing=publishing)

    with version_claim("enc", v.candidate, settings=v.settings, runtime=v.runtime) as claim:
        assert claim is not None
        injected = TakenOverAfterFirstWrite(claim.renewer, claim.lease)
        with pytest.raises(LeaseLostError):
            judge_registered_version(
                "enc", v.candidate, settings=v.settings, runtime=v.runtime, claim=injected
            )
    tags = get_version_tags("enc", v.candidate)
    assert json.loads(tags[T.JUDGEMENT_JSON])["champion_version"] == v.champion  # written
    assert (tags[T.JUDGEMENT], tags[T.JUDGED_AGAINST]) == ("old", "old")  # not yet
