"""The schema of a score report: per-point columns, provenance, summary (Wang et al., ICLR 2024).

What :mod:`sslmem.memorization.scoring` computes and :mod:`sslmem.memorization.report_writer`
writes; readers (tracking, the judgement, the service) depend on this alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from sslmem.augment import AugmentationSpec
from sslmem.config import ScoringConfig
from sslmem.estimators import LEGACY_ESTIMATOR
from sslmem.memorization.stats import SetSummary, Verdict, WelchTest

SCORE_COLUMNS = (
    "sample_index",
    "set",
    "sslmem_raw",
    "sslmem_range",
    "sslmem_minmax",
    "candidate_alignment",
    "reference_alignment",
)


class CheckpointRef(BaseModel):
    """Provenance of one encoder (as its checkpoint records it; ``None``: not recorded)."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    arch: str
    representation: dict[str, Any]
    role: str | None = None
    split_manifest_sha256: str | None = None
    method: str | None = None
    seed: int | None = None
    missing_provenance: list[str] = []


class PairProvenance(BaseModel):
    """What a run over a candidate/reference pair was computed from, and how.

    Shared by every report of such a run (``summary.json``, ``layers.json``), so a score can
    always be traced to its encoders, split, augmentation, protocol and code.
    """

    model_config = ConfigDict(frozen=True)

    candidates: list[CheckpointRef]
    references: list[CheckpointRef]
    manifest_sha256: str
    dataset: dict[str, Any]
    augmentation: AugmentationSpec
    scoring: ScoringConfig
    sslmem_version: str
    torch_version: str
    device: str
    seconds: float
    points_per_second: float
    precision: str = "fp32"
    allow_cross_split: bool = False
    allow_missing_provenance: bool = False

    @field_validator("scoring", mode="before")
    @classmethod
    def _legacy_estimator(cls, value: Any) -> Any:
        if isinstance(value, dict) and "estimator" not in value:
            return {**value, "estimator": LEGACY_ESTIMATOR}
        return value


class ScoreSummary(PairProvenance):
    """Statistics, verdict and provenance of a scoring run (the JSON summary)."""

    sets: dict[str, SetSummary]
    welch_tests: dict[str, WelchTest]
    verdict: Verdict
    normalization: str
    #: Points per shard of a sharded run (``None``: scored in one pass).
    shard_size: int | None = None

    def format_table(self) -> str:
        """A compact text table of the per-set statistics, the verdict and what was waived."""
        s = self.scoring
        # The estimator is named only when it is not the paper's (the default's line is unchanged).
        how = s.mode if s.estimator == "pairs" else f"{s.mode}, {s.estimator} estimator"
        lines = [
            f"layer {s.layer}, K = {s.views} ({how}), {s.distance}, {self.precision} "
            f"on {self.device}",
            f"{'set':<12} {'n':>6} {'mean':>9} {'95% CI':>21} {'p(S_C > set)':>13}",
        ]
        for name, stats in self.sets.items():
            test = self.welch_tests.get(name)
            p = f"{test.p_value:.2e}" if test else "-"
            ci = f"[{stats.ci95_low:+.4f}, {stats.ci95_high:+.4f}]"
            lines.append(f"{name:<12} {stats.n:>6} {stats.mean:>+9.4f} {ci:>21} {p:>13}")
        verdict = self.verdict
        lines.append(f"verdict: {verdict.outcome.upper()} (alpha {verdict.alpha})")
        if verdict.reason:
            lines.append(f"  {verdict.reason}")
        lines += [f"  [{'x' if c.passed else ' '}] {c.name}: {c.detail}" for c in verdict.checks]
        if self.allow_cross_split:
            trained = sorted(
                {c.split_manifest_sha256 or "?" for c in [*self.candidates, *self.references]}
            )
            lines.append(
                f"CROSS-SPLIT (allowed): encoders trained on split {', '.join(trained)}; "
                f"scored split {self.manifest_sha256}"
            )
        unchecked = [c for c in [*self.candidates, *self.references] if c.missing_provenance]
        for ref in unchecked:
            lines.append(
                f"UNCHECKED PROVENANCE (allowed): {ref.path} records no "
                f"{', '.join(ref.missing_provenance)}"
            )
        return "\n".join(lines)


class ScoreReport(BaseModel):
    """Per-point scores (column arrays) and the summary."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    columns: dict[str, Any]
    summary: ScoreSummary

    def rows(self) -> list[dict[str, Any]]:
        """Per-point rows (for small reports and tests)."""
        n = len(self.columns["sample_index"])
        return [{k: self.columns[k][i] for k in SCORE_COLUMNS} for i in range(n)]
