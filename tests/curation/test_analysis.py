"""The study's analysis on hand-made retrain results (issue 18)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from sslmem.curation.analysis import analyse
from sslmem.curation.plan import StudyPlan

PLAN = StudyPlan(fractions=(0.2,), strategies=("top", "random"), seeds=(0, 1), random_draws=2)


def _row(name: str, strategy: str, k: int, draw: int, seed: int, knn: float) -> dict[str, Any]:
    return {
        "name": name,
        "strategy": strategy,
        "k": k,
        "fraction": 0.2 if k else 0.0,
        "draw": draw,
        "seed": seed,
        "knn_accuracy": knn,
        "linear_probe_accuracy": knn + 0.05,
    }


ROWS = [
    _row("full-s0", "full", 0, 0, 0, 0.80),
    _row("full-s1", "full", 0, 0, 1, 0.82),
    _row("top-k1-s0", "top", 1, 0, 0, 0.76),
    _row("top-k1-s1", "top", 1, 0, 1, 0.76),
    _row("random-k1-d0-s0", "random", 1, 0, 0, 0.77),
    _row("random-k1-d1-s0", "random", 1, 1, 0, 0.79),  # seed 0 random mean 0.78
    _row("random-k1-d0-s1", "random", 1, 0, 1, 0.81),
    _row("random-k1-d1-s1", "random", 1, 1, 1, 0.79),  # seed 1 random mean 0.80
]
INDEX = np.arange(5, dtype=np.int64)
FULL_SCORES = np.array([0.0, 0.1, 0.2, 0.3, 0.9])


def _points(removed: int, shift: float) -> tuple[Any, Any, Any]:
    scores = FULL_SCORES + shift
    return INDEX, scores, np.equal(INDEX, removed)


POINTS = {
    "full-s0": (INDEX, FULL_SCORES, np.zeros(5, dtype=bool)),
    "full-s1": (INDEX, FULL_SCORES, np.zeros(5, dtype=bool)),
    "top-k1-s0": _points(4, 0.10),
    "top-k1-s1": _points(4, 0.06),
    "random-k1-d0-s0": _points(0, 0.02),
    "random-k1-d1-s0": _points(1, 0.00),
    "random-k1-d0-s1": _points(2, 0.01),
    "random-k1-d1-s1": _points(3, 0.01),
}


def test_arms_average_draws_within_a_seed_then_over_seeds() -> None:
    analysis = analyse(ROWS, POINTS, PLAN)
    arms = {(a.strategy, a.metric): a for a in analysis.arms}
    random_knn = arms[("random", "knn_accuracy")]
    assert random_knn.mean == pytest.approx(0.79)  # seed means 0.78 and 0.80
    assert (random_knn.seeds, random_knn.retrains) == (2, 4)
    # t interval over the two seed means: 0.79 ± t_{0.975,1} * sd / sqrt(2), sd = 0.01414.
    half = 12.706204736174707 * math.sqrt(2) * 0.01 / math.sqrt(2)
    assert random_knn.ci95_high - random_knn.ci95_low == pytest.approx(2 * half)


def test_top_versus_random_is_paired_by_seed() -> None:
    analysis = analyse(ROWS, POINTS, PLAN)
    drop = next(d for d in analysis.drops if d.metric == "knn_accuracy" and d.control == "random")
    # Per seed: top - random = 0.76 - 0.78 = -0.02 and 0.76 - 0.80 = -0.04: mean -0.03,
    # sd 0.0141, t = -3; with one degree of freedom the t CDF is 1/2 + arctan(t) / pi.
    assert drop.test.mean_difference == pytest.approx(-0.03)
    assert drop.test.statistic == pytest.approx(-3.0)
    assert drop.test.p_value == pytest.approx(0.5 + math.atan(-3.0) / math.pi)
    assert 0.0 < drop.power_one_point < 1.0
    assert drop.seeds_for_80_power is not None and drop.seeds_for_80_power > 2


def test_onion_shift_is_measured_on_the_remaining_points_against_the_same_seed() -> None:
    analysis = analyse(ROWS, POINTS, PLAN)
    top = next(o for o in analysis.onion if o.strategy == "top")
    assert top.mean_shift == pytest.approx((0.10 + 0.06) / 2)
    assert top.removed_before == pytest.approx(0.9)  # point 4 under the full encoder
    assert top.removed_after == pytest.approx(0.9 + 0.08)
    # The 0.9 quantile of the full scores is 0.66: no remaining point is above it before; after
    # a shift of 0.10 none crosses it either.
    assert top.tail_before == 0.0 and top.newly_exposed == 0.0
    test = analysis.onion_tests[0].test
    # random shifts per seed 0.01 and 0.01; top 0.10 and 0.06: random - top = -0.09, -0.05.
    assert test.mean_difference == pytest.approx(-0.07)
