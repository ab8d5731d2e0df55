"""KFP component: SSLMem of the candidates vs the references; summary tags on the version."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def score_memorization(
    candidate_models: Input[list[Model]],
    reference_models: Input[list[Model]],
    split: Input[Dataset],
    config_json: str,
    alpha: float,
    model_name: str,
    candidate_version: str,
    reference_model_name: str,
    reference_version: str,
    mlflow_experiment: str,
    pipeline_run_id: str,
    scores: Output[Artifact],
    summary: Output[Metrics],
    report: Output[Markdown],
) -> None:
    """Score memorisation of the registered candidate version (never cached).

    Args:
        candidate_models: All candidate encoders (the expectation over seeds).
        reference_models: All reference encoders.
        split: The split manifest.
        config_json: The resolved experiment config (its scoring section applies).
        alpha: Significance level of the verdict.
        model_name: Registered model of the candidate.
        candidate_version: The resolved candidate version this score belongs to.
        reference_model_name: Registered model of the reference ("" = <model_name>-reference).
        reference_version: The resolved reference version.
        mlflow_experiment: MLflow experiment.
        pipeline_run_id: The pipeline run.
        scores: Output: directory with scores.parquet (per point) and summary.json.
        summary: Output: summary metrics (SSLMem per set, Welch tests, verdict).
        report: Output: the summary table.

    """
    from pathlib import Path

    from sslmem import workflow
    from sslmem.pipeline_params import config_from_json, reference_model_for
    from sslmem.runtime import apply_process_settings

    apply_process_settings()  # process-wide: the adapter's job
    candidate = workflow.VersionInfo(model_name, candidate_version)
    reference = workflow.VersionInfo(
        reference_model_for(model_name, reference_model_name), reference_version
    )
    # Under the version's exactly-once claim, shared with the scoring service.
    result = workflow.score_pair_claimed(
        candidate_checkpoints=[m.path for m in candidate_models],
        reference_checkpoints=[m.path for m in reference_models],
        manifest_path=split.path,
        config=config_from_json(config_json),
        out_dir=Path(scores.path),
        alpha=alpha,
        candidate=candidate,
        reference=reference,
        experiment=mlflow_experiment,
        pipeline_run_id=pipeline_run_id,
    )
    for key, value in workflow.finite_score_metrics(result).items():
        summary.log_metric(key, value)
    scores.metadata["model_version"] = candidate.uri
    Path(report.path).write_text(
        f"# SSLMem of {candidate.uri}\n\n```\n{result.summary.format_table()}\n```\n"
    )
