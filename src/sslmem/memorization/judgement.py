"""Judge a scored model version against the champion: memorisation *and* accuracy.

Pure statistics on two score tables (the per-point ``scores.parquet`` columns ``sample_index``,
``set``, ``sslmem_raw``) and their summaries; no I/O. The scoring service
(:func:`sslmem.workflow.judge.judge_registered_version`) and the local pipeline run
(:func:`sslmem.workflow.champion.judge_run_version`) both call :func:`judge`.

Why both memorisation and accuracy. Wang et al. (ICLR 2024, Sec. 5) show that memorisation in
SSL *drives* downstream generalisation: removing the most memorised points hurts the linear
probe more than removing random ones. More memorisation is therefore not a defect by itself --
it is a cost (privacy exposure of the training points) that may buy accuracy. The policy
follows from that:

* **regression** -- mean SSLMem on S_C rose significantly (two-sided test, ``p < alpha``) and
  its 95% CI lies at least ``min_delta`` above zero (lower bound ≥ ``min_delta``), *without* an
  accuracy gain of at least ``accuracy_gain`` (γ) on every measured downstream accuracy (kNN
  and linear probe); or the candidate breaks an absolute memorisation budget (mean SSLMem on
  S_C, or the fraction of S_C above ``threshold``) -- a budget is a hard limit, broken whatever
  the champion or the accuracy.
* **improvement** -- mean SSLMem on S_C fell significantly and its 95% CI lies at least
  ``min_delta`` below zero (upper bound ≤ −``min_delta``), and no measured accuracy fell by
  more than γ (less exposure for the same quality).
* **neutral** -- anything else, including more memorisation that bought an accuracy gain of
  at least γ, less memorisation that cost more than γ, changes that are not significant or
  whose CI reaches within ``min_delta`` of zero, and a fall whose accuracy cost cannot be
  judged (accuracies missing).
* **incomparable** -- no champion, or the two versions were scored under different protocols
  (:class:`ScoringProtocol`: dataset, augmentation, layer, K views, alignment mode, pair
  estimator, distance, view seed, precision, sslmem version and, on the same split, the
  reference checkpoints): raw SSLMem is only comparable on the same protocol (SSLMEM.md), so no
  Δ is computed and the differing fields are named. A broken budget still makes it a
  regression. The workflow (:mod:`sslmem.workflow.judge`) avoids this outcome by scoring the
  champion again under the candidate's protocol before judging.

The test of Δ mean SSLMem(S_C) is a **paired t-test** when both versions scored the same
candidate points (same dataset, identical S_C sample indices): each point's score under the
two encoders is strongly correlated (atypical points are memorised by both), so pairing removes
the between-point variance and detects shifts an unpaired test misses. Otherwise (another split)
the points are different samples and **Welch's t-test** is used. The change of the fraction
above ``threshold`` is tested with McNemar's exact test (paired) or a two-proportion z-test
(unpaired), each with a Wald 95% CI; it is reported, while the budget on it acts in the outcome.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats as scipy_stats

from sslmem.estimators import LEGACY_ESTIMATOR
from sslmem.memorization.score_table import CANDIDATE_SET, candidate_rows
from sslmem.memorization.scoring import ScoreSummary

__all__ = [
    "AccuracyComparison",
    "FractionComparison",
    "Judgement",
    "JudgementOutcome",
    "JudgementPolicy",
    "MeanComparison",
    "ScoredVersion",
    "ScoringProtocol",
    "compare_accuracy",
    "compare_fractions",
    "compare_means",
    "judge",
    "protocol_differences",
    "verdict_state",
]

#: The set whose scores are judged: the candidates S_C (only f trained on them).
JUDGED_SET = CANDIDATE_SET
_Z95 = 1.959963984540054  # standard-normal 97.5% quantile (two-sided 95% CI)


class JudgementOutcome(str, Enum):
    """The judgement of a candidate version against the champion (also a metrics label)."""

    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    NEUTRAL = "neutral"
    INCOMPARABLE = "incomparable"


class JudgementPolicy(BaseModel):
    """Thresholds of the judgement; service-wide defaults, overridable per registered model.

    Attributes:
        alpha: Significance level of the Δ mean SSLMem(S_C) test (two-sided).
        min_delta: Smallest |Δ mean SSLMem(S_C)| (raw units) that counts as a change.
        accuracy_gain: γ, in accuracy units (``0.01`` = one point): the gain in every measured
            accuracy that excuses more memorisation, and the largest loss an improvement may
            cost.
        threshold: A candidate point is "highly memorised" when its raw SSLMem exceeds this.
        budget_mean: Upper bound on mean SSLMem(S_C) (``None``: no budget).
        budget_fraction: Upper bound on the fraction of S_C above ``threshold`` (``None``: no
            budget).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(0.01, gt=0, lt=1)
    min_delta: float = Field(0.005, ge=0)
    accuracy_gain: float = Field(0.01, ge=0, le=1)
    threshold: float = 0.1
    budget_mean: float | None = None
    budget_fraction: float | None = Field(None, ge=0, le=1)


