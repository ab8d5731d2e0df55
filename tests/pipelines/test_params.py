"""Pipeline parameters: one typed definition, in sync with the pipeline, errors naming fields."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from sslmem.config import ExperimentConfig
from sslmem.config_text import config_to_yaml, training_recipe
from sslmem.errors import ConfigError
from sslmem.pipeline_params import (
    CONFIG_ALIASES,
    PipelineParams,
    build_params,
    load_run_config,
    parse_param_assignments,
)
from tests.pipelines.conftest import TINY_RUN_CONFIG


def test_params_mirror_the_pipeline_signature() -> None:
    from sslmem.pipelines.memorization import build_pipeline

    pipeline = build_pipeline()
    signature = inspect.signature(pipeline.pipeline_func)
    assert list(signature.parameters) == list(PipelineParams.model_fields)
    defaults = PipelineParams().arguments()
    for name, parameter in signature.parameters.items():
        assert parameter.default == defaults[name], name
    component_inputs = set(pipeline.component_spec.inputs)
    assert component_inputs == set(PipelineParams.model_fields)


def test_resolve_component_takes_every_shortcut() -> None:
    from sslmem.components import build_components

    inputs = set(build_components().resolve_config.component_spec.inputs)
    # code_version is a cache-key input (sslmem.provenance), not a pipeline parameter.
    assert inputs == {"config_yaml", "code_version", *CONFIG_ALIASES}


def test_defaults_resolve_to_the_default_config() -> None:
    assert PipelineParams().resolve() == ExperimentConfig()


def test_shortcuts_override_config_yaml() -> None:
    params = PipelineParams(
        config_yaml="training: {epochs: 7, lr: 0.5}\nscoring: {views: 3}", epochs=2, arch="resnet18"
    )
    config = params.resolve()
    assert (config.training.epochs, config.training.lr) == (2, 0.5)
    assert (config.model.arch, config.scoring.views) == ("resnet18", 3)


def test_invalid_value_names_config_field_and_parameter() -> None:
    with pytest.raises(ConfigError) as info:
        PipelineParams(config_yaml="split: {shared: 0.9}", split_candidate=0.3).resolve()
    message = str(info.value)
    assert "split" in message and "must sum to 1" in message
    assert "split.candidate <- pipeline parameter 'split_candidate'" in message


def test_unknown_architecture_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"model\.arch: .*no_such_arch"):
        PipelineParams(arch="no_such_arch").resolve()


def test_unknown_config_key_names_it() -> None:
    with pytest.raises(ConfigError, match=r"training\.epoch"):
        PipelineParams(config_yaml="training: {epoch: 3}").resolve()


def test_build_params_rejects_unknown_and_invalid_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown pipeline parameter.*epoch_count"):
        build_params({"epoch_count": 3})
    with pytest.raises(ConfigError, match="alpha"):
        build_params({"alpha": 2.0})
    with pytest.raises(ConfigError, match="candidate_seeds"):
        build_params({"candidate_seeds": [1, 1]})


def test_param_assignments_parse_yaml_values_and_keep_text() -> None:
    values = parse_param_assignments(["epochs=5", "candidate_seeds=[0, 1]", "model_name=123"])
    assert values == {"epochs": 5, "candidate_seeds": [0, 1], "model_name": "123"}
    with pytest.raises(ConfigError, match="name=value"):
        parse_param_assignments(["epochs"])


def test_run_config_reaches_every_parameter(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text(TINY_RUN_CONFIG)
    params = load_run_config(file, ["training.lr=0.01", "pipeline.candidate_seeds=[3, 4]"])
    config = params.resolve()
    assert config.split.pool_size == 60 and config.training.lr == 0.01
    assert params.candidate_seeds == [3, 4] and params.reference_seeds == [3, 4]
    assert params.model_name == "tiny-encoder" and params.epochs == 1
    # Round trip: the parameters carry the full config.
    assert load_run_config(None, []).resolve() == ExperimentConfig()
    assert config_to_yaml(config) == params.config_yaml


def test_run_config_seed_defaults_follow_training_seed() -> None:
    params = load_run_config(None, ["training.seed=5"])
    assert params.candidate_seeds == [5] and params.reference_seeds == [5]


def test_run_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pipeline\.alpha"):
        load_run_config(None, ["pipeline.alpha=3"])
    with pytest.raises(ConfigError, match=r"unknown key.*pipeline section.*bogus"):
        load_run_config(None, ["pipeline.bogus=1"])
    with pytest.raises(ConfigError, match=r"pipeline\.epochs is an experiment-config field"):
        load_run_config(None, ["pipeline.epochs=1"])
    with pytest.raises(ConfigError, match=r"training\.epochs"):
        load_run_config(None, ["training.epochs=0"])


def test_recipe_ignores_scoring_and_evaluation() -> None:
    base = ExperimentConfig()
    changed = ExperimentConfig.model_validate({"scoring": {"views": 2}, "evaluation": {"knn_k": 3}})
    assert training_recipe(base) == training_recipe(changed)
    assert training_recipe(base) != training_recipe(
        ExperimentConfig.model_validate({"training": {"epochs": 3}})
    )
