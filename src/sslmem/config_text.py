"""The experiment config as canonical text: what the pipeline's steps take and cache on.

Every cached step of the pipeline receives its config as text and reuses an output only when
that text is identical, so the text is canonical (sorted keys, no spaces): the whole config
(:func:`config_to_json`, :func:`config_to_yaml` for ``config_yaml``), or only the sections a
step depends on (:func:`config_sections_json`; :func:`training_recipe` for training), read back
with :func:`config_from_json`. Light: the config and the standard library.
"""

from __future__ import annotations

import json

import yaml
from pydantic import ValidationError

from sslmem.config import ExperimentConfig, format_validation_error
from sslmem.errors import ConfigError

#: Sections of the experiment config that determine a trained encoder (the training recipe).
RECIPE_SECTIONS = ("data", "augmentation", "model", "training")
#: Sections that determine the split, and those that determine a downstream evaluation.
SPLIT_SECTIONS = ("data", "split")
EVALUATION_SECTIONS = ("data", "augmentation", "evaluation")


def config_to_yaml(config: ExperimentConfig) -> str:
    """The full config as YAML (every field, sorted keys): the ``config_yaml`` of a run."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=True)


def config_to_json(config: ExperimentConfig) -> str:
    """Canonical JSON of the full config (sorted keys, no spaces)."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def config_sections_json(config: ExperimentConfig, sections: tuple[str, ...]) -> str:
    """Canonical JSON of some sections of a config (sorted keys, no spaces)."""
    dump = config.model_dump(mode="json")
    return json.dumps(
        {section: dump[section] for section in sections}, sort_keys=True, separators=(",", ":")
    )


def training_recipe(config: ExperimentConfig) -> str:
    """Canonical JSON of the sections that determine a trained encoder (:data:`RECIPE_SECTIONS`).

    It is an input of every training task, so a cached encoder is reused only when the recipe
    and the split (an input too) are identical; scoring or evaluation settings do not count.
    """
    return config_sections_json(config, RECIPE_SECTIONS)


def config_from_json(text: str) -> ExperimentConfig:
    """Rebuild a config from :func:`config_to_json` or :func:`training_recipe` output.

    Sections missing from ``text`` (e.g. scoring, in a recipe) take their defaults.

    Raises:
        ConfigError: Not JSON, or an invalid field.

    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config JSON is not valid: {exc}") from exc
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "config JSON")) from exc
