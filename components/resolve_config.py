"""KFP component: resolve the pipeline parameters into the experiment config."""

from typing import NamedTuple


def resolve_config(
    config_yaml: str = "",
    dataset: str = "",
    data_root: str = "",
    split_shared: float = 0.0,
    split_candidate: float = 0.0,
    split_independent: float = 0.0,
    split_extra: float = 0.0,
    split_seed: int = -1,
    pool_size: int = 0,
    method: str = "",
    arch: str = "",
    epochs: int = 0,
    batch_size: int = 0,
    lr: float = 0.0,
    views: int = 0,
    layer: str = "",
    code_version: str = "",
) -> NamedTuple(  # type: ignore[valid-type]
    "ResolveOutputs",
    [("config_json", str), ("split_json", str), ("recipe_json", str), ("evaluation_json", str)],
):
    """Validate the parameters and resolve them into one config and its per-step slices.

    Args:
        config_yaml: Experiment config YAML; the shortcut parameters below override it.
        dataset: data.dataset ("" = from config_yaml).
        data_root: data.root.
        split_shared: split.shared (0 = from config_yaml).
        split_candidate: split.candidate.
        split_independent: split.independent.
        split_extra: split.extra.
        split_seed: split.seed (-1 = from config_yaml).
        pool_size: split.pool_size (0 = from config_yaml).
        method: training.method.
        arch: model.arch.
        epochs: training.epochs.
        batch_size: training.batch_size.
        lr: training.lr.
        views: scoring.views.
        layer: scoring.layer.
        code_version: The code identity, a cache-key input only (a change of the resolving
            code re-resolves).

    Returns:
        config_json: the full config; split_json, recipe_json, evaluation_json: the sections
        the split, training and evaluation steps depend on (their cache keys).

    """
    from sslmem import workflow
    from sslmem.pipeline_params import PipelineParams

    resolved = workflow.resolve_config(
        PipelineParams(
            config_yaml=config_yaml,
            dataset=dataset,
            data_root=data_root,
            split_shared=split_shared,
            split_candidate=split_candidate,
            split_independent=split_independent,
            split_extra=split_extra,
            split_seed=split_seed,
            pool_size=pool_size,
            method=method,
            arch=arch,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            views=views,
            layer=layer,
        )
    )
    return (
        resolved.config_json,
        resolved.split_json,
        resolved.recipe_json,
        resolved.evaluation_json,
    )
