"""What the scoring and the sharded-scoring merge components share: score, then fill outputs."""

from pathlib import Path
from typing import Any


def score_version_outputs(
    *,
    candidate_models: Any,
    reference_models: Any,
    split: Any,
    config_json: str,
    alpha: float,
    model_name: str,
    candidate_version: str,
    reference_model_name: str,
    reference_version: str,
    mlflow_experiment: str,
    pipeline_run_id: str,
    scores: Any,
    summary: Any,
    report: Any,
    shards: list[str] | None = None,
) -> None:
    """Score (or merge ``shards`` of) the registered candidate version; fill the KFP outputs.

    Args mirror :func:`sslmem.components.score_memorization.score_memorization`; ``shards``
    are the shard tables' directories (``None``: score in one pass).
    """
    from sslmem import workflow
    from sslmem.config_text import config_from_json
    from sslmem.pipeline_params import reference_model_for
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
        shards=None if shards is None else [Path(s) for s in shards],
    )
    for key, value in workflow.finite_score_metrics(result).items():
        summary.log_metric(key, value)
    scores.metadata["model_version"] = candidate.uri
    Path(report.path).write_text(
        f"# SSLMem of {candidate.uri}\n\n```\n{result.summary.format_table()}\n```\n"
    )
