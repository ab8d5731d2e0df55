"""The one reader of score reports logged to MLflow (``scoring/`` artifacts of a score run).

Everything that needs a logged score -- the pipeline reusing the service's result, judging, the
service's read API and gauges, ``sslmem run``'s summary -- reads it here:
:func:`read_score_summary` (``summary.json`` only) or :func:`read_score_report` (the summary
and the per-point table).

A score run is written once (it is keyed by version and lease generation), so a report this
process just published is remembered (:func:`remember_score_report`, the last few) and read
from memory: the worker judges and exports what it holds instead of downloading it again.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from sslmem.errors import TrackingError
from sslmem.tracking.connection import tracking_errors
from sslmem.tracking.runs import SCORING_ARTIFACT_DIR

if TYPE_CHECKING:
    from sslmem.memorization.scoring import ScoreReport, ScoreSummary

__all__ = [
    "SCORE_SUMMARY_ARTIFACT",
    "read_score_report",
    "read_score_summary",
    "remember_score_report",
]

#: The score summary inside a score run's artifacts.
SCORE_SUMMARY_ARTIFACT = f"{SCORING_ARTIFACT_DIR}/summary.json"


#: How many published reports are remembered (each holds its per-point table).
HELD_REPORTS = 8
_held: OrderedDict[str, ScoreReport] = OrderedDict()
_held_lock = threading.Lock()


def remember_score_report(run_id: str, report: ScoreReport) -> None:
    """Remember the report just logged to ``run_id``, so readers here need not download it."""
    with _held_lock:
        _held[run_id] = report
        _held.move_to_end(run_id)
        while len(_held) > HELD_REPORTS:
            _held.popitem(last=False)


def _remembered(run_id: str) -> ScoreReport | None:
    with _held_lock:
        return _held.get(run_id)


def _unreadable(run_id: str, exc: Exception) -> TrackingError:
    # The content is not echoed: only the run and the kind of problem.
    return TrackingError(
        f"the score report of run {run_id} is incomplete or unreadable ({type(exc).__name__})",
        "re-score the version",
    )


def read_score_summary(run_id: str) -> ScoreSummary:
    """The summary a score run logged (``scoring/summary.json``).

    Raises:
        TrackingNotFoundError: No such run or artifact.
        TrackingError: The summary is unreadable, or MLflow is unreachable (a
            :class:`~sslmem.errors.TrackingUnavailableError`).

    """
    from mlflow.artifacts import download_artifacts

    from sslmem.memorization.scoring import ScoreSummary

    held = _remembered(run_id)
    if held is not None:
        return held.summary
    with tempfile.TemporaryDirectory(prefix="sslmem-summary-") as tmp:
        with tracking_errors(f"download the score summary of run {run_id}"):
            local = download_artifacts(
                run_id=run_id, artifact_path=SCORE_SUMMARY_ARTIFACT, dst_path=tmp
            )
        try:
            return ScoreSummary.model_validate_json(Path(local).read_text())
        except (OSError, ValueError) as exc:
            raise _unreadable(run_id, exc) from exc


def read_score_report(run_id: str) -> ScoreReport:
    """The report a score run logged (per-point table and summary).

    Raises:
        TrackingNotFoundError: No such run or artifacts.
        TrackingError: The report is incomplete or unreadable, or MLflow is unreachable.

    """
    import pyarrow.parquet as pq
    from mlflow.artifacts import download_artifacts

    from sslmem.memorization.scoring import SCORE_COLUMNS, ScoreReport, ScoreSummary

    held = _remembered(run_id)
    if held is not None:
        return held
    with tempfile.TemporaryDirectory(prefix="sslmem-report-") as tmp:
        with tracking_errors(f"download the score report of run {run_id}"):
            local = Path(
                download_artifacts(run_id=run_id, artifact_path=SCORING_ARTIFACT_DIR, dst_path=tmp)
            )
        try:
            summary = ScoreSummary.model_validate_json((local / "summary.json").read_text())
            table = pq.read_table(local / "scores.parquet")
            columns = {name: table.column(name).to_numpy() for name in SCORE_COLUMNS}
        except (OSError, ValueError, KeyError) as exc:
            raise _unreadable(run_id, exc) from exc
    return ScoreReport(columns=columns, summary=summary)
