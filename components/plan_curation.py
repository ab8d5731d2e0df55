"""KFP component: a curation study's plan -- validated, and the names of its retrains."""

from typing import NamedTuple

from kfp.dsl import Artifact, Input


def plan_curation(
    scores: Input[Artifact],
    fractions: list,  # type: ignore[type-arg]  # KFP maps only bare ``list`` to a LIST parameter
    strategies: list,  # type: ignore[type-arg]
    seeds: list,  # type: ignore[type-arg]
    random_draws: int,
    draw_seed: int,
    budget: str,
    exposure_quantile: float,
    atypicality_k: int,
    code_version: str = "",
) -> NamedTuple("CurationPlan", [("plan_json", str), ("names", list)]):  # type: ignore[valid-type]
    """Validate the study's plan against the score report; list its retrains (the fan-out).

    Args:
        scores: The candidate's score report directory (``scores.parquet``, ``summary.json``).
        fractions: Removal sizes as fractions of the scored candidates.
        strategies: Removals to compare (``top``, ``random``, ``bottom``).
        seeds: Training seeds of every retrain.
        random_draws: Random subsets per size and seed.
        draw_seed: Seed of the random subsets.
        budget: ``steps`` or ``epochs`` held fixed.
        exposure_quantile: Exposure threshold as a quantile of the full encoder's SSLMem.
        atypicality_k: Neighbours of the kNN-distance atypicality.
        code_version: The code identity, a cache-key input.

    Returns:
        plan_json: the validated plan (:class:`sslmem.curation.plan.StudyPlan`); names: one
        retrain name per training the study costs.

    """
    from sslmem.curation.plan import study_plan
    from sslmem.curation.study import retrain_names

    plan = study_plan(
        fractions=[float(f) for f in fractions],
        strategies=list(strategies),
        seeds=[int(s) for s in seeds],  # KFP may hand list items over as floats
        random_draws=int(random_draws),
        draw_seed=int(draw_seed),
        budget=budget,
        exposure_quantile=float(exposure_quantile),
        atypicality_k=int(atypicality_k),
    )
    return (plan.model_dump_json(), retrain_names(scores.path, plan))
