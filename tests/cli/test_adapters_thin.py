"""The CLI's subcommands parse, call one workflow function and print: no copy of the work.

Read from the source (``ast``), so the check fails the moment a subcommand imports the library's
compute, loading or writing functions again instead of its workflow function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[2] / "src" / "sslmem" / "cli"

#: Subcommand module -> the workflow functions its ``run`` calls.
WORKFLOW_CALLS = {
    "split": {"write_split"},
    "evaluate": {"evaluate_role"},
    "score": {"score_to_dir", "score_pair_shard"},
    "register": {"register_external_encoder"},
    "train": {"train_to_dir"},
    "unitmem": {"units_to_dir"},
}

#: What the workflow does: a subcommand importing one of these re-does a step by hand.
#: (Choosing the estimator is the config's: ``sslmem.config.load_raw_config`` applies
#: ``estimators.estimator_for_mode`` for every adapter; the CLI only turns flags into overrides.)
WORK = {
    "check_estimator",
    "default_estimator",
    "estimator_for_mode",
    "load_experiment_config",
    "load_raw_config",
    "evaluate_encoder",
    "train_encoder",
    "score_units",
    "write_unit_report",
    "JsonlMetricsLogger",
    "load_checkpoint",
    "load_dataset",
    "load_manifest",
    "make_split",
    "manifest_dataset",
    "merge_shards",
    "read_shards",
    "recorded_augmentation",
    "score_layers",
    "score_shard",
    "score_split",
    "select_points",
    "write_bytes",
    "write_layer_report",
    "write_score_outputs",
    "write_shard",
}


def _imported_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name.rsplit(".", 1)[-1] for alias in node.names}
    return names


def _called_in_run(tree: ast.Module) -> set[str]:
    (run,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    called: set[str] = set()
    for node in ast.walk(run):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                called.add(func.id)
            elif isinstance(func, ast.Attribute):
                called.add(func.attr)
    return called


@pytest.mark.parametrize("module", sorted(WORKFLOW_CALLS))
def test_each_subcommand_calls_its_workflow_function_and_no_step_of_its_own(module: str) -> None:
    tree = ast.parse((CLI / f"{module}.py").read_text())
    assert WORKFLOW_CALLS[module] <= _called_in_run(tree), module
    copied = _imported_names(tree) & WORK
    assert not copied, f"sslmem {module} imports {sorted(copied)}: call the workflow instead"


def test_the_check_sees_a_copied_step() -> None:
    """The check itself can fail: a run() that loads and scores by hand is caught."""
    source = (
        "def run(args):\n"
        "    from sslmem.memorization.scoring import score_split\n"
        "    return score_split(args)\n"
    )
    tree = ast.parse(source)
    assert _imported_names(tree) & WORK == {"score_split"}
    assert "score_to_dir" not in _called_in_run(tree)


def test_the_check_sees_an_estimator_decided_in_the_cli() -> None:
    """Choosing the estimator for ``--mode`` in the CLI (as ``sslmem score`` once did) is caught."""
    source = (
        "def _estimator_for_mode(args):\n"
        "    from sslmem.config import load_experiment_config\n"
        "    from sslmem.estimators import default_estimator\n"
        "    return default_estimator(args.mode)\n"
    )
    assert _imported_names(ast.parse(source)) & WORK == {
        "default_estimator",
        "load_experiment_config",
    }
