"""The retrains a curation study runs: removal sizes x strategies x draws x training seeds.

Each training seed s retrains the candidate encoder on the full split (the control every
removal is compared with, same seed) and on each derived split: the top-k, bottom-k and
``random_draws`` random k-subsets removed, for every removal size k. A study therefore costs
``len(seeds) * (1 + len(fractions) * (n_top + n_bottom + random_draws))`` trainings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sslmem.config import TrainingConfig
from sslmem.curation.selection import STRATEGIES, Strategy, removal_size
from sslmem.errors import ConfigError

Budget = Literal["steps", "epochs"]
#: The strategy name of the full-data control retrain.
FULL = "full"


class StudyPlan(BaseModel):
    """What a curation study varies.

    Attributes:
        fractions: Removal sizes as fractions of the scored candidates (k = round(f * n)).
        strategies: Which removals (``top``, ``random``, ``bottom``).
        seeds: Training seeds; every retrain is repeated for each.
        random_draws: Independent random subsets per size and seed.
        draw_seed: Seed of the random subsets (draw d of every seed uses ``(draw_seed, d)``).
        budget: ``steps`` keeps the full split's optimiser steps (a smaller set gets more
            epochs), ``epochs`` keeps the recipe's epochs (and so fewer steps).
        exposure_quantile: The exposure threshold is this quantile of the full-data encoder's
            candidate SSLMem (same seed); the onion effect counts points above it.
        atypicality_k: Neighbours of the kNN-distance atypicality.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fractions: tuple[float, ...] = (0.1, 0.3)
    strategies: tuple[Strategy, ...] = STRATEGIES
    seeds: tuple[int, ...] = (0, 1, 2)
    random_draws: int = Field(2, ge=1)
    draw_seed: int = 0
    budget: Budget = "steps"
    exposure_quantile: float = Field(0.9, gt=0.0, lt=1.0)
    atypicality_k: int = Field(10, ge=1)

    @field_validator("fractions", "strategies", "seeds")
    @classmethod
    def _non_empty_unique(cls, value: tuple[object, ...]) -> tuple[object, ...]:
        if not value:
            raise ValueError("must name at least one value")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a value")
        return value


@dataclass(frozen=True)
class Retrain:
    """One retrain of the candidate encoder.

    Attributes:
        strategy: ``full`` (nothing removed), ``top``, ``bottom`` or ``random``.
        k: Candidates removed (0 for ``full``).
        fraction: The removal fraction (0.0 for ``full``).
        draw: The random draw (0 unless ``random``).
        seed: Training seed.

    """

    strategy: str
    k: int
    fraction: float
    draw: int
    seed: int

    @property
    def name(self) -> str:
        """A file-system-safe unique name, e.g. ``random-k9-d1-s0``."""
        if self.strategy == FULL:
            return f"full-s{self.seed}"
        draw = f"-d{self.draw}" if self.strategy == "random" else ""
        return f"{self.strategy}-k{self.k}{draw}-s{self.seed}"


def plan_retrains(plan: StudyPlan, num_candidates: int) -> list[Retrain]:
    """Every retrain of the study, the full-data controls first.

    Raises:
        ConfigError: A fraction gives k < 1 or removes every candidate; two fractions give
            the same k.

    """
    sizes = [removal_size(f, num_candidates) for f in plan.fractions]
    if len(set(sizes)) != len(sizes):
        raise ConfigError(
            f"fractions {', '.join(f'{f:g}' for f in plan.fractions)} of {num_candidates} "
            f"candidates give repeated removal sizes {sizes}",
            "choose fractions further apart",
        )
    retrains = [Retrain(FULL, 0, 0.0, 0, seed) for seed in plan.seeds]
    for fraction, k in zip(plan.fractions, sizes, strict=True):
        for strategy in plan.strategies:
            draws = range(plan.random_draws) if strategy == "random" else range(1)
            for draw in draws:
                retrains += [Retrain(strategy, k, fraction, draw, seed) for seed in plan.seeds]
    return retrains


def steps_per_epoch(num_images: int, training: TrainingConfig) -> int:
    """Optimiser steps per epoch on ``num_images`` (full batches only, as the training loop)."""
    return num_images // training.batch_size


def budget_epochs(
    training: TrainingConfig, full_images: int, reduced_images: int, budget: Budget
) -> int:
    """Epochs for the reduced set so the study holds ``budget`` fixed.

    Args:
        training: The recipe's training section.
        full_images: Training images of the full split (S_S ∪ S_C).
        reduced_images: Training images after the removal.
        budget: ``steps``: at least the full split's optimiser steps; ``epochs``: the recipe's.

    Raises:
        ConfigError: The reduced set holds less than one batch.

    """
    reduced_steps = steps_per_epoch(reduced_images, training)
    if reduced_steps == 0:
        raise ConfigError(
            f"the reduced training set has {reduced_images} images, fewer than one batch of "
            f"{training.batch_size}",
            "remove fewer candidates, or lower training.batch_size",
        )
    if budget == "epochs":
        return training.epochs
    full_steps = training.epochs * steps_per_epoch(full_images, training)
    return math.ceil(full_steps / reduced_steps)


def study_plan(**fields: object) -> StudyPlan:
    """A :class:`StudyPlan` from loose fields (CLI flags, pipeline parameters).

    Raises:
        ConfigError: A field is invalid (the message names it and why).

    """
    from pydantic import ValidationError

    try:
        return StudyPlan.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(
            f"invalid curation study plan: {problems}",
            "see `sslmem curate --help` for each setting's meaning and range",
        ) from None
