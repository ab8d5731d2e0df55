"""KFP component: register the reference and the candidate encoders in MLflow."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Metrics, Model


def register_model(
    candidate_models: Input[list[Model]],
    reference_models: Input[list[Model]],
    candidate_metrics: Input[list[Metrics]],
    reference_metrics: Input[list[Metrics]],
    split: Input[Dataset],
    split_uri: str,
    config_json: str,
    candidate_seeds: list[int],
    reference_seeds: list[int],
    model_name: str,
    reference_model_name: str,
    mlflow_experiment: str,
    pipeline_run_id: str,
) -> NamedTuple(  # type: ignore[valid-type]
    "RegisterOutputs", [("candidate_version", str), ("reference_version", str)]
):
    """Register the first-seed reference and candidate as new model versions with provenance.

    The candidate version is tagged sslmem.status=training; only scoring sets "scored".

    Args:
        candidate_models: Candidate encoders, one per candidate seed.
        reference_models: Reference encoders, one per reference seed.
        candidate_metrics: Their downstream evaluations.
        reference_metrics: Theirs.
        split: The split manifest.
        split_uri: The manifest's object-store URI (tagged on the version).
        config_json: The resolved experiment config.
        candidate_seeds: Candidate seeds in order (the first is registered).
        reference_seeds: Reference seeds in order.
        model_name: Registered model of the candidates.
        reference_model_name: Registered model of the references ("" = <model_name>-reference).
        mlflow_experiment: MLflow experiment.
        pipeline_run_id: The pipeline run (tags every version it registers).

    Returns:
        candidate_version, reference_version: the new version numbers.

    """
    from sslmem import workflow
    from sslmem.config_text import config_from_json
    from sslmem.pipeline_params import reference_model_for
    from sslmem.runtime import apply_process_settings

    apply_process_settings()  # process-wide: the adapter's job
    registration = workflow.register_candidate(
        candidates=workflow.collect_encoders(
            [(m.path, m.metadata) for m in candidate_models],
            [m.path for m in candidate_metrics],
            candidate_seeds,
        ),
        references=workflow.collect_encoders(
            [(m.path, m.metadata) for m in reference_models],
            [m.path for m in reference_metrics],
            reference_seeds,
        ),
        manifest_path=split.path,
        manifest_uri=split_uri,
        config=config_from_json(config_json),
        model_name=model_name,
        reference_model_name=reference_model_for(model_name, reference_model_name),
        experiment=mlflow_experiment,
        pipeline_run_id=pipeline_run_id,
    )
    return (registration.candidate.version, registration.reference.version)