class ScoringProtocol(BaseModel):
    """What must be equal for two versions' raw SSLMem to be comparable.

    Attributes:
        dataset: The scored dataset (name, split, size, content hash) from the split manifest.
        manifest_sha256: The split manifest (equal manifests: the same S_C points).
        augmentation: The augmentation distribution ``Aug(x)`` as a JSON-like dict.
        layer: The representation layer.
        views: K (view pairs or, estimator ``ustat``, views in pair mode; views in anchor
            mode).
        mode: Alignment mode (``pair`` or ``anchor``).
        distance: Representation distance.
        estimator: Pair estimator (``pairs`` or ``ustat``): both estimate the same expectation,
            but with different noise at a given K, so scores are never mixed.
        seed: Seed of the views (equal seeds and points: the same views of every point).
        reference_sha256: The reference checkpoints' sha256, in scoring order. SSLMem is the
            reference's alignment loss minus the candidate's, so a retrained reference shifts
            every score.
        precision: ``fp32`` or ``bf16 autocast`` (bf16 noise is of the order of small Δs).
        sslmem_version: The sslmem release that scored (the estimator's code).
    """

    model_config = ConfigDict(frozen=True)

    dataset: dict[str, Any]
    manifest_sha256: str
    augmentation: dict[str, Any]
    layer: str
    views: int
    mode: str
    distance: str
    estimator: str = LEGACY_ESTIMATOR  # judgements written before it was recorded
    seed: int = 0
    reference_sha256: tuple[str, ...] = ()
    precision: str = "fp32"
    sslmem_version: str = ""

    @classmethod
    def from_summary(cls, summary: ScoreSummary) -> ScoringProtocol:
        """The protocol a :class:`~sslmem.memorization.scoring.ScoreSummary` was scored under."""
        return cls(
            dataset=dict(summary.dataset),
            manifest_sha256=summary.manifest_sha256,
            augmentation=summary.augmentation.model_dump(mode="json"),
            layer=summary.scoring.layer,
            views=summary.scoring.views,
            mode=summary.scoring.mode,
            distance=summary.scoring.distance,
            estimator=summary.scoring.estimator,
            seed=summary.scoring.seed,
            reference_sha256=tuple(ref.sha256 for ref in summary.references),
            precision=summary.precision,
            sslmem_version=summary.sslmem_version,
        )


#: Fields that must be equal (the manifest may differ: then the test is unpaired).
COMPARED_FIELDS = (
    "dataset",
    "augmentation",
    "layer",
    "views",
    "mode",
    "estimator",
    "distance",
    "seed",
    "precision",
    "sslmem_version",
)
#: Compared only on the same split: another split has its own reference (and other points).
SAME_SPLIT_FIELDS = ("reference_sha256",)


