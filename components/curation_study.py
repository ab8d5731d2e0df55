"""KFP component: a curation study's fan-in -- adopt the retrains, analyse, report, log."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def curation_study(
    scores: Input[Artifact],
    split: Input[Dataset],
    reference: Input[Model],
    retrains: Input[list[Artifact]],
    config_json: str,
    plan_json: str,
    mlflow_experiment: str,
    study: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> None:
    """Adopt every retrain (training nothing), analyse, write the report, log it to MLflow.

    Never cached: it logs the study to MLflow (one parent run, a nested run per retrain).

    Args:
        scores: The candidate's score report directory.
        split: The split manifest it was scored on.
        reference: The reference checkpoint it was scored against.
        retrains: Every retrain's directory (from ``curation-retrain``).
        config_json: The candidate's recipe.
        plan_json: The study's plan.
        mlflow_experiment: MLflow experiment of the study's runs.
        study: Output: the study directory (report.md, results.csv, study.json, figures,
            retrains/).
        metrics: Output: mean accuracy per strategy and k (``METRIC/STRATEGY/kK``), the
            drop tests' p-values (``drop_p/CONTROL/kK/METRIC``).
        report: Output: the study's Markdown report.

    """
    import math
    from pathlib import Path

    from sslmem.config import RuntimeSettings
    from sslmem.config_text import config_from_json
    from sslmem.curation.curate import curate
    from sslmem.curation.plan import StudyPlan
    from sslmem.runtime import apply_process_settings

    apply_process_settings()  # process-wide: the adapter's job
    settings = RuntimeSettings()
    outcome = curate(
        report_dir=scores.path,
        manifest_path=split.path,
        reference_path=reference.path,
        config=config_from_json(config_json),
        plan=StudyPlan.model_validate_json(plan_json),
        out_dir=study.path,
        experiment=mlflow_experiment or None,
        device=settings.device,
        settings=settings,
        done_dirs=[Path(r.path) for r in retrains],
    )
    result = outcome.result
    values = {f"{a.metric}/{a.strategy}/k{a.k}": a.mean for a in result.analysis.arms}
    drops = result.analysis.drops  # one-sided p of "top-k hurts more than the control"
    values |= {f"drop_p/{d.control}/k{d.k}/{d.metric}": d.test.p_value for d in drops}
    for key, value in sorted(values.items()):
        if math.isfinite(value):
            metrics.log_metric(key, float(value))
    study.metadata.update(
        {"retrains": len(result.rows), "mlflow_run_id": outcome.mlflow_run_id or ""}
    )
    Path(report.path).write_text(result.files["report"].read_text())
