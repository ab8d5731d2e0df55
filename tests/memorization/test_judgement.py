"""Judgement of a candidate version against the champion: tests, outcomes, policy tags."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from sslmem.errors import ConfigError, ScoringError
from sslmem.memorization.judgement import (
    Judgement,
    JudgementOutcome,
    JudgementPolicy,
    ScoredVersion,
    compare_fractions,
    compare_means,
    judge,
)
from sslmem.tracking.policy import policy_from_tags
from tests.memorization.scored import CAND, CHAMP
from tests.memorization.scored import make_summary as _summary
from tests.memorization.scored import make_version as _version

# CAND vs CHAMP: the hand data of tests/memorization/scored.py (t = 4.7068, 4 df).
POLICY = JudgementPolicy(alpha=0.01, min_delta=0.005, accuracy_gain=0.01, threshold=0.1)


def test_paired_test_on_same_points_matches_scipy_ttest_rel_and_hand_t() -> None:
    result = compare_means(_version(CAND), _version(CHAMP, version="1"))
    assert result.test == "paired_t"
    assert result.delta == pytest.approx(0.024)
    assert result.t_statistic == pytest.approx(4.7068, abs=1e-4)
    assert result.df == 4
    assert result.p_value == pytest.approx(stats.ttest_rel(CAND, CHAMP).pvalue, rel=1e-9)
    # 95% CI = 0.024 +- t_{0.975,4} (2.7764) * 0.0050990
    assert result.ci95_low == pytest.approx(0.024 - 2.7764 * 0.0050990, abs=1e-5)


def test_rows_are_paired_by_sample_index_not_by_row_order() -> None:
    champion = _version(CHAMP[::-1], version="1", indices=[4, 3, 2, 1, 0])
    result = compare_means(_version(CAND), champion)
    assert result.test == "paired_t"
    assert result.p_value == pytest.approx(stats.ttest_rel(CAND, CHAMP).pvalue, rel=1e-9)


def test_other_points_use_welch_matching_scipy() -> None:
    champion = _version(CHAMP, version="1", indices=[10, 11, 12, 13, 14], manifest="n" * 64)
    result = compare_means(_version(CAND), champion)
    assert result.test == "welch_t"
    assert result.p_value == pytest.approx(
        stats.ttest_ind(CAND, CHAMP, equal_var=False).pvalue, rel=1e-9
    )
    # one point fewer: not the same points either
    assert compare_means(_version(CAND), _version(CHAMP[:4], version="1")).test == "welch_t"


def test_paired_test_detects_a_shift_welch_misses() -> None:
    # Points differ a lot from each other (atypical ones memorised by both versions); the
    # candidate adds 0.01 +- 0.002 to every point.
    champion = np.linspace(-0.2, 0.3, 40)
    candidate = champion + 0.01 + np.where(np.arange(40) % 2 == 0, 0.002, -0.002)
    assert stats.ttest_ind(candidate, champion, equal_var=False).pvalue > 0.5  # Welch: nothing
    paired = judge(_version(candidate), _version(champion, version="1"), POLICY)
    assert paired.paired is True and paired.mean is not None
    assert paired.mean.p_value < 1e-20
    assert paired.outcome is JudgementOutcome.REGRESSION
    unpaired = judge(
        _version(candidate, indices=np.arange(100, 140)), _version(champion, version="1"), POLICY
    )
    assert unpaired.paired is False and unpaired.mean is not None
    assert unpaired.mean.test == "welch_t" and unpaired.mean.p_value > 0.5
    assert unpaired.outcome is JudgementOutcome.NEUTRAL
    assert "Welch" in unpaired.reasons[0]


def test_regression_memorisation_up_without_accuracy_gain() -> None:
    result = judge(_version(CAND), _version(CHAMP, version="1"), POLICY)
    assert result.outcome is JudgementOutcome.REGRESSION and result.regression
    assert result.accuracy is not None and result.accuracy.worst_delta == 0.0
    assert "memorisation up" in result.reasons[0]


def test_memorisation_up_with_accuracy_gain_is_neutral_but_one_accuracy_is_not_enough() -> None:
    champion = _version(CHAMP, version="1", knn=0.80, probe=0.85)
    both = judge(_version(CAND, knn=0.82, probe=0.87), champion, POLICY)
    assert both.outcome is JudgementOutcome.NEUTRAL
    assert both.accuracy is not None
    assert both.accuracy.knn_delta == pytest.approx(0.02)
    assert both.accuracy.linear_probe_delta == pytest.approx(0.02)
    only_knn = judge(_version(CAND, knn=0.85, probe=0.851), champion, POLICY)
    assert only_knn.outcome is JudgementOutcome.REGRESSION


def test_improvement_and_its_accuracy_cost() -> None:
    champion = _version(CAND, version="1", knn=0.80, probe=0.85)
    cheaper = judge(_version(CHAMP, knn=0.795, probe=0.845), champion, POLICY)
    assert cheaper.outcome is JudgementOutcome.IMPROVEMENT and not cheaper.regression
    assert cheaper.mean is not None and cheaper.mean.delta == pytest.approx(-0.024)
    costly = judge(_version(CHAMP, knn=0.80, probe=0.82), champion, POLICY)
    assert costly.outcome is JudgementOutcome.NEUTRAL
    unknown = judge(_version(CHAMP, knn=None, probe=None), champion, POLICY)
    assert unknown.outcome is JudgementOutcome.NEUTRAL
    assert unknown.accuracy is not None and unknown.accuracy.worst_delta is None


def test_the_accuracy_comparison_reports_both_sides_as_measured() -> None:
    """The description and the Δ-accuracy gauges show these numbers: each side as measured."""
    champion = _version(CHAMP, version="1", knn=0.75, probe=0.72)
    judged = judge(_version(CAND, knn=0.80, probe=0.70), champion, POLICY)
    assert judged.accuracy is not None
    assert (judged.accuracy.knn_candidate, judged.accuracy.knn_champion) == (0.80, 0.75)
    assert (judged.accuracy.linear_probe_candidate, judged.accuracy.linear_probe_champion) == (
        0.70,
        0.72,
    )
    assert judged.accuracy.knn_delta == pytest.approx(0.05)
    assert judged.accuracy.worst_delta == pytest.approx(-0.02)  # the probe's fall
    missing = judge(_version(CAND, knn=None, probe=0.70), champion, POLICY).accuracy
    assert missing is not None
    assert (missing.knn_candidate, missing.knn_champion, missing.knn_delta) == (None, 0.75, None)
    assert missing.worst_delta == pytest.approx(-0.02)


# min_delta bounds the 95% CI, computed here by hand from the data above: sd of the
# differences = sqrt(0.00052 / 4) = 0.0114018, se = 0.0114018 / sqrt(5) = 0.0050990,
# t_{0.975,4} = 2.776445 (table), half-width = 0.0141571: CI = [0.0098429, 0.0381571].
CI_LOW, CI_HIGH = 0.0098429, 0.0381571


def test_min_delta_bounds_the_ci_of_a_rise_not_the_point_estimate() -> None:
    cand, champ = _version(CAND), _version(CHAMP, version="1")
    significant = POLICY.model_copy(update={"alpha": 0.05})  # p = 0.0093
    below = significant.model_copy(update={"min_delta": CI_LOW - 1e-5})
    assert judge(cand, champ, below).outcome is JudgementOutcome.REGRESSION
    # Δ = 0.024 is above min_delta, but the CI's lower bound is not: no regression.
    above = significant.model_copy(update={"min_delta": CI_LOW + 1e-5})
    result = judge(cand, champ, above)
    assert result.outcome is JudgementOutcome.NEUTRAL
    assert result.mean is not None and result.mean.delta > above.min_delta
    assert result.mean.ci95_low == pytest.approx(CI_LOW, abs=1e-6)
    assert result.mean.ci95_high == pytest.approx(CI_HIGH, abs=1e-6)


def test_min_delta_bounds_the_ci_of_a_fall_too() -> None:
    # The same data mirrored: Δ = -0.024, CI = [-CI_HIGH, -CI_LOW].
    cand, champ = _version(CHAMP), _version(CAND, version="1")
    significant = POLICY.model_copy(update={"alpha": 0.05})
    below = significant.model_copy(update={"min_delta": CI_LOW - 1e-5})
    assert judge(cand, champ, below).outcome is JudgementOutcome.IMPROVEMENT
    above = significant.model_copy(update={"min_delta": CI_LOW + 1e-5})
    result = judge(cand, champ, above)
    assert result.outcome is JudgementOutcome.NEUTRAL
    assert result.mean is not None and result.mean.delta < -above.min_delta


def test_just_under_the_significance_level_stays_neutral() -> None:
    cand, champ = _version(CAND), _version(CHAMP, version="1")
    p = stats.ttest_rel(CAND, CHAMP).pvalue  # ~0.0093
    at = POLICY.model_copy(update={"alpha": p * 1.01, "min_delta": 0.0})
    assert judge(cand, champ, at).outcome is JudgementOutcome.REGRESSION
    strict = at.model_copy(update={"alpha": p * 0.99})  # p just above alpha
    assert judge(cand, champ, strict).outcome is JudgementOutcome.NEUTRAL


def test_budget_makes_a_regression_regardless() -> None:
    same = _version(CHAMP)
    champion = _version(CHAMP, version="1")
    assert judge(same, champion, POLICY).outcome is JudgementOutcome.NEUTRAL
    # mean of CHAMP is 0.088
    over_mean = POLICY.model_copy(update={"budget_mean": 0.085})
    result = judge(same, champion, over_mean)
    assert result.outcome is JudgementOutcome.REGRESSION and result.budget_exceeded
    assert "budget_mean" in result.reasons[0]
    under = POLICY.model_copy(update={"budget_mean": 0.09})
    assert judge(same, champion, under).outcome is JudgementOutcome.NEUTRAL
    # 1 of 5 points (0.11) is above 0.1: 0.2 > 0.19, not > 0.2
    over_frac = POLICY.model_copy(update={"budget_fraction": 0.19})
    assert judge(same, champion, over_frac).outcome is JudgementOutcome.REGRESSION
    at_frac = POLICY.model_copy(update={"budget_fraction": 0.2})
    assert judge(same, champion, at_frac).outcome is JudgementOutcome.NEUTRAL
    # with no champion, or an incomparable one, the budget still holds
    assert judge(same, None, over_mean).outcome is JudgementOutcome.REGRESSION
    other = _version(CHAMP, version="1", layer="head")
    assert judge(same, other, over_mean).outcome is JudgementOutcome.REGRESSION


def test_incomparable_names_the_differing_fields() -> None:
    champion = _version(CHAMP, version="1", layer="head", views=4)
    result = judge(_version(CAND), champion, POLICY)
    assert result.outcome is JudgementOutcome.INCOMPARABLE and not result.regression
    assert result.differences == ["layer: 'backbone' vs 'head'", "views: 8 vs 4"]
    assert result.mean is None and result.fraction is None
    assert "layer" in result.reasons[0] and "views" in result.reasons[0]
    none = judge(_version(CAND), None, POLICY)
    assert none.outcome is JudgementOutcome.INCOMPARABLE
    assert none.reasons == ["no champion version to compare with"]


def test_another_manifest_of_the_same_protocol_is_comparable_with_welch() -> None:
    champion = _version(CHAMP, version="1", indices=[20, 21, 22, 23, 24], manifest="n" * 64)
    result = judge(_version(CAND), champion, POLICY)
    assert result.outcome is not JudgementOutcome.INCOMPARABLE
    assert result.paired is False and result.fraction is not None
    assert result.fraction.test == "two_proportion_z"


def test_fraction_paired_mcnemar_exact_by_hand() -> None:
    # Above 0.1: points 0-3 only in the candidate (b = 4), 4 and 6 in both, point 5 only in the
    # champion (c = 1). d = (4 - 1)/10 = 0.3; McNemar exact p = P(X >= 4 or X <= 1 | n=5, 1/2)
    # = 12/32 = 0.375; Wald CI of a paired difference: var = ((b + c)/n - d^2)/n = 0.041.
    champion = [0.05 + 0.001 * i for i in range(10)]
    champion[4] = champion[5] = champion[6] = 0.2
    candidate = [0.15, 0.2, 0.3, 0.25, 0.3, 0.05, *champion[6:]]
    result = compare_fractions(_version(candidate), _version(champion, version="1"), 0.1)
    assert result.test == "mcnemar_exact"
    assert (result.candidate_fraction, result.champion_fraction) == (0.6, 0.3)
    assert result.delta == pytest.approx(0.3)
    assert result.p_value == pytest.approx(0.375)
    assert result.ci95_high - result.delta == pytest.approx(1.96 * math.sqrt(0.041), rel=1e-3)


def test_fraction_unpaired_two_proportion_z_by_hand() -> None:
    # 30/100 vs 20/100: pooled 0.25, z = 0.1 / sqrt(0.25 * 0.75 * 0.02) = 1.63299, p = 0.1025
    candidate = [0.2] * 30 + [0.0] * 70
    champion = [0.2] * 20 + [0.0] * 80
    result = compare_fractions(
        _version(candidate), _version(champion, version="1", indices=np.arange(100, 200)), 0.1
    )
    assert result.test == "two_proportion_z"
    assert result.p_value == pytest.approx(0.10247, abs=5e-5)
    assert result.ci95_high - result.delta == pytest.approx(1.96 * 0.0608276, rel=1e-3)


def test_judgement_is_json_serialisable_and_round_trips() -> None:
    result = judge(_version(CAND), _version(CHAMP, version="1"), POLICY)
    data = json.loads(result.model_dump_json())
    assert data["outcome"] == "regression"
    assert data["mean"]["test"] == "paired_t"
    assert data["policy"]["alpha"] == 0.01
    assert data["candidate_version"] == "2" and data["champion_version"] == "1"
    assert Judgement.model_validate_json(result.model_dump_json()) == result


def test_zero_variance_differences_are_a_certain_shift() -> None:
    champion = [0.1, 0.2, 0.3]
    same = compare_means(_version(champion), _version(champion, version="1"))
    assert same.p_value == 1.0 and same.t_statistic is None
    shifted = compare_means(_version([0.15, 0.25, 0.35]), _version(champion, version="1"))
    assert shifted.p_value == 0.0 and shifted.delta == pytest.approx(0.05)


def test_bad_score_tables_are_refused() -> None:
    summary = _summary(np.array(CAND))
    good: dict[str, Any] = {
        "sample_index": [0, 1, 2],
        "set": ["candidate"] * 3,
        "sslmem_raw": [0.1, 0.2, 0.3],
    }
    with pytest.raises(ScoringError, match="lacks column"):
        ScoredVersion.from_scores("3", {k: good[k] for k in ("set", "sslmem_raw")}, summary)
    with pytest.raises(ScoringError, match="more than once"):
        ScoredVersion.from_scores("3", {**good, "sample_index": [0, 1, 1]}, summary)
    with pytest.raises(ScoringError, match="non-finite"):
        ScoredVersion.from_scores("3", {**good, "sslmem_raw": [0.1, float("nan"), 0.3]}, summary)
    with pytest.raises(ScoringError, match="unequal lengths"):
        ScoredVersion.from_scores("3", {**good, "set": ["candidate"] * 2}, summary)
    with pytest.raises(ScoringError, match="1 scored candidate point"):
        ScoredVersion.from_scores("3", {**good, "set": ["candidate", "extra", "extra"]}, summary)


def test_only_candidate_rows_are_judged() -> None:
    columns: dict[str, Any] = {
        "sample_index": [0, 1, 2, 7, 8],
        "set": ["candidate", "candidate", "candidate", "independent", "independent"],
        "sslmem_raw": [0.1, 0.2, 0.3, -5.0, -5.0],
    }
    version = ScoredVersion.from_scores("3", columns, _summary(np.array(CAND)))
    assert version.sample_index.tolist() == [0, 1, 2]
    assert version.fraction_above(0.15) == pytest.approx(2 / 3)


def test_policy_from_tags_overrides_defaults() -> None:
    defaults = JudgementPolicy(budget_mean=0.3)
    tags = {
        "sslmem.policy.alpha": "0.05",
        "sslmem.policy.min_delta": " 0.02 ",
        "sslmem.policy.accuracy_gain": "0.005",
        "sslmem.policy.threshold": "0.2",
        "sslmem.policy.budget_fraction": "0.4",
        "team": "vision",  # not a policy tag: ignored
    }
    policy = policy_from_tags(tags, defaults)
    assert (policy.alpha, policy.min_delta, policy.accuracy_gain) == (0.05, 0.02, 0.005)
    assert (policy.threshold, policy.budget_mean, policy.budget_fraction) == (0.2, 0.3, 0.4)
    assert policy_from_tags({}, defaults) == defaults
    cleared = policy_from_tags({"sslmem.policy.budget_mean": "none"}, defaults)
    assert cleared.budget_mean is None


@pytest.mark.parametrize(
    ("tag", "value", "message"),
    [
        ("sslmem.policy.alpha", "abc", r"sslmem\.policy\.alpha must be a finite number, got 'abc'"),
        ("sslmem.policy.alpha", "1.5", r"sslmem\.policy\.alpha = '1\.5' is invalid"),
        ("sslmem.policy.min_delta", "-0.1", r"sslmem\.policy\.min_delta = '-0\.1' is invalid"),
        ("sslmem.policy.budget_fraction", "2", r"budget_fraction = '2' is invalid"),
        ("sslmem.policy.threshold", "nan", r"threshold must be a finite number, got 'nan'"),
        ("sslmem.policy.alpha", "none", r"alpha must be a finite number, got 'none'"),
        ("sslmem.policy.alhpa", "0.05", r"unknown judgement policy tag 'sslmem\.policy\.alhpa'"),
    ],
)
def test_policy_tag_errors_name_the_tag_and_value(tag: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        policy_from_tags({tag: value}, JudgementPolicy())
    assert info.value.fix is not None and "sslmem.policy." in info.value.fix
