"""KFP component: sharded scoring's plan -- every check once, then the shards' index ranges."""

from kfp.dsl import Dataset, Input, Model


def plan_score_shards(
    candidate_models: Input[list[Model]],
    reference_models: Input[list[Model]],
    split: Input[Dataset],
    config_json: str,
    shard_size: int,
    model_name: str,
    candidate_version: str,
    reference_model_name: str,
    reference_version: str,
) -> list:  # type: ignore[type-arg]  # KFP maps only bare ``list`` to a LIST parameter
    """Check encoders, split and versions once; return ``"START:STOP"`` per shard.

    Args:
        candidate_models: All candidate encoders.
        reference_models: All reference encoders.
        split: The split manifest.
        config_json: The resolved experiment config (its scoring section applies).
        shard_size: Points per shard (the last may be shorter).
        model_name: Registered model of the candidate.
        candidate_version: The resolved candidate version.
        reference_model_name: Registered model of the reference ("" = <model_name>-reference).
        reference_version: The resolved reference version.

    """
    from sslmem import workflow
    from sslmem.config_text import config_from_json
    from sslmem.pipeline_params import reference_model_for
    from sslmem.runtime import apply_process_settings

    apply_process_settings()
    return workflow.plan_score_shards(
        candidate_checkpoints=[m.path for m in candidate_models],
        reference_checkpoints=[m.path for m in reference_models],
        manifest_path=split.path,
        config=config_from_json(config_json),
        shard_size=shard_size,
        candidate=workflow.VersionInfo(model_name, candidate_version),
        reference=workflow.VersionInfo(
            reference_model_for(model_name, reference_model_name), reference_version
        ),
    )
