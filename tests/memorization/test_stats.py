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


# Two-sided 95% Student t quantiles t_{0.975, df} as printed in standard tables (e.g. NIST/SEMATECH
# e-Handbook of Statistical Methods, Sec. 1.3.6.7.2, "Critical values of the t distribution").
T_TABLE_0975 = {1: 12.706, 2: 4.303, 5: 2.571, 10: 2.228, 30: 2.042}


@pytest.mark.parametrize(("df", "t"), sorted(T_TABLE_0975.items()))
def test_ci95_half_width_uses_the_published_t_quantile(df: int, t: float) -> None:
    # n = df + 1 points alternating -1/+1 around 2 (n even) or with one extra 2: the sample
    # std and sem are computed here by hand, independently of the implementation.
    values = np.array([2.0 + (-1.0) ** i for i in range(df + 1)])
    n = values.size
    mean = values.sum() / n
    sem = ((values - mean) ** 2).sum() / (n - 1) / n
    sem = float(np.sqrt(sem))
    s = summarize_set(values)
    assert s.mean == pytest.approx(mean)
    half = s.ci95_high - s.mean
    assert s.mean - s.ci95_low == pytest.approx(half)
    # The table gives 3 decimals: agree to the table's precision, not to the 4th digit.
    assert half / sem == pytest.approx(t, abs=6e-4)


def _normal(mean: float, n: int = 60, seed: int = 0) -> np.ndarray:  # type: ignore[type-arg]
    return np.random.default_rng(seed).normal(mean, 0.02, n)


def test_candidate_alone_is_inconclusive_never_passed() -> None:
    # A clearly positive S_C with no control: the f/g seed offset alone could explain it.
    _, tests, verdict = summarize_scores({"candidate": _normal(0.3)})
    assert tests == {}
    assert verdict.outcome == "inconclusive" and not verdict.passed
    assert "no control" in verdict.reason


def test_controls_without_spread_cannot_refute_so_the_verdict_is_inconclusive() -> None:
    # Identical constant sets (an encoder scored against a copy of itself) make the Welch
    # p-value 0/0 = NaN: no test, so no judgement either way.
    by_set = {"candidate": np.zeros(10), "extra": np.zeros(10)}
    _, tests, verdict = summarize_scores(by_set)
    assert np.isnan(tests["extra"].p_value)
    assert verdict.outcome == "inconclusive"


def test_a_control_that_refutes_gives_failed_and_one_that_confirms_gives_passed() -> None:
    refuted = summarize_scores({"candidate": _normal(0.05), "extra": _normal(0.05, seed=1)})[2]
    assert refuted.outcome == "failed" and not refuted.passed
    confirmed = summarize_scores({"candidate": _normal(0.05), "extra": _normal(0.0, seed=1)})[2]
    assert confirmed.outcome == "passed" and confirmed.passed


def test_without_the_candidate_set_there_is_nothing_to_judge() -> None:
    verdict = summarize_scores({"extra": _normal(0.0), "independent": _normal(-0.1)})[2]
    assert verdict.outcome == "inconclusive" and "S_C" in verdict.reason


def test_verdicts_of_older_summaries_still_load() -> None:
    from sslmem.memorization.stats import Verdict

    old = {"passed": True, "alpha": 0.01, "checks": []}
    assert Verdict.model_validate(old).outcome == "passed"
    assert Verdict.model_validate({**old, "passed": False}).outcome == "failed"
    with pytest.raises(ValueError, match="contradicts"):
        Verdict.model_validate({**old, "outcome": "inconclusive"})
