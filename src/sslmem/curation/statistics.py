"""The statistics of a curation study: drop tests, onion-effect shifts, power, correlation.

Wang et al. (ICLR 2024, Sec. 5) claim that removing the most memorised candidates lowers
downstream accuracy more than removing random ones. Here that is a one-sided test over training
seeds: for each seed s the accuracy after removing the top-k is paired with the mean accuracy
over the random draws of the same seed, so seed-to-seed variation cancels. The onion effect
(Carlini et al., NeurIPS 2022) is measured on the candidates that remain after a removal: their
SSLMem under the retrained encoder against their SSLMem under the full-data encoder of the same
seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from sslmem.errors import ConfigError


def t_interval(values: npt.ArrayLike) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` ``[n]`` and its two-sided 95 % t interval.

    The interval is NaN for fewer than two values.
    """
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    mean = float(a.mean())
    if a.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, a.size - 1)) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class PairedTest:
    """A one-sided paired t-test of ``treatment < control`` over seeds.

    Attributes:
        n: Seeds (pairs).
        mean_difference: Mean of ``treatment - control`` (negative: treatment is lower).
        ci95_low: Lower end of the two-sided 95 % t interval of the mean difference.
        ci95_high: Its upper end.
        statistic: The t statistic (NaN with fewer than two pairs or no spread).
        p_value: One-sided p of ``mean_difference < 0`` (NaN as above).
        sd_difference: Sample standard deviation of the differences (NaN for one pair).

    """

    n: int
    mean_difference: float
    ci95_low: float
    ci95_high: float
    statistic: float
    p_value: float
    sd_difference: float