def verdict_state(summary: ScoreSummary) -> str:
    """The protocol verdict of a summary: ``passed``, ``failed`` or ``inconclusive``."""
    # Older summaries hold only ``passed``; Verdict's validator derives ``outcome`` from it.
    return summary.verdict.outcome


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class ScoredVersion:
    """One scored model version as the judgement needs it.

    Attributes:
        version: The model version (for messages), e.g. ``"7"``.
        protocol: How it was scored.
        verdict: Its protocol verdict (``passed``, ``failed`` or ``inconclusive``).
        sample_index: ``int64 [n]`` dataset indices of its scored S_C points (unique).
        sslmem: ``float64 [n]`` raw SSLMem of those points, aligned with ``sample_index``.
        knn_accuracy: Downstream kNN top-1 accuracy in ``[0, 1]`` (``None``: not measured).
        linear_probe_accuracy: Linear-probe top-1 accuracy in ``[0, 1]`` (``None``: not
            measured).
    """

    version: str
    protocol: ScoringProtocol
    verdict: str
    sample_index: npt.NDArray[np.int64]
    sslmem: npt.NDArray[np.float64]
    knn_accuracy: float | None = None
    linear_probe_accuracy: float | None = None

    @classmethod
    def from_scores(
        cls,
        version: str,
        columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]],
        summary: ScoreSummary,
        *,
        knn_accuracy: float | None = None,
        linear_probe_accuracy: float | None = None,
    ) -> ScoredVersion:
        """Build from the per-point score columns (``scores.parquet``) and the summary.

        Args:
            version: The model version.
            columns: At least ``sample_index``, ``set`` and ``sslmem_raw``, equal lengths (e.g.
                ``pyarrow.parquet.read_table(path).to_pydict()``); rows of other sets are
                ignored.
            summary: The version's score summary (protocol and verdict).
            knn_accuracy: Downstream kNN accuracy, if measured.
            linear_probe_accuracy: Linear-probe accuracy, if measured.

        Raises:
            ScoringError: Missing columns, unequal lengths, fewer than two S_C points, a
                non-finite score or a repeated sample index.
        """
        index, raw = candidate_rows(columns, f"version {version}")
        return cls(
            version=str(version),
            protocol=ScoringProtocol.from_summary(summary),
            verdict=verdict_state(summary),
            sample_index=index,
            sslmem=raw,
            knn_accuracy=knn_accuracy,
            linear_probe_accuracy=linear_probe_accuracy,
        )

    def fraction_above(self, threshold: float) -> float:
        """Fraction of S_C with raw SSLMem strictly above ``threshold``."""
        return float((self.sslmem > threshold).mean())


class MeanComparison(BaseModel):
    """Δ mean SSLMem(S_C) = candidate − champion, and its two-sided test."""

    model_config = ConfigDict(frozen=True)

    test: Literal["paired_t", "welch_t"]
    n_candidate: int
    n_champion: int
    candidate_mean: float
    champion_mean: float
    delta: float
    ci95_low: float
    ci95_high: float
    t_statistic: float | None  # None: zero variance (t undefined)
    df: float | None
    p_value: float


class FractionComparison(BaseModel):
    """Δ fraction of S_C above the threshold = candidate − champion."""

    model_config = ConfigDict(frozen=True)

    test: Literal["mcnemar_exact", "two_proportion_z"]
    threshold: float
    candidate_fraction: float
    champion_fraction: float
    delta: float
    ci95_low: float
    ci95_high: float
    p_value: float


class AccuracyComparison(BaseModel):
    """Downstream accuracies and their Δ (candidate − champion; ``None`` when unmeasured)."""

    model_config = ConfigDict(frozen=True)

    knn_candidate: float | None
    knn_champion: float | None
    knn_delta: float | None
    linear_probe_candidate: float | None
    linear_probe_champion: float | None
    linear_probe_delta: float | None
    worst_delta: float | None  # min of the measured deltas (None: none measured on both)


