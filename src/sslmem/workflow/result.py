"""What a finished pipeline run produced, read back from MLflow (for the CLI and service)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sslmem.memorization.scoring import ScoreSummary
from sslmem.tracking import tags as T
from sslmem.workflow.versions import VersionInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a finished pipeline run produced, read back from MLflow.

    Attributes:
        pipeline_run_id: The pipeline run.
        candidate: The candidate version and its tags.
        reference: The reference version and its tags (``None`` if not found).
        score: The score summary (``None`` if the run was not scored).

    """

    pipeline_run_id: str
    candidate: VersionInfo
    reference: VersionInfo | None
    score: ScoreSummary | None

    def format(self) -> str:
        """A text summary: SSLMem per set with 95% CIs, tests and verdict, accuracies, versions."""
        lines = [f"pipeline run {self.pipeline_run_id}"]
        status = self.candidate.tags.get(T.STATUS, "?")
        lines.append(f"registered model version: {self.candidate.uri} (status {status})")
        if status == "failed":
            lines.append(f"  failure: {self.candidate.tags.get(T.FAILURE_REASON, '?')}")
        if self.reference is not None:
            lines.append(f"reference model version:  {self.reference.uri}")
        if self.score is not None:
            lines += ["", "SSLMem per set (raw; mean, 95% CI, one-sided Welch p of S_C > set):"]
            lines.append(self.score.format_table())
        lines += ["", f"{'downstream accuracy':<22} {'kNN':>8} {'linear probe':>13}"]
        for label, info in (("candidate f", self.candidate), ("reference g", self.reference)):
            if info is None:
                continue
            knn = info.tags.get(T.KNN_ACCURACY)
            probe = info.tags.get(T.LINEAR_PROBE_ACCURACY)
            lines.append(f"{label:<22} {_percent(knn):>8} {_percent(probe):>13}")
        return "\n".join(lines)


def _percent(value: str | None) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def read_run_result(model_name: str, *, pipeline_run_id: str) -> RunResult:
    """The candidate version pipeline run ``pipeline_run_id`` registered, with its results.

    Looked up by the version tag ``sslmem.pipeline_run_id`` (not "the newest version"), so a
    concurrent or later run never changes what this run reports.

    Raises:
        TrackingError: The run registered no candidate version of ``model_name``, or MLflow is
            unreachable.

    """
    from sslmem.errors import TrackingError
    from sslmem.tracking import get_version_tags
    from sslmem.tracking.registry import find_versions_by_tag
    from sslmem.tracking.reports import read_score_summary

    found = [
        (version, tags)
        for version, tags in find_versions_by_tag(model_name, T.PIPELINE_RUN, pipeline_run_id)
        if tags.get(T.ROLE, "candidate") == "candidate"
    ]
    if not found:
        raise TrackingError(
            f"pipeline run {pipeline_run_id} registered no version of model {model_name!r}",
            "check the pipeline's log for the step that failed",
        )
    version, tags = found[-1]  # a retried registration leaves older, failed versions
    candidate = VersionInfo(model_name, version, tags)
    reference = None
    ref_model, ref_version = tags.get(T.REFERENCE_MODEL), tags.get(T.REFERENCE_VERSION)
    if ref_model and ref_version:
        reference = VersionInfo(ref_model, ref_version, get_version_tags(ref_model, ref_version))
    score = None
    score_run = T.score_run_id(tags)
    if score_run:
        score = read_score_summary(str(score_run))
    return RunResult(pipeline_run_id, candidate, reference, score)
