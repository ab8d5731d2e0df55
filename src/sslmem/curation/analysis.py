"""The analysis of a curation study's retrains: accuracy against k, drop tests, onion effect.

Pure functions of the collected rows (:class:`~.study.RetrainResult`) and per-point scores, so
the report can be recomputed from a study directory without training anything.

* Accuracy per strategy and k: the mean over seeds (random draws averaged within a seed first)
  with a 95 % t interval over seeds.
* "Top-k hurts more than random" (Wang et al., ICLR 2024, Sec. 5): one-sided paired t-test over
  seeds of top-k accuracy against the same seed's mean random-k accuracy, with the power to
  detect a one-point drop at the observed spread and the seeds that would need.
* Onion effect (Carlini et al., NeurIPS 2022): for each removal, the SSLMem shift of the
  candidates that remain against the full-data encoder of the same seed, and whether top-k
  removal raises it more than random removal (paired over seeds).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sslmem.curation.plan import FULL, StudyPlan
from sslmem.curation.statistics import (
    OnionShift,
    PairedTest,
    onion_shift,
    paired_less,
    paired_power,
    seeds_for_power,
    t_interval,
)
from sslmem.errors import ConfigError

METRICS = ("knn_accuracy", "linear_probe_accuracy")
#: The drop the power statement is about: one accuracy point.
POWER_EFFECT = 0.01
Points = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]


@dataclass(frozen=True)
class ArmSummary:
    """One strategy at one removal size, one metric, over seeds.

    Attributes:
        strategy: ``full``, ``top``, ``bottom`` or ``random``.
        k: Candidates removed.
        fraction: Removal fraction.
        metric: ``knn_accuracy`` or ``linear_probe_accuracy``.
        seeds: Seeds measured.
        retrains: Retrains (seeds x draws).
        mean: Mean of the per-seed values (draws averaged within a seed).
        ci95_low: Lower end of the 95 % t interval over seeds (NaN for one seed).
        ci95_high: Its upper end.

    """

    strategy: str
    k: int
    fraction: float
    metric: str
    seeds: int
    retrains: int
    mean: float
    ci95_low: float
    ci95_high: float


@dataclass(frozen=True)
class DropComparison:
    """Does removing the top-k lower accuracy more than the control removal of the same k?

    Attributes:
        k: Candidates removed.
        fraction: Removal fraction.
        metric: The accuracy compared.
        control: ``random`` or ``bottom``.
        test: One-sided paired test of ``top < control`` over seeds.
        power_one_point: Power of that test to detect a one-point drop at the observed spread.
        seeds_for_80_power: Seeds that would give 80 % power for a one-point drop (``None``:
            the spread is zero or unknown).

    """

    k: int
    fraction: float
    metric: str
    control: str
    test: PairedTest
    power_one_point: float
    seeds_for_80_power: int | None


@dataclass(frozen=True)
class OnionSummary:
    """The SSLMem shift of the remaining candidates after one kind of removal.

    Attributes:
        strategy: ``top``, ``bottom`` or ``random``.
        k: Candidates removed.
        fraction: Removal fraction.
        retrains: Retrains (seeds x draws).
        mean_shift: Mean over retrains of the remaining candidates' mean shift.
        tail_before: Mean fraction of remaining candidates above the exposure threshold under
            the full-data encoder.
        tail_after: The same under the retrained encoder.
        newly_exposed: Mean count of remaining candidates that cross the threshold.
        removed_before: Mean SSLMem of the removed candidates under the full-data encoder.
        removed_after: Their mean SSLMem under the retrained encoder (no longer trained on).
        per_retrain: Each retrain's shift.

    """

    strategy: str
    k: int
    fraction: float
    retrains: int
    mean_shift: float
    tail_before: float
    tail_after: float
    newly_exposed: float
    removed_before: float
    removed_after: float
    per_retrain: tuple[OnionShift, ...]


@dataclass(frozen=True)
class OnionComparison:
    """Does removing the top-k raise the remaining candidates' SSLMem more than random?

    Attributes:
        k: Candidates removed.
        fraction: Removal fraction.
        test: One-sided paired test over seeds of ``random shift < top shift``.

    """

    k: int
    fraction: float
    test: PairedTest


@dataclass(frozen=True)
class StudyAnalysis:
    """Everything the study's report states."""

    arms: tuple[ArmSummary, ...]
    drops: tuple[DropComparison, ...]
    onion: tuple[OnionSummary, ...]
    onion_tests: tuple[OnionComparison, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN stays NaN; the writer maps it to null)."""
        return asdict(self)


def _seed_means(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[int, float]:
    by_seed: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        by_seed[int(row["seed"])].append(float(row[metric]))
    return {seed: float(np.mean(values)) for seed, values in sorted(by_seed.items())}


def analyse(
    rows: Sequence[Mapping[str, Any]], points: Mapping[str, Points], plan: StudyPlan
) -> StudyAnalysis:
    """Summaries, drop tests and onion-effect shifts of a study's retrains.

    Args:
        rows: One mapping per retrain with the fields of :class:`~.study.RetrainResult`.
        points: Per retrain name, its scores of all the parent's candidates:
            ``(sample_index int64 [n], sslmem float64 [n], removed bool [n])``.
        plan: The study's plan (exposure quantile).

    Raises:
        ConfigError: A seed lacks its full-data control.

    """
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(str(row["strategy"]), int(row["k"]))].append(row)
    full_rows = groups.get((FULL, 0), [])
    full_by_seed = {int(r["seed"]): r for r in full_rows}
    arms = []
    for (strategy, k), members in groups.items():
        for metric in METRICS:
            seed_means = _seed_means(members, metric)
            mean, low, high = t_interval(list(seed_means.values()))
            arms.append(
                ArmSummary(
                    strategy=strategy,
                    k=k,
                    fraction=float(members[0]["fraction"]),
                    metric=metric,
                    seeds=len(seed_means),
                    retrains=len(members),
                    mean=mean,
                    ci95_low=low,
                    ci95_high=high,
                )
            )
    drops = []
    sizes = sorted({k for (strategy, k) in groups if strategy != FULL})
    for k in sizes:
        top = groups.get(("top", k))
        if not top:
            continue
        fraction = float(top[0]["fraction"])
        for control in ("random", "bottom"):
            others = groups.get((control, k))
            if not others:
                continue
            for metric in METRICS:
                treated = _seed_means(top, metric)
                controls = _seed_means(others, metric)
                seeds = sorted(set(treated) & set(controls))
                test = paired_less([treated[s] for s in seeds], [controls[s] for s in seeds])
                drops.append(
                    DropComparison(
                        k=k,
                        fraction=fraction,
                        metric=metric,
                        control=control,
                        test=test,
                        power_one_point=paired_power(POWER_EFFECT, test.sd_difference, test.n),
                        seeds_for_80_power=seeds_for_power(POWER_EFFECT, test.sd_difference),
                    )
                )
    onion = []
    shift_by: dict[tuple[str, int], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (strategy, k), members in groups.items():
        if strategy == FULL:
            continue
        shifts, removed_before, removed_after = [], [], []
        for row in members:
            seed = int(row["seed"])
            if seed not in full_by_seed:
                raise ConfigError(
                    f"retrain {row['name']} has no full-data control for seed {seed}",
                    "run the study's full-data retrain of that seed",
                )
            f_index, f_score, _ = points[str(full_by_seed[seed]["name"])]
            v_index, v_score, v_removed = points[str(row["name"])]
            threshold = float(np.quantile(f_score, plan.exposure_quantile))
            shift = onion_shift(
                f_index, f_score, v_index[~v_removed], v_score[~v_removed], threshold=threshold
            )
            shifts.append(shift)
            shift_by[(strategy, k)][seed].append(shift.mean_shift)
            removed = v_index[v_removed]
            removed_before.append(float(f_score[np.isin(f_index, removed)].mean()))
            removed_after.append(float(v_score[v_removed].mean()))
        onion.append(
            OnionSummary(
                strategy=strategy,
                k=k,
                fraction=float(members[0]["fraction"]),
                retrains=len(shifts),
                mean_shift=float(np.mean([s.mean_shift for s in shifts])),
                tail_before=float(np.mean([s.tail_before for s in shifts])),
                tail_after=float(np.mean([s.tail_after for s in shifts])),
                newly_exposed=float(np.mean([s.newly_exposed for s in shifts])),
                removed_before=float(np.mean(removed_before)),
                removed_after=float(np.mean(removed_after)),
                per_retrain=tuple(shifts),
            )
        )
    onion_tests = []
    for k in sizes:
        top_shift, random_shift = shift_by.get(("top", k)), shift_by.get(("random", k))
        if not top_shift or not random_shift:
            continue
        seeds = sorted(set(top_shift) & set(random_shift))
        onion_tests.append(
            OnionComparison(
                k=k,
                fraction=float(groups[("top", k)][0]["fraction"]),
                test=paired_less(
                    [float(np.mean(random_shift[s])) for s in seeds],
                    [float(np.mean(top_shift[s])) for s in seeds],
                ),
            )
        )
    return StudyAnalysis(tuple(arms), tuple(drops), tuple(onion), tuple(onion_tests))