def paired_less(treatment: npt.ArrayLike, control: npt.ArrayLike) -> PairedTest:
    """Test whether ``treatment`` is lower than ``control``, paired element by element.

    Args:
        treatment: ``[n]`` one value per seed (e.g. accuracy after removing the top-k).
        control: ``[n]`` the paired control (e.g. mean accuracy over random draws, same seed).

    Returns:
        The one-sided test (``scipy.stats.ttest_rel(..., alternative="less")``) and the
        two-sided 95 % interval of the mean difference.

    Raises:
        ConfigError: The inputs differ in length, are empty or not finite.

    """
    a = np.asarray(treatment, dtype=np.float64).reshape(-1)
    b = np.asarray(control, dtype=np.float64).reshape(-1)
    if a.size != b.size or a.size == 0:
        raise ConfigError(
            f"paired test needs equal, non-empty samples (got {a.size} and {b.size})",
            "pair each seed's treatment with its control",
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError("paired test got a non-finite value", "check the accuracies")
    diff = a - b
    mean = float(diff.mean())
    if diff.size < 2:
        nan = float("nan")
        return PairedTest(1, mean, nan, nan, nan, nan, nan)
    sd = float(diff.std(ddof=1))
    if sd == 0.0:  # t undefined; the interval is the point
        return PairedTest(diff.size, mean, mean, mean, float("nan"), float("nan"), 0.0)
    result = stats.ttest_rel(a, b, alternative="less")
    _, low, high = t_interval(diff)
    return PairedTest(
        n=int(diff.size),
        mean_difference=mean,
        ci95_low=low,
        ci95_high=high,
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        sd_difference=sd,
    )


def paired_power(effect: float, sd: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of the one-sided paired t-test at level ``alpha`` to detect a drop of ``effect``.

    Args:
        effect: The true mean drop (positive, in the units of ``sd``).
        sd: Standard deviation of the per-seed differences.
        n: Seeds.
        alpha: One-sided level.

    Returns:
        ``P(reject)`` under a noncentral t with ``n - 1`` degrees of freedom and noncentrality
        ``effect / sd * sqrt(n)``; NaN for ``n < 2`` or ``sd <= 0``.

    """
    if n < 2 or not sd > 0.0:
        return float("nan")
    df = n - 1
    critical = float(stats.t.ppf(1.0 - alpha, df))
    noncentrality = effect / sd * math.sqrt(n)
    return float(stats.nct.sf(critical, df, noncentrality))


def seeds_for_power(
    effect: float, sd: float, *, power: float = 0.8, alpha: float = 0.05, most: int = 10_000
) -> int | None:
    """The fewest seeds with :func:`paired_power` >= ``power`` (``None``: more than ``most``)."""
    if not sd > 0.0 or not effect > 0.0:
        return None
    for n in range(2, most + 1):
        if paired_power(effect, sd, n, alpha=alpha) >= power:
            return n
    return None


@dataclass(frozen=True)
class OnionShift:
    """How the SSLMem of the candidates that remain shifts after a removal.

    Attributes:
        n: Remaining candidates compared (scored under both encoders).
        mean_shift: Mean of ``after - before``.
        ci95_low: Lower end of the 95 % t interval of the mean shift (over points).
        ci95_high: Its upper end.
        threshold: The exposure threshold (SSLMem above it counts as exposed).
        tail_before: Fraction of the points above the threshold before the removal.
        tail_after: Fraction above it after.
        newly_exposed: Points at or below the threshold before and above it after.

    """

    n: int
    mean_shift: float
    ci95_low: float
    ci95_high: float
    threshold: float
    tail_before: float
    tail_after: float
    newly_exposed: int


def onion_shift(
    before_index: npt.ArrayLike,
    before: npt.ArrayLike,
    after_index: npt.ArrayLike,
    after: npt.ArrayLike,
    *,
    threshold: float,
) -> OnionShift:
    """The shift of SSLMem on the points scored both before and after a removal.

    Args:
        before_index: ``[n]`` dataset indices scored under the full-data encoder.
        before: ``[n]`` their SSLMem.
        after_index: ``[m]`` dataset indices scored under the retrained encoder (the
            remaining candidates).
        after: ``[m]`` their SSLMem.
        threshold: Exposure threshold (e.g. the 90th percentile of ``before``).

    Raises:
        ConfigError: Lengths differ, or fewer than two points are common to both.

    """
    bi = np.asarray(before_index, dtype=np.int64)
    ai = np.asarray(after_index, dtype=np.int64)
    bv = np.asarray(before, dtype=np.float64)
    av = np.asarray(after, dtype=np.float64)
    if bi.shape != bv.shape or ai.shape != av.shape:
        raise ConfigError("indices and scores differ in length", "pass aligned arrays")
    common, b_at, a_at = np.intersect1d(bi, ai, assume_unique=True, return_indices=True)
    if common.size < 2:
        raise ConfigError(
            f"only {common.size} point(s) were scored both before and after the removal",
            "score the remaining candidates under both encoders",
        )
    b, a = bv[b_at], av[a_at]
    shift = a - b
    mean, low, high = t_interval(shift)
    return OnionShift(
        n=int(common.size),
        mean_shift=mean,
        ci95_low=low,
        ci95_high=high,
        threshold=float(threshold),
        tail_before=float((b > threshold).mean()),
        tail_after=float((a > threshold).mean()),
        newly_exposed=int(((b <= threshold) & (a > threshold)).sum()),
    )


@dataclass(frozen=True)
class Correlation:
    """Spearman's rank correlation with a bootstrap interval.

    Attributes:
        n: Points.
        rho: Spearman's rho.
        p_value: Two-sided p of rho = 0 (``scipy.stats.spearmanr``).
        ci95_low: Lower end of the 95 % percentile-bootstrap interval (points resampled in
            pairs).
        ci95_high: Its upper end.
        resamples: Bootstrap resamples.

    """

    n: int
    rho: float
    p_value: float
    ci95_low: float
    ci95_high: float
    resamples: int


def spearman_with_ci(
    x: npt.ArrayLike, y: npt.ArrayLike, *, resamples: int = 2000, seed: int = 0
) -> Correlation:
    """Spearman's rho of ``x`` and ``y`` (``[n]`` each) with a paired bootstrap 95 % interval.

    Raises:
        ConfigError: Lengths differ, fewer than three points, or a constant sample.

    """
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.size != b.size or a.size < 3:
        raise ConfigError(
            f"a correlation needs two equal samples of at least 3 points (got {a.size}, {b.size})",
            "score more candidates",
        )
    if np.ptp(a) == 0.0 or np.ptp(b) == 0.0:
        raise ConfigError("a correlation with a constant sample is undefined", "check the scores")
    result = stats.spearmanr(a, b)
    # Paired percentile bootstrap; a resample whose x or y is constant has no rank correlation
    # and is drawn again (it happens only for tiny n).
    rng = np.random.default_rng(seed)
    values: list[float] = []
    while len(values) < resamples:
        pick = rng.integers(0, a.size, size=a.size)
        x_star, y_star = a[pick], b[pick]
        if np.ptp(x_star) == 0.0 or np.ptp(y_star) == 0.0:
            continue
        values.append(float(stats.spearmanr(x_star, y_star).statistic))
    low, high = np.quantile(values, [0.025, 0.975])
    return Correlation(
        n=int(a.size),
        rho=float(result.statistic),
        p_value=float(result.pvalue),
        ci95_low=float(low),
        ci95_high=float(high),
        resamples=resamples,
    )
