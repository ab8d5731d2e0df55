"""Step 0: pipeline parameters to the experiment config and its per-step slices (cache keys)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sslmem.config import ExperimentConfig
from sslmem.config_text import (
    EVALUATION_SECTIONS,
    SPLIT_SECTIONS,
    config_sections_json,
    config_to_json,
    training_recipe,
)
from sslmem.pipeline_params import PipelineParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedConfig:
    """The resolved config of a run, and the slices of it each step depends on.

    Each slice is an input of the steps it determines, so a cached step is reused exactly
    when its slice is unchanged (e.g. changing ``scoring.views`` re-scores but neither
    re-splits nor re-trains).

    Attributes:
        config: The full experiment config.
        config_json: All of it (registration and scoring).
        split_json: ``data`` and ``split`` (the split step).
        recipe_json: ``data``, ``augmentation``, ``model``, ``training`` (training).
        evaluation_json: ``data``, ``augmentation``, ``evaluation`` (downstream evaluation).

    """

    config: ExperimentConfig
    config_json: str
    split_json: str
    recipe_json: str
    evaluation_json: str


def resolve_config(params: PipelineParams) -> ResolvedConfig:
    """Resolve pipeline parameters into the experiment config and its per-step slices.

    Raises:
        ConfigError: Invalid parameters (named).

    """
    config = params.resolve()
    return ResolvedConfig(
        config=config,
        config_json=config_to_json(config),
        split_json=config_sections_json(config, SPLIT_SECTIONS),
        recipe_json=training_recipe(config),
        evaluation_json=config_sections_json(config, EVALUATION_SECTIONS),
    )
