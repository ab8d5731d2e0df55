"""The one entry point of a curation study: run (or resume) it, then log it to MLflow.

``sslmem curate`` and the curation pipeline's study step call :func:`curate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.curation.plan import Retrain, StudyPlan
from sslmem.curation.study import StudyResult, run_study


@dataclass(frozen=True)
class CurationOutcome:
    """A finished study and where it was logged.

    Attributes:
        result: The study (:class:`~sslmem.curation.study.StudyResult`).
        mlflow_run_id: Its parent MLflow run (``None``: not tracked).

    """

    result: StudyResult
    mlflow_run_id: str | None


def curate(
    *,
    report_dir: Path | str,
    manifest_path: Path | str,
    reference_path: Path | str,
    config: ExperimentConfig,
    plan: StudyPlan,
    out_dir: Path | str,
    experiment: str | None = None,
    device: str = "cpu",
    settings: RuntimeSettings | None = None,
    on_retrain: Callable[[int, int, Retrain], None] | None = None,
    done_dirs: Sequence[Path] = (),
) -> CurationOutcome:
    """Run or resume the study (:func:`~sslmem.curation.study.run_study`) and log it.

    Args:
        report_dir: The candidate's score report directory.
        manifest_path: The split it was scored on.
        reference_path: The reference it was scored against.
        config: The candidate's recipe.
        plan: What the study varies.
        out_dir: The study directory.
        experiment: MLflow experiment for the study's runs (``None``: not tracked).
        device: Compute device.
        settings: Runtime settings (tracking URI, store).
        on_retrain: Called before each retrain.
        done_dirs: Retrains computed elsewhere (the pipeline's fan-out), adopted first.

    Raises:
        ConfigError, DataError: See :func:`~sslmem.curation.study.run_study`.
        TrackingError: MLflow is unreachable (only with ``experiment``); the study's files
            are complete and a rerun logs them without retraining.

    """
    from sslmem.workflow._common import configure_tracking, process_settings

    settings = process_settings(settings)
    result = run_study(
        report_dir=report_dir,
        manifest_path=manifest_path,
        reference_path=reference_path,
        config=config,
        plan=plan,
        out_dir=out_dir,
        device=device,
        settings=settings,
        on_retrain=on_retrain,
        done_dirs=done_dirs,
    )
    if experiment is None:
        return CurationOutcome(result, None)
    from sslmem.curation.tracking import log_study

    configure_tracking(settings)
    return CurationOutcome(result, log_study(result, plan, experiment=experiment))
