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
    from sslmem.components._scoring import score_version_outputs

    score_version_outputs(
        candidate_models=candidate_models,
        reference_models=reference_models,
        split=split,
        config_json=config_json,
        alpha=alpha,
        model_name=model_name,
        candidate_version=candidate_version,
        reference_model_name=reference_model_name,
        reference_version=reference_version,
        mlflow_experiment=mlflow_experiment,
        pipeline_run_id=pipeline_run_id,
        scores=scores,
        summary=summary,
        report=report,
    )
