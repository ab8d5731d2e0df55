"""The study's statistics against closed forms, scipy and simulation (issue 18)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sslmem.curation.statistics import (
    onion_shift,
    paired_less,
    paired_power,
    seeds_for_power,
    spearman_with_ci,
)
from sslmem.errors import ConfigError


def test_paired_less_matches_the_closed_form_for_two_degrees_of_freedom() -> None:
    # Differences -1, -2, -3: mean -2, sd 1, t = -2 * sqrt(3). For df = 2 the t CDF is
    # 1/2 + t / (2 sqrt(2 + t^2)), so p = 1/2 - sqrt(12) / (2 sqrt(14)).
    test = paired_less([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert test.n == 3
    assert test.mean_difference == pytest.approx(-2.0)
    assert test.statistic == pytest.approx(-2.0 * math.sqrt(3.0))
    assert test.p_value == pytest.approx(0.5 - math.sqrt(12.0) / (2.0 * math.sqrt(14.0)))
    # 95 % interval: mean ± t_{0.975, 2} * sd / sqrt(3), t_{0.975, 2} = 4.302652...
    assert test.ci95_low == pytest.approx(-2.0 - 4.302652729911275 / math.sqrt(3.0))
    assert test.ci95_high == pytest.approx(-2.0 + 4.302652729911275 / math.sqrt(3.0))


def test_paired_less_agrees_with_a_one_sample_test_of_the_differences() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=7), rng.normal(size=7)
    expected = stats.ttest_1samp(a - b, 0.0, alternative="less")
    test = paired_less(a, b)
    assert test.p_value == pytest.approx(float(expected.pvalue))
    assert paired_less(b, a).p_value == pytest.approx(1.0 - test.p_value)


def test_paired_less_with_one_pair_or_no_spread_has_no_p_value() -> None:
    assert math.isnan(paired_less([0.5], [0.6]).p_value)
    flat = paired_less([0.5, 0.6], [0.6, 0.7])
    assert math.isnan(flat.p_value) and flat.ci95_low == pytest.approx(-0.1)
    with pytest.raises(ConfigError, match="equal, non-empty"):
        paired_less([0.1, 0.2], [0.1])


def test_power_is_alpha_without_an_effect_and_agrees_with_simulation() -> None:
    assert paired_power(0.0, 1.0, 5, alpha=0.05) == pytest.approx(0.05)
    rng = np.random.default_rng(0)
    n, effect, sd, sims = 5, 1.0, 1.2, 20_000
    diffs = rng.normal(-effect, sd, size=(sims, n))
    t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(n))
    simulated = float((t < stats.t.ppf(0.05, n - 1)).mean())
    assert paired_power(effect, sd, n) == pytest.approx(simulated, abs=0.015)
    needed = seeds_for_power(effect, sd)
    assert needed is not None
    assert paired_power(effect, sd, needed) >= 0.8 > paired_power(effect, sd, needed - 1)
    assert seeds_for_power(1.0, 0.0) is None


def test_onion_shift_on_a_hand_made_pair_of_tables() -> None:
    shift = onion_shift(
        [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], [2, 3, 4, 9], [0.25, 0.5, 0.3, 1.0], threshold=0.35
    )
    # Common points 2, 3, 4: shifts +0.05, +0.2, -0.1.
    assert shift.n == 3
    assert shift.mean_shift == pytest.approx(0.05)
    assert shift.tail_before == pytest.approx(1 / 3)  # 0.4
    assert shift.tail_after == pytest.approx(1 / 3)  # 0.5
    assert shift.newly_exposed == 1  # point 3: 0.3 -> 0.5
    sd = float(np.std([0.05, 0.2, -0.1], ddof=1))
    assert shift.ci95_high - shift.ci95_low == pytest.approx(
        2 * 4.302652729911275 * sd / math.sqrt(3)
    )
    with pytest.raises(ConfigError, match="only 1 point"):
        onion_shift([1, 2], [0.0, 0.0], [2, 3], [0.0, 0.0], threshold=0.0)


def test_spearman_on_monotone_and_hand_ranked_data() -> None:
    perfect = spearman_with_ci([1.0, 2.0, 3.0, 4.0, 5.0], [10.0, 20.0, 25.0, 40.0, 100.0])
    assert perfect.rho == pytest.approx(1.0)
    # Ranks x: 1..5, y: 2,1,4,3,5 -> d^2 sum = 4 -> rho = 1 - 6*4/(5*24) = 0.8.
    hand = spearman_with_ci([1, 2, 3, 4, 5], [2.0, 1.0, 4.0, 3.0, 5.0])
    assert hand.rho == pytest.approx(0.8)
    assert hand.ci95_low <= hand.rho <= hand.ci95_high
    with pytest.raises(ConfigError, match="at least 3"):
        spearman_with_ci([1.0, 2.0], [1.0, 2.0])
