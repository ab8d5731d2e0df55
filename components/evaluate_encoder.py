"""KFP component: downstream kNN and linear-probe accuracy of one encoder."""

from kfp.dsl import Input, Metrics, Model, Output


def evaluate_encoder(
    model: Input[Model], evaluation_json: str, metrics: Output[Metrics], code_version: str = ""
) -> None:
    """Evaluate an encoder downstream (frozen features; kNN and linear probe).

    Args:
        model: The encoder checkpoint (its metadata names role, seed and training run).
        evaluation_json: The data, augmentation and evaluation sections of the config.
        metrics: Output: accuracies as metrics; the file holds the full record (JSON).
        code_version: The code identity, a cache-key input only.

    """
    from sslmem import workflow
    from sslmem.config_text import config_from_json
    from sslmem.runtime import apply_process_settings

    run_id = str(model.metadata.get("mlflow_run_id") or "") or None
    apply_process_settings()  # process-wide: the adapter's job
    config = config_from_json(evaluation_json)
    result = workflow.evaluate_role(model.path, config, run_id=run_id).result
    workflow.save_evaluation(
        result,
        metrics.path,
        checkpoint_sha256=str(model.metadata["sha256"]),
        seed=int(model.metadata["seed"]),
        role=str(model.metadata["role"]),
    )
    for key, value in result.metrics().items():
        metrics.log_metric(key, value)
