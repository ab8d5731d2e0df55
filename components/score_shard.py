"""KFP component: one shard of sharded scoring (a range of the scored points)."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def score_shard(
    candidate_models: Input[list[Model]],
    reference_models: Input[list[Model]],
    split: Input[Dataset],
    config_json: str,
    shard: str,
    table: Output[Artifact],
) -> None:
    """Score the points ``START:STOP``; write their per-point table (untracked).

    Args:
        candidate_models: All candidate encoders.
        reference_models: All reference encoders.
        split: The split manifest.
        config_json: The resolved experiment config (its scoring section applies).
        shard: ``"START:STOP"`` from the plan step.
        table: Output: directory with ``shard-START-STOP.parquet``.

    """
    from pathlib import Path

    from sslmem import workflow
    from sslmem.config_text import config_from_json
    from sslmem.runtime import apply_process_settings

    apply_process_settings()
    workflow.score_pair_shard(
        candidate_checkpoints=[m.path for m in candidate_models],
        reference_checkpoints=[m.path for m in reference_models],
        manifest_path=split.path,
        config=config_from_json(config_json),
        shard=shard,
        out_dir=Path(table.path),
    )
    table.metadata["shard"] = shard
