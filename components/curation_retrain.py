"""KFP component: one retrain of a curation study (GPU task)."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def curation_retrain(
    scores: Input[Artifact],
    split: Input[Dataset],
    reference: Input[Model],
    config_json: str,
    plan_json: str,
    name: str,
    retrain: Output[Artifact],
    code_version: str = "",
) -> None:
    """Retrain the candidate without the retrain's removed points; evaluate and re-score it.

    The cache key of this task is its inputs: the score report, split and reference, the full
    config, the plan, the retrain's name and the code version -- a retrain is reused only when
    all of them match.

    Args:
        scores: The candidate's score report directory.
        split: The split manifest it was scored on.
        reference: The reference checkpoint it was scored against.
        config_json: The candidate's recipe (the resolved experiment config).
        plan_json: The study's plan (from ``plan-curation``).
        name: The retrain (one of the plan's names, e.g. ``top-k9-s0``).
        retrain: Output: the retrain's directory (result, per-point scores, derived split,
            encoder), adopted by the study step.
        code_version: The code identity, a cache-key input (recorded in the metadata).

    """
    from pathlib import Path

    from sslmem.config import RuntimeSettings
    from sslmem.config_text import config_from_json
    from sslmem.curation.plan import StudyPlan
    from sslmem.curation.selection import read_candidate_scores
    from sslmem.curation.study import run_one_retrain
    from sslmem.data.splits import load_manifest
    from sslmem.runtime import apply_process_settings

    apply_process_settings()  # process-wide: the adapter's job
    row = run_one_retrain(
        name,
        scores=read_candidate_scores(scores.path),
        manifest=load_manifest(split.path),
        reference_path=Path(reference.path),
        config=config_from_json(config_json),
        plan=StudyPlan.model_validate_json(plan_json),
        row_dir=Path(retrain.path),
        device=RuntimeSettings().device,
    )
    retrain.metadata.update(
        {
            "name": row.name,
            "strategy": row.strategy,
            "k": row.k,
            "seed": row.seed,
            "draw": row.draw,
            "knn_accuracy": row.knn_accuracy,
            "linear_probe_accuracy": row.linear_probe_accuracy,
            "manifest_sha256": row.manifest_sha256,
            "encoder_sha256": row.encoder_sha256,
            "code_version": code_version,
        }
    )
