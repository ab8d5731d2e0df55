"""The scoring protocol includes the reference checkpoints, the precision and the sslmem version."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sslmem.memorization.judgement import (
    JudgementOutcome,
    JudgementPolicy,
    ScoredVersion,
    ScoringProtocol,
    judge,
)
from sslmem.memorization.scoring import CheckpointRef, ScoreSummary
from tests.memorization.scored import make_summary

CAND = [0.10, 0.12, 0.08, 0.15, 0.11]
CHAMP = [0.07, 0.10, 0.07, 0.11, 0.09]
POLICY = JudgementPolicy(alpha=0.05, min_delta=0.0)


def _ref(sha: str) -> CheckpointRef:
    return CheckpointRef(path="g.safetensors", sha256=sha, arch="small_cnn", representation={})


def _version(scores: list[float], version: str, **summary: Any) -> ScoredVersion:
    values = np.asarray(scores)
    base = make_summary(values).model_copy(
        update={"references": [_ref("r" * 64)], "precision": "fp32", "sslmem_version": "0.1.0"}
    )
    columns: dict[str, Any] = {
        "sample_index": np.arange(values.size),
        "set": ["candidate"] * values.size,
        "sslmem_raw": values,
    }
    return ScoredVersion.from_scores(version, columns, base.model_copy(update=summary))


def test_the_protocol_records_reference_precision_version_and_seed() -> None:
    protocol = _version(CAND, "2").protocol
    assert protocol.reference_sha256 == ("r" * 64,)
    assert (protocol.precision, protocol.sslmem_version, protocol.seed) == ("fp32", "0.1.0", 0)


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"references": [_ref("s" * 64)]}, "reference_sha256"),
        ({"precision": "bf16 autocast"}, "precision"),
        ({"sslmem_version": "0.2.0"}, "sslmem_version"),
    ],
)
def test_a_champion_scored_otherwise_is_incomparable(update: dict[str, Any], field: str) -> None:
    candidate = _version(CAND, "2")
    assert judge(candidate, _version(CHAMP, "1"), POLICY).outcome is JudgementOutcome.REGRESSION
    result = judge(candidate, _version(CHAMP, "1", **update), POLICY)
    assert result.outcome is JudgementOutcome.INCOMPARABLE and result.mean is None
    assert [d.split(":")[0] for d in result.differences] == [field]


def test_another_split_has_its_own_reference() -> None:
    candidate = _version(CAND, "2")
    other = _version(CHAMP, "1", references=[_ref("s" * 64)], manifest_sha256="n" * 64)
    result = judge(candidate, other, POLICY)
    assert result.outcome is not JudgementOutcome.INCOMPARABLE
    assert result.differences == [] and result.mean is not None


def test_legacy_summaries_still_read() -> None:
    legacy = make_summary(np.asarray(CAND)).model_dump(mode="json")
    del legacy["precision"]
    protocol = ScoringProtocol.from_summary(ScoreSummary.model_validate(legacy))
    assert protocol.precision == "fp32" and protocol.reference_sha256 == ()
