"""The config as canonical text (``sslmem.config_text``): what cached steps take and key on."""

from __future__ import annotations

import json

import pytest
import yaml

from sslmem.config import ExperimentConfig, load_experiment_config
from sslmem.config_text import (
    RECIPE_SECTIONS,
    SPLIT_SECTIONS,
    config_from_json,
    config_sections_json,
    config_to_json,
    config_to_yaml,
    training_recipe,
)
from sslmem.errors import ConfigError


def test_the_text_is_canonical_and_reads_back() -> None:
    config = load_experiment_config(None, ["training.epochs=3", "scoring.views=4"])
    text = config_to_json(config)
    assert " " not in text and list(json.loads(text)) == sorted(json.loads(text))
    assert config_from_json(text) == config
    assert ExperimentConfig.model_validate(yaml.safe_load(config_to_yaml(config))) == config


def test_a_recipe_holds_only_what_determines_an_encoder() -> None:
    base = ExperimentConfig()
    recipe = json.loads(training_recipe(base))
    assert tuple(sorted(recipe)) == tuple(sorted(RECIPE_SECTIONS))
    # Scoring does not change the recipe (a cached encoder is reused); training does.
    other_scoring = load_experiment_config(None, ["scoring.views=2"])
    other_training = load_experiment_config(None, ["training.epochs=2"])
    assert training_recipe(other_scoring) == training_recipe(base)
    assert training_recipe(other_training) != training_recipe(base)
    assert json.loads(config_sections_json(base, SPLIT_SECTIONS)).keys() == {"data", "split"}
    # Missing sections read back as their defaults.
    assert config_from_json(training_recipe(base)).scoring == base.scoring


def test_bad_text_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="config JSON is not valid"):
        config_from_json("{")
    with pytest.raises(ConfigError, match="config JSON"):
        config_from_json('{"training": {"epochs": -1}}')
