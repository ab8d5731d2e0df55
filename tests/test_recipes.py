"""The recipes shipped with the package: they validate, resolve by name, and split as documented."""

from pathlib import Path

import pytest

from sslmem.config import (
    RECIPES_DIR,
    load_experiment_config,
    resolve_config_path,
    shipped_recipes,
)
from sslmem.data import load_dataset, make_split
from sslmem.data.splits import SET_NAMES
from sslmem.errors import ConfigError


def test_the_documented_recipes_are_shipped() -> None:
    assert {"bundled-cpu", "fashion-mnist"} <= set(shipped_recipes())


@pytest.mark.parametrize("name", shipped_recipes())
def test_every_shipped_recipe_validates_by_name(name: str) -> None:
    assert resolve_config_path(name) == RECIPES_DIR / f"{name}.yaml"
    assert load_experiment_config(name) == load_experiment_config(RECIPES_DIR / f"{name}.yaml")


def test_a_local_file_wins_over_a_recipe_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("fashion-mnist.yaml").write_text("training:\n  epochs: 3\n")
    assert load_experiment_config("fashion-mnist.yaml").training.epochs == 3
    assert load_experiment_config("fashion-mnist").training.epochs == 25


def test_unknown_config_names_the_recipes() -> None:
    with pytest.raises(ConfigError) as info:
        load_experiment_config("no-such-recipe")
    assert "no-such-recipe" in str(info.value)
    fix = info.value.fix or ""
    assert "bundled-cpu" in fix and "fashion-mnist" in fix


def test_a_missing_path_is_not_looked_up_among_the_recipes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_experiment_config(tmp_path / "fashion-mnist")


def test_fashion_mnist_recipe_uses_the_papers_fractions_on_the_whole_training_set() -> None:
    config = load_experiment_config("fashion-mnist")
    manifest = make_split(load_dataset("fashion-mnist"), fractions=config.split)
    sizes = {name: len(manifest.set_indices(name)) for name in SET_NAMES}
    assert sizes == {"shared": 42_000, "candidate": 6_000, "independent": 6_000, "extra": 6_000}
