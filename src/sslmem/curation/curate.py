"""The one entry point of a curation study: run (or resume) it, then log it to MLflow.

``sslmem curate`` and the curation pipeline's study step call :func:`curate`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.curation.inputs import ScoredCandidate, scored_candidate_from_version
from sslmem.curation.plan import Retrain, StudyPlan
from sslmem.curation.study import StudyResult, run_study
from sslmem.errors import ConfigError
from sslmem.workflow._common import configure_tracking, process_settings


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
    report_dir: Path | str | None = None,
    manifest_path: Path | str | None = None,
    reference_path: Path | str | None = None,
    version: str | None = None,
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

    The scored candidate is either local files (``report_dir``, ``manifest_path``,
    ``reference_path``) or a registered, scored version (``version``), whose report and
    reference are fetched for the study (:mod:`sslmem.curation.inputs`).

    Args:
        report_dir: The candidate's score report directory.
        manifest_path: The split it was scored on.
        reference_path: The reference it was scored against.
        version: Instead of the three: ``models:/NAME/N`` (or ``@alias``) of a scored version.
        config: The candidate's recipe.
        plan: What the study varies.
        out_dir: The study directory.
        experiment: MLflow experiment for the study's runs (``None``: not tracked).
        device: Compute device.
        settings: Runtime settings (tracking URI, store).
        on_retrain: Called before each retrain.
        done_dirs: Retrains computed elsewhere (the pipeline's fan-out), adopted first.

    Raises:
        ConfigError: Neither or both of ``version`` and the three files; see also
            :func:`~sslmem.curation.study.run_study`.
        DataError: See :func:`~sslmem.curation.study.run_study`.
        TrackingError: MLflow is unreachable (only with ``experiment``); the study's files
            are complete and a rerun logs them without retraining.

    """
    settings = process_settings(settings)
    given = [path is not None for path in (report_dir, manifest_path, reference_path)]
    if not (all(given) if version is None else not any(given)):
        raise ConfigError(
            "a curation study needs either a registered version or the score report, split "
            "and reference files, not both and not part of them",
            "pass --version models:/NAME/N, or --scores, --split and --reference",
        )
    with tempfile.TemporaryDirectory(prefix="sslmem-curate-inputs-") as tmp:
        if version is not None:
            configure_tracking(settings)
            candidate = scored_candidate_from_version(version, Path(tmp))
        else:
            candidate = ScoredCandidate(
                report_dir=Path(str(report_dir)),
                manifest=str(manifest_path),
                reference=Path(str(reference_path)),
            )
        result = run_study(
            report_dir=candidate.report_dir,
            manifest_path=candidate.manifest,
            reference_path=candidate.reference,
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
