"""``sslmem --help``, ``--version`` and argument errors answer without torch, MLflow or kfp.

Each case runs in a fresh interpreter (the test process has them loaded already) and reports
which heavy modules the command imported. Behaviour, not timing: see benchmarks/cli_startup.py
for the time and memory this saves.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sslmem.cli import COMMANDS

HEAVY = ("torch", "mlflow", "kfp", "torchvision", "lightly")

_PROBE = """
import contextlib, io, json, sys
from sslmem.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = [name for name in {heavy!r} if name in sys.modules]
print(json.dumps({{"code": code, "heavy": heavy, "out": out.getvalue(), "err": err.getvalue()}}))
"""


def _probe(*argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_version_imports_nothing_heavy() -> None:
    result = _probe("--version")
    assert result["code"] == 0 and str(result["out"]).startswith("sslmem ")
    assert result["heavy"] == []


def test_help_lists_every_subcommand_without_importing_them() -> None:
    result = _probe("--help")
    assert result["code"] == 0
    for name in COMMANDS:
        assert name in str(result["out"]), name
    assert result["heavy"] == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_subcommand_help_builds_its_parser_without_heavy_imports(command: str) -> None:
    # A subcommand module imports torch/MLflow/kfp only inside run(); its parser is light.
    result = _probe(command, "--help")
    assert result["code"] == 0, result["err"]
    assert f"usage: sslmem {command}" in str(result["out"])
    assert result["heavy"] == [], f"sslmem {command} --help imported {result['heavy']}"


@pytest.mark.parametrize(
    "argv",
    [
        ["no-such-command"],
        ["score"],  # required arguments missing
        [
            "pipeline",
            "submit",
            "--host",
            "http://h",
            "--experiment",
            "e",
            "--connect-attempts",
            "x",
        ],
    ],
)
def test_argument_errors_answer_without_heavy_imports(argv: list[str]) -> None:
    result = _probe(*argv)
    assert result["code"] == 2
    assert "error:" in str(result["err"])
    assert result["heavy"] == []