class Judgement(BaseModel):
    """The judgement of a candidate version against the champion (JSON-serialisable).

    Attributes:
        outcome: See :class:`JudgementOutcome`.
        regression: ``outcome == regression`` (the alerting indicator).
        candidate_version: The judged version.
        champion_version: The champion it was judged against (``None``: no champion).
        policy: The policy applied.
        candidate_verdict: The candidate's protocol verdict.
        champion_verdict: The champion's protocol verdict.
        candidate_mean: Mean raw SSLMem(S_C) of the candidate (budgets apply to it).
        candidate_fraction_above: Fraction of the candidate's S_C above ``policy.threshold``.
        differences: Protocol fields that differ (``incomparable``), as ``field: a vs b``.
        paired: Whether the same S_C points were scored (paired tests).
        mean: Δ mean SSLMem(S_C) and its test (``None`` when incomparable).
        fraction: Δ fraction above the threshold and its test (``None`` when incomparable).
        accuracy: Downstream accuracies (``None`` when incomparable).
        budget_exceeded: Whether an absolute budget is broken.
        reasons: Readable sentences explaining the outcome.
        champion_rescored: Whether the champion's scores are a re-scoring under the
            candidate's protocol (its published scores were under another one).
    """

    model_config = ConfigDict(frozen=True)

    outcome: JudgementOutcome
    regression: bool
    candidate_version: str
    champion_version: str | None
    policy: JudgementPolicy
    candidate_verdict: str
    champion_verdict: str | None
    candidate_mean: float
    candidate_fraction_above: float
    differences: list[str]
    paired: bool | None
    mean: MeanComparison | None
    fraction: FractionComparison | None
    accuracy: AccuracyComparison | None
    budget_exceeded: bool
    reasons: list[str]
    champion_rescored: bool = False


def protocol_differences(a: ScoringProtocol, b: ScoringProtocol) -> list[str]:
    """The protocol fields in which ``a`` and ``b`` differ, as ``field: a vs b`` (empty: none).

    The reference checkpoints are compared only when both scored the same split manifest: a
    version scored on another split is compared unpaired (Welch) and has that split's reference.
    """
    fields: tuple[str, ...] = COMPARED_FIELDS
    if a.manifest_sha256 == b.manifest_sha256:
        fields = (*COMPARED_FIELDS, *SAME_SPLIT_FIELDS)
    out = []
    for field in fields:
        va, vb = getattr(a, field), getattr(b, field)
        if va != vb:
            if isinstance(va, dict) and isinstance(vb, dict):
                keys = sorted(k for k in va.keys() | vb.keys() if va.get(k) != vb.get(k))
                detail = ", ".join(f"{k} {va.get(k)!r} vs {vb.get(k)!r}" for k in keys)
                out.append(f"{field}: {detail}")
            else:
                out.append(f"{field}: {va!r} vs {vb!r}")
    return out


def _same_points(a: ScoredVersion, b: ScoredVersion) -> bool:
    return a.sample_index.shape == b.sample_index.shape and bool(
        np.array_equal(a.sample_index, b.sample_index)
    )


def compare_means(candidate: ScoredVersion, champion: ScoredVersion) -> MeanComparison:
    """Δ mean SSLMem(S_C), paired t-test on the same points, else Welch's t-test (two-sided)."""
    x, y = candidate.sslmem, champion.sslmem
    delta = float(x.mean() - y.mean())
    paired = _same_points(candidate, champion)  # both sorted by sample index: row i, one point
    test: Literal["paired_t", "welch_t"] = "paired_t" if paired else "welch_t"
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero spread: handled below
        result = (
            scipy_stats.ttest_rel(x, y) if paired else scipy_stats.ttest_ind(x, y, equal_var=False)
        )
        t = float(result.statistic)
        finite = math.isfinite(t)
        ci = result.confidence_interval(0.95) if finite else None
    if finite and ci is not None:
        p, low, high = float(result.pvalue), float(ci.low), float(ci.high)
        df: float | None = float(result.df)
        t_stat: float | None = t
    else:  # every difference equal: a certain shift (or none)
        p, low, high, t_stat = (1.0 if delta == 0 else 0.0), delta, delta, None
        df = float(x.size - 1) if paired else None
    return MeanComparison(
        test=test,
        n_candidate=int(x.size),
        n_champion=int(y.size),
        candidate_mean=float(x.mean()),
        champion_mean=float(y.mean()),
        delta=delta,
        ci95_low=low,
        ci95_high=high,
        t_statistic=t_stat,
        df=df,
        p_value=min(max(p, 0.0), 1.0),
    )


