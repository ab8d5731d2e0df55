"""A mode asked for over a recipe's estimator that cannot serve it: one decision, every adapter.

``sslmem.estimators.estimator_for_mode`` decides and ``sslmem.config.load_raw_config`` applies it
to the overrides, so ``sslmem score --mode``, ``--set scoring.mode=...``, the pipeline's run
config and the service's ``CONFIG_OVERRIDES`` score the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from sslmem.config import load_experiment_config
from sslmem.errors import ConfigError
from sslmem.estimators import estimator_for_mode
from sslmem.pipeline_params import load_run_config
from sslmem.workflow.scoring_settings import service_config

BUNDLED = Path(__file__).resolve().parents[1] / "src/sslmem/recipes/bundled-cpu.yaml"


def test_the_decision() -> None:
    assert estimator_for_mode("anchor", "ustat") == "pairs"  # ustat has no anchor mode
    assert estimator_for_mode("anchor", "pairs") is None  # serves it: kept
    assert estimator_for_mode("pair", "ustat") is None
    assert estimator_for_mode("pair", "pairs") is None  # pairs serves pair mode: not replaced
    # Unknown names are left to the config's validation, which names them.
    assert estimator_for_mode("diagonal", "ustat") is None
    assert estimator_for_mode("anchor", "triples") is None


def test_an_overridden_mode_wins_over_the_recipe_estimator(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert "estimator: ustat" in BUNDLED.read_text()
    with caplog.at_level(logging.WARNING, logger="sslmem.config"):
        scoring = load_experiment_config(BUNDLED, ["scoring.mode=anchor"]).scoring
    assert (scoring.mode, scoring.estimator) == ("anchor", "pairs")
    assert "the config's estimator 'ustat' does not serve it; scoring with 'pairs'" in caplog.text
    # Set as a mapping, the same.
    scoring = load_experiment_config(BUNDLED, ["scoring={mode: anchor}"]).scoring
    assert (scoring.mode, scoring.estimator) == ("anchor", "pairs")


def test_an_estimator_chosen_too_is_kept_and_refused_if_it_cannot_serve_the_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ConfigError, match="estimator 'ustat' compares views with each other"):
        load_experiment_config(BUNDLED, ["scoring.estimator=ustat", "scoring.mode=anchor"])
    scoring = load_experiment_config(BUNDLED, ["scoring={mode: anchor, estimator: pairs}"]).scoring
    assert (scoring.mode, scoring.estimator) == ("anchor", "pairs")
    assert "does not serve it" not in caplog.text


def test_without_an_overridden_mode_nothing_changes(tmp_path: Path) -> None:
    # A recipe that itself pairs anchor mode with ustat is wrong, and stays an error.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("scoring:\n  mode: anchor\n  estimator: ustat\n")
    with pytest.raises(ConfigError, match="compares views with each other"):
        load_experiment_config(recipe, ["scoring.views=4"])
    # A recipe without an estimator takes the mode's default, overridden or not.
    (tmp_path / "plain.yaml").write_text("scoring:\n  views: 4\n")
    plain = load_experiment_config(tmp_path / "plain.yaml", ["scoring.mode=anchor"])
    assert plain.scoring.estimator == "pairs"
    assert load_experiment_config(BUNDLED, ["scoring.views=4"]).scoring.estimator == "ustat"


def test_pipeline_and_service_configs_decide_the_same() -> None:
    params = load_run_config(BUNDLED, ["scoring.mode=anchor"])
    scoring = params.resolve().scoring
    assert (scoring.mode, scoring.estimator) == ("anchor", "pairs")
    settings = SimpleNamespace(recipe=BUNDLED, config_overrides=("scoring.mode=anchor",))
    scoring = service_config(settings).scoring  # type: ignore[arg-type]
    assert (scoring.mode, scoring.estimator) == ("anchor", "pairs")
