"""Statistics of SSLMem per scored set and the sanity verdict of the SSLMem protocol.

Wang et al. (ICLR 2024) check every run with the same signs: candidates S_C clearly positive,
the shared set S_S and extra set S_E about zero, the independent set S_I (seen only by the
reference) negative; differences are tested with Welch t-tests. Because independently seeded f
and g differ by an offset, S_C is judged against the control sets, not only against zero -- so a
run without a control that could refute it is ``inconclusive``, never ``passed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator
from scipy import stats as scipy_stats

from sslmem.errors import ScoringError

SET_NAMES = ("candidate", "independent", "extra", "shared")
CONTROL_SETS = ("independent", "extra", "shared")
DEFAULT_THRESHOLDS = (0.0, 0.05, 0.1, 0.2)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

Outcome = Literal["passed", "failed", "inconclusive"]
OUTCOMES: tuple[Outcome, ...] = ("passed", "failed", "inconclusive")


class SetSummary(BaseModel):
    """Summary of SSLMem over one scored set."""

    model_config = ConfigDict(frozen=True)

    n: int
    mean: float
    std: float
    sem: float
    ci95_low: float
    ci95_high: float
    quantiles: dict[str, float]
    fraction_above: dict[str, float]
    p_mean_nonzero: float  # two-sided one-sample t-test of mean == 0


class WelchTest(BaseModel):
    """Welch t-test of S_C against a control set (one-sided: S_C greater)."""

    model_config = ConfigDict(frozen=True)

    control: str
    mean_difference: float
    t_statistic: float
    p_value: float


class Check(BaseModel):
    """One expected sign of the protocol."""

    model_config = ConfigDict(frozen=True)

    name: str
    passed: bool
    required: bool
    detail: str


class Verdict(BaseModel):
    """Whether the run shows the signature of memorisation the protocol expects.

    Attributes:
        outcome: ``passed`` (every required check holds against at least one control),
            ``failed`` (a required check fails against a control that was scored) or
            ``inconclusive`` (no control set that could refute S_C was scored, or S_C itself
            was not scored).
        passed: ``outcome == "passed"`` (kept for readers of older summaries).
        alpha: Significance level of the Welch tests.
        checks: Every check, required or informative.
        reason: Why the outcome is ``inconclusive`` (empty otherwise).
    """

    model_config = ConfigDict(frozen=True)

    outcome: Outcome
    passed: bool
    alpha: float
    checks: list[Check]
    reason: str = ""

    @model_validator(mode="before")
    @classmethod
    def _outcome_of_older_summaries(cls, data: Any) -> Any:
        # summary.json files written before the three-state verdict hold only `passed`.
        if isinstance(data, dict) and "outcome" not in data and "passed" in data:
            return {**data, "outcome": "passed" if data["passed"] else "failed"}
        return data

    @model_validator(mode="after")
    def _passed_means_outcome_passed(self) -> Verdict:
        if self.passed != (self.outcome == "passed"):
            raise ValueError(f"passed={self.passed} contradicts outcome {self.outcome!r}")
        return self


def summarize_set(
    scores: np.ndarray[Any, Any], thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> SetSummary:
    """Mean, std, 95% CI, quantiles and tail fractions of one set's scores ``[n]``."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ScoringError("cannot summarise an empty score set", "score at least one point")
    n = values.size
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    sem = std / math.sqrt(n) if n > 1 else float("nan")
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * sem if n > 1 else float("nan")
    if n > 1 and std > 0:
        p_zero = float(scipy_stats.ttest_1samp(values, 0.0).pvalue)
    else:
        p_zero = float("nan")
    return SetSummary(
        n=n,
        mean=mean,
        std=std,
        sem=sem,
        ci95_low=mean - half,
        ci95_high=mean + half,
        quantiles={f"q{round(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES},
        fraction_above={f"{t:g}": float((values > t).mean()) for t in thresholds},
        p_mean_nonzero=p_zero,
    )


def welch_test(
    candidate: np.ndarray[Any, Any], control: np.ndarray[Any, Any], control_name: str
) -> WelchTest:
    """One-sided Welch t-test that S_C's mean exceeds a control set's mean."""
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(control, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ScoringError(
            f"a Welch t-test needs >= 2 points per set (candidate {a.size}, {control_name} "
            f"{b.size})",
            "score more points",
        )
    result = scipy_stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    return WelchTest(
        control=control_name,
        mean_difference=float(a.mean() - b.mean()),
        t_statistic=float(result.statistic),
        p_value=float(result.pvalue),
    )


def protocol_verdict(
    summaries: Mapping[str, SetSummary],
    tests: Mapping[str, WelchTest],
    *,
    alpha: float = 0.01,
) -> Verdict:
    """Judge the protocol's expected signs.

    Required: mean S_C > 0, and S_C significantly above every scored control (Welch,
    one-sided, p < alpha). Informative: S_I < 0; |mean S_E| and |mean S_S| below half of
    mean S_C ("about zero" relative to the effect, since f and g differ by a seed offset).

    A verdict needs a control: S_C > 0 alone cannot tell memorisation from the offset between
    f and g, so without a Welch test with a finite p-value (a control with some spread) the
    outcome is ``inconclusive``, whatever S_C's sign. Without S_C there is nothing to judge.
    """
    if "candidate" not in summaries:
        return Verdict(
            outcome="inconclusive",
            passed=False,
            alpha=alpha,
            checks=[],
            reason="the candidate set S_C was not scored",
        )
    cand = summaries["candidate"]
    checks = [
        Check(
            name="candidate_positive",
            passed=cand.mean > 0,
            required=True,
            detail=f"mean SSLMem(S_C) = {cand.mean:+.4f}",
        )
    ]
    for control, test in tests.items():
        # A control without a defined p-value (no spread in either set) cannot refute S_C.
        usable = math.isfinite(test.p_value)
        checks.append(
            Check(
                name=f"candidate_above_{control}",
                passed=usable and test.p_value < alpha and test.mean_difference > 0,
                required=usable,
                detail=f"Welch t = {test.t_statistic:.2f}, p = {test.p_value:.2e}",
            )
        )
    if "independent" in summaries:
        ind = summaries["independent"]
        checks.append(
            Check(
                name="independent_negative",
                passed=ind.mean < 0,
                required=False,
                detail=f"mean SSLMem(S_I) = {ind.mean:+.4f}",
            )
        )
    for near_zero in ("extra", "shared"):
        if near_zero in summaries:
            value = summaries[near_zero].mean
            checks.append(
                Check(
                    name=f"{near_zero}_near_zero",
                    passed=abs(value) < 0.5 * abs(cand.mean),
                    required=False,
                    detail=f"mean = {value:+.4f} vs half of S_C's {0.5 * abs(cand.mean):.4f}",
                )
            )
    refuting = [name for name, test in tests.items() if math.isfinite(test.p_value)]
    if not refuting:
        reason = (
            "no control set was scored"
            if not tests
            else f"no control has a usable Welch test ({', '.join(tests)}: p-value undefined)"
        )
        return Verdict(
            outcome="inconclusive",
            passed=False,
            alpha=alpha,
            checks=checks,
            reason=f"{reason}; score S_C with independent, extra or shared",
        )
    outcome: Outcome = "passed" if all(c.passed for c in checks if c.required) else "failed"
    return Verdict(outcome=outcome, passed=outcome == "passed", alpha=alpha, checks=checks)


def summarize_scores(
    scores_by_set: Mapping[str, np.ndarray[Any, Any]],
    *,
    alpha: float = 0.01,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> tuple[dict[str, SetSummary], dict[str, WelchTest], Verdict]:
    """Summaries per set, Welch tests of S_C against each control, and the verdict."""
    summaries = {name: summarize_set(v, thresholds) for name, v in scores_by_set.items()}
    tests: dict[str, WelchTest] = {}
    if "candidate" in scores_by_set:
        for control in CONTROL_SETS:
            if control in scores_by_set:
                tests[control] = welch_test(
                    scores_by_set["candidate"], scores_by_set[control], control
                )
    return summaries, tests, protocol_verdict(summaries, tests, alpha=alpha)