def compare_fractions(
    candidate: ScoredVersion, champion: ScoredVersion, threshold: float
) -> FractionComparison:
    """Δ fraction of S_C above ``threshold``: McNemar exact (paired) or two-proportion z-test."""
    a, b = candidate.sslmem > threshold, champion.sslmem > threshold
    p1, p2 = float(a.mean()), float(b.mean())
    delta = p1 - p2
    if _same_points(candidate, champion):
        n = a.size
        up, down = int((a & ~b).sum()), int((~a & b).sum())  # discordant pairs
        p = float(scipy_stats.binomtest(up, up + down, 0.5).pvalue) if up + down else 1.0
        var = ((up + down) / n - delta**2) / n
        test: Literal["mcnemar_exact", "two_proportion_z"] = "mcnemar_exact"
    else:
        n1, n2 = a.size, b.size
        pooled = (a.sum() + b.sum()) / (n1 + n2)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        p = float(2 * scipy_stats.norm.sf(abs(delta) / se0)) if se0 > 0 else 1.0
        var = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
        test = "two_proportion_z"
    half = _Z95 * math.sqrt(max(var, 0.0))
    return FractionComparison(
        test=test,
        threshold=threshold,
        candidate_fraction=p1,
        champion_fraction=p2,
        delta=delta,
        ci95_low=delta - half,
        ci95_high=delta + half,
        p_value=min(p, 1.0),
    )


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def compare_accuracy(candidate: ScoredVersion, champion: ScoredVersion) -> AccuracyComparison:
    """Δ kNN and Δ linear-probe accuracy; ``worst_delta`` is the smaller measured one."""
    knn = _delta(candidate.knn_accuracy, champion.knn_accuracy)
    probe = _delta(candidate.linear_probe_accuracy, champion.linear_probe_accuracy)
    measured = [d for d in (knn, probe) if d is not None]
    return AccuracyComparison(
        knn_candidate=candidate.knn_accuracy,
        knn_champion=champion.knn_accuracy,
        knn_delta=knn,
        linear_probe_candidate=candidate.linear_probe_accuracy,
        linear_probe_champion=champion.linear_probe_accuracy,
        linear_probe_delta=probe,
        worst_delta=min(measured) if measured else None,
    )


def _budget_reasons(candidate: ScoredVersion, policy: JudgementPolicy) -> list[str]:
    reasons = []
    mean = float(candidate.sslmem.mean())
    if policy.budget_mean is not None and mean > policy.budget_mean:
        reasons.append(
            f"budget exceeded: mean SSLMem(S_C) {mean:+.4f} > budget_mean {policy.budget_mean:g}"
        )
    frac = candidate.fraction_above(policy.threshold)
    if policy.budget_fraction is not None and frac > policy.budget_fraction:
        reasons.append(
            f"budget exceeded: fraction of S_C above {policy.threshold:g} is {frac:.4f} > "
            f"budget_fraction {policy.budget_fraction:g}"
        )
    return reasons


