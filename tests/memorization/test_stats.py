import numpy as np
import pytest
from scipy import stats

from sslmem.errors import ScoringError
from sslmem.memorization.stats import summarize_scores, summarize_set, welch_test


def test_set_summary_values() -> None:
    values = np.array([0.0, 0.1, 0.2, 0.3])
    s = summarize_set(values, thresholds=(0.15,))
    assert s.n == 4
    assert s.mean == pytest.approx(0.15)
    assert s.std == pytest.approx(np.std(values, ddof=1))
    assert s.fraction_above == {"0.15": 0.5}
    assert s.quantiles["q50"] == pytest.approx(0.15)
    assert s.ci95_low < s.mean < s.ci95_high


def test_welch_matches_scipy_one_sided() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.1, 0.05, 50), rng.normal(0.0, 0.08, 70)
    t = welch_test(a, b, "extra")
    ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert t.p_value == pytest.approx(ref.pvalue)
    assert t.t_statistic == pytest.approx(ref.statistic)


def test_verdict_passes_on_the_expected_signature_and_fails_without_it() -> None:
    rng = np.random.default_rng(1)
    good = {
        "candidate": rng.normal(0.05, 0.02, 80),
        "independent": rng.normal(-0.04, 0.02, 80),
        "extra": rng.normal(0.0, 0.02, 80),
    }
    _, tests, verdict = summarize_scores(good)
    assert verdict.passed
    assert set(tests) == {"independent", "extra"}
    flat = {name: rng.normal(0.0, 0.02, 80) for name in good}
    assert not summarize_scores(flat)[2].passed


def test_empty_and_tiny_sets_rejected() -> None:
    with pytest.raises(ScoringError, match="empty"):
        summarize_set(np.array([]))
    with pytest.raises(ScoringError, match=">= 2 points"):
        welch_test(np.array([1.0]), np.array([0.0, 1.0]), "extra")
