"""The judgement's edges that mutation testing found unpinned (docs/service.md#mutation-testing).

Each test states a behaviour a user relies on — the boundary of every rule, the protocol a
version is recorded under, the sentences the description and the service show — against
expectations written by hand or taken from scipy, never from the code under test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from sslmem.errors import ScoringError
from sslmem.memorization.judgement import (
    JudgementOutcome,
    JudgementPolicy,
    ScoredVersion,
    ScoringProtocol,
    compare_fractions,
    compare_means,
    judge,
    protocol_differences,
)
from sslmem.memorization.stats import Verdict
from tests.memorization.scored import CAND, CHAMP
from tests.memorization.scored import make_summary as _summary
from tests.memorization.scored import make_version as _version

POLICY = JudgementPolicy(alpha=0.05, min_delta=0.005, accuracy_gain=0.01, threshold=0.1)
RISE = stats.ttest_rel(CAND, CHAMP)
RISE_CI = RISE.confidence_interval(0.95)


def _columns(scores: list[float]) -> dict[str, Any]:
    return {
        "sample_index": list(range(len(scores))),
        "set": ["candidate"] * len(scores),
        "sslmem_raw": scores,
    }


# --- what a version is recorded under ----------------------------------------------------------


def test_the_protocol_records_estimator_seed_and_json_augmentation() -> None:
    summary = _summary(np.array(CAND), estimator="ustat", seed=7, views=4)
    protocol = ScoringProtocol.from_summary(summary)
    assert (protocol.estimator, protocol.seed, protocol.views) == ("ustat", 7, 4)
    # JSON form (lists, not tuples): the protocol read back from a tag equals the one written.
    assert protocol.augmentation["crop_scale"] == [0.2, 1.0]
    assert ScoringProtocol.model_validate_json(protocol.model_dump_json()) == protocol


def test_the_verdict_is_the_summarys_three_state_outcome() -> None:
    inconclusive = Verdict(
        outcome="inconclusive", passed=False, alpha=0.05, checks=[], reason="no control"
    )
    summary = _summary(np.array(CAND)).model_copy(update={"verdict": inconclusive})
    assert ScoredVersion.from_scores("3", _columns(CAND), summary).verdict == "inconclusive"
    # A summary written before the three-state verdict holds only ``passed``.
    older = Verdict.model_validate({"passed": False, "alpha": 0.05, "checks": []})
    summary = summary.model_copy(update={"verdict": older})
    assert ScoredVersion.from_scores("3", _columns(CAND), summary).verdict == "failed"


def test_a_bad_score_table_names_the_version() -> None:
    with pytest.raises(ScoringError, match="version 12"):
        ScoredVersion.from_scores("12", _columns([0.1]), _summary(np.array(CAND)))


def test_dict_differences_name_each_differing_key_with_both_values() -> None:
    base = _version(CAND).protocol
    other_data = {**base.dataset, "num_samples": 700, "source": "s3://other"}
    views = base.views + 1
    other = base.model_copy(update={"dataset": other_data, "views": views})
    assert protocol_differences(base, other) == [
        "dataset: num_samples 600 vs 700, source None vs 's3://other'",
        f"views: {base.views} vs {views}",
    ]
    two = _version(CHAMP, version="1", views=views, seed=3)
    judged = judge(_version(CAND), two, POLICY)
    assert judged.outcome is JudgementOutcome.INCOMPARABLE
    assert judged.reasons[-1].endswith(f"views: {base.views} vs {views}; seed: 0 vs 3")


# --- the tests' edges ---------------------------------------------------------------------------


# The helper's own protocol summary of a constant score set warns; the judgement does not.
@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
def test_zero_variance_gives_the_paired_df_and_no_welch_df() -> None:
    # Binary-exact values: every paired difference is exactly 0.25.
    champion = [0.25, 0.5, 0.75, 1.0, 1.25]
    paired = compare_means(_version([0.5, 0.75, 1.0, 1.25, 1.5]), _version(champion, version="1"))
    assert (paired.test, paired.df, paired.t_statistic, paired.p_value) == (
        "paired_t",
        4.0,
        None,
        0.0,
    )
    flat = compare_means(
        _version([0.3, 0.3, 0.3]), _version([0.1, 0.1], version="1", indices=[7, 8])
    )
    assert (flat.test, flat.df, flat.p_value) == ("welch_t", None, 0.0)
    assert (flat.ci95_low, flat.ci95_high) == pytest.approx((0.2, 0.2))
    assert paired.delta == 0.25


def test_a_point_exactly_at_the_threshold_is_not_above_it() -> None:
    # 0.25 and 0.5 are exact in binary: "strictly above 0.25" leaves one point per side.
    candidate, champion = [0.25, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.5]
    result = compare_fractions(_version(candidate), _version(champion, version="1"), 0.25)
    assert (result.candidate_fraction, result.champion_fraction) == (0.25, 0.25)


def test_no_point_above_the_threshold_on_either_side_is_no_change() -> None:
    # Unpaired (other points), pooled fraction 0: the z-test's standard error is 0.
    result = compare_fractions(
        _version([0.01, 0.02, 0.03]), _version([0.01, 0.02], version="1", indices=[5, 6]), 0.1
    )
    assert (result.test, result.delta, result.p_value) == ("two_proportion_z", 0.0, 1.0)


def test_the_paired_fraction_interval_is_symmetric_around_the_difference() -> None:
    # Above 0.1: points 0 and 1 only in the candidate, point 4 only in the champion:
    # d = (2 - 1) / 5 = 0.2, var = ((2 + 1) / 5 - 0.2^2) / 5 = 0.112.
    candidate, champion = [0.2, 0.3, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.2]
    result = compare_fractions(_version(candidate), _version(champion, version="1"), 0.1)
    half = 1.959964 * math.sqrt(0.112)
    assert (result.ci95_low, result.ci95_high) == pytest.approx((0.2 - half, 0.2 + half), rel=1e-5)


# --- the rules' boundaries ---------------------------------------------------------------------


def test_a_mean_exactly_at_the_budget_is_within_it() -> None:
    at_budget = _version([0.25, 0.75])  # mean 0.5, exact in binary
    policy = POLICY.model_copy(update={"budget_mean": 0.5})
    assert not judge(at_budget, None, policy).budget_exceeded
    over = POLICY.model_copy(update={"budget_mean": 0.4375})
    assert judge(at_budget, None, over).budget_exceeded


def test_p_exactly_at_alpha_is_not_significant() -> None:
    at_alpha = POLICY.model_copy(update={"alpha": float(RISE.pvalue)})
    judged = judge(_version(CAND), _version(CHAMP, version="1"), at_alpha)
    assert judged.outcome is JudgementOutcome.NEUTRAL
    assert judged.reasons[0].startswith("no memorisation change beyond the policy")


def test_a_ci_bound_exactly_at_min_delta_counts_as_a_change() -> None:
    at_low = POLICY.model_copy(update={"min_delta": float(RISE_CI.low)})
    rise = judge(_version(CAND, knn=0.8, probe=0.8), _version(CHAMP, version="1"), at_low)
    assert rise.outcome is JudgementOutcome.REGRESSION
    # The mirror image: the champion's scores as the candidate's, a fall whose CI's upper bound
    # is exactly -min_delta.
    fall = judge(_version(CHAMP, knn=0.8, probe=0.85), _version(CAND, version="1"), at_low)
    assert fall.mean is not None
    assert fall.mean.ci95_high == -RISE_CI.low  # negated differences: the CI exactly mirrored
    assert fall.outcome is JudgementOutcome.IMPROVEMENT


def test_accuracy_changes_exactly_at_gamma_count_in_the_versions_favour() -> None:
    # Binary-exact accuracies: both change by exactly 0.25 = gamma.
    policy = POLICY.model_copy(update={"accuracy_gain": 0.25})
    lower: dict[str, Any] = {"knn": 0.5, "probe": 0.625}
    higher: dict[str, Any] = {"knn": 0.75, "probe": 0.875}
    rise = judge(_version(CAND, **higher), _version(CHAMP, version="1", **lower), policy)
    assert rise.outcome is JudgementOutcome.NEUTRAL  # the gain excuses the memorisation
    assert "but every accuracy gained ≥ 0.25 (worst Δ accuracy +0.2500)" in rise.reasons[0]
    fall = judge(_version(CHAMP, **lower), _version(CAND, version="1", **higher), policy)
    assert fall.outcome is JudgementOutcome.IMPROVEMENT  # the loss is within gamma
    assert "no accuracy lost beyond 0.25 (worst Δ accuracy -0.2500)" in fall.reasons[0]


# --- the sentences users read -------------------------------------------------------------------


def test_the_reasons_name_the_test_and_the_accuracy_evidence() -> None:
    champion = _version(CHAMP, version="1", knn=0.8, probe=0.85)
    paired = judge(_version(CAND, knn=0.8, probe=0.85), champion, POLICY)
    assert paired.champion_verdict == champion.verdict
    assert "], paired t-test on the same S_C points, p = " in paired.reasons[0]
    assert "without an accuracy gain of ≥ 0.01 (worst Δ accuracy +0.0000)" in paired.reasons[0]
    higher = [0.30, 0.31, 0.32, 0.33, 0.34]
    other_points = _version(higher, indices=[10, 11, 12, 13, 14], knn=None, probe=None)
    welch = judge(other_points, champion, POLICY)
    assert welch.outcome is JudgementOutcome.REGRESSION
    assert "], Welch t-test (the versions scored different S_C points), p = " in welch.reasons[0]
    assert "(accuracy not measured on both)" in welch.reasons[0]


def test_a_fall_without_the_accuracy_evidence_says_why_it_is_not_an_improvement() -> None:
    champion = _version(CAND, version="1", knn=0.8, probe=0.85)
    unknown = judge(_version(CHAMP, knn=None, probe=None), champion, POLICY)
    assert unknown.outcome is JudgementOutcome.NEUTRAL
    assert (
        "but cannot tell the accuracy cost (accuracy not measured on both)" in (unknown.reasons[0])
    )
    costly = judge(_version(CHAMP, knn=0.7, probe=0.85), champion, POLICY)
    assert costly.outcome is JudgementOutcome.NEUTRAL
    assert "but an accuracy cost > 0.01 (worst Δ accuracy -0.1000)" in costly.reasons[0]