def judge(
    candidate: ScoredVersion,
    champion: ScoredVersion | None,
    policy: JudgementPolicy,
    *,
    no_champion: str = "no champion version to compare with",
) -> Judgement:
    """Judge ``candidate`` against ``champion`` under ``policy`` (see the module docstring).

    Args:
        candidate: The newly scored version.
        champion: The version holding the champion alias (``None``: there is none, or the
            candidate is the champion itself).
        policy: The thresholds (:func:`sslmem.tracking.policy.policy_from_tags` for a model's own).
        no_champion: The reason given when ``champion`` is ``None``.

    Returns:
        The judgement, with every number, the tests used and the reasons.
    """
    budget = _budget_reasons(candidate, policy)
    base: dict[str, Any] = {
        "candidate_version": candidate.version,
        "champion_version": champion.version if champion else None,
        "policy": policy,
        "candidate_verdict": candidate.verdict,
        "champion_verdict": champion.verdict if champion else None,
        "candidate_mean": float(candidate.sslmem.mean()),
        "candidate_fraction_above": candidate.fraction_above(policy.threshold),
        "budget_exceeded": bool(budget),
    }

    def result(outcome: JudgementOutcome, reasons: list[str], **fields: Any) -> Judgement:
        defaults: dict[str, Any] = {
            "differences": [],
            "paired": None,
            "mean": None,
            "fraction": None,
        }
        fields = defaults | {"accuracy": None} | fields
        return Judgement(
            outcome=outcome,
            regression=outcome is JudgementOutcome.REGRESSION,
            reasons=reasons,
            **base,
            **fields,
        )

    breach = JudgementOutcome.REGRESSION if budget else None
    if champion is None:
        return result(breach or JudgementOutcome.INCOMPARABLE, [*budget, no_champion])
    differences = protocol_differences(candidate.protocol, champion.protocol)
    if differences:
        note = (
            f"scored under a different protocol than champion version {champion.version} "
            f"(raw SSLMem is comparable only on the same protocol): {'; '.join(differences)}"
        )
        return result(
            breach or JudgementOutcome.INCOMPARABLE, [*budget, note], differences=differences
        )

    mean = compare_means(candidate, champion)
    fraction = compare_fractions(candidate, champion, policy.threshold)
    accuracy = compare_accuracy(candidate, champion)
    paired = mean.test == "paired_t"
    how = (
        "paired t-test on the same S_C points"
        if paired
        else "Welch t-test (the versions scored different S_C points)"
    )
    change = (
        f"Δ mean SSLMem(S_C) = {mean.delta:+.4f} (95% CI [{mean.ci95_low:+.4f}, "
        f"{mean.ci95_high:+.4f}], {how}, p = {mean.p_value:.2e})"
    )
    significant = mean.p_value < policy.alpha
    # min_delta bounds the CI, not the point estimate: a change counts only when the whole
    # 95% CI lies at least min_delta beyond zero, on either side.
    up = significant and mean.ci95_low >= policy.min_delta
    down = significant and mean.ci95_high <= -policy.min_delta
    gamma, worst = policy.accuracy_gain, accuracy.worst_delta
    acc = "accuracy not measured on both" if worst is None else f"worst Δ accuracy {worst:+.4f}"

    if budget:
        outcome, reasons = JudgementOutcome.REGRESSION, [*budget, change]
    elif up and (worst is None or worst < gamma):
        outcome = JudgementOutcome.REGRESSION
        reasons = [f"memorisation up: {change}, without an accuracy gain of ≥ {gamma:g} ({acc})"]
    elif up:
        outcome = JudgementOutcome.NEUTRAL
        reasons = [f"memorisation up: {change}, but every accuracy gained ≥ {gamma:g} ({acc})"]
    elif down and worst is not None and worst >= -gamma:
        outcome = JudgementOutcome.IMPROVEMENT
        reasons = [f"memorisation down: {change}, no accuracy lost beyond {gamma:g} ({acc})"]
    elif down:
        outcome = JudgementOutcome.NEUTRAL
        why = "cannot tell the accuracy cost" if worst is None else f"an accuracy cost > {gamma:g}"
        reasons = [f"memorisation down: {change}, but {why} ({acc})"]
    else:
        outcome = JudgementOutcome.NEUTRAL
        reasons = [
            f"no memorisation change beyond the policy (p < {policy.alpha:g} and the 95% CI "
            f"at least {policy.min_delta:g} beyond 0): {change}"
        ]
    reasons.append(
        f"Δ fraction of S_C above {fraction.threshold:g} = {fraction.delta:+.4f} "
        f"({fraction.test}, p = {fraction.p_value:.2e})"
    )
    return result(outcome, reasons, paired=paired, mean=mean, fraction=fraction, accuracy=accuracy)
