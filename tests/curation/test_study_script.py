"""scripts/curation_study.sh prints commands that sslmem's own parser accepts (issue 18)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from sslmem.cli import build_parser

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "curation_study.sh"


def _dry_run(**env: str) -> list[list[str]]:
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "env",
    [
        {},  # the paper-scale GPU run
        {
            "RECIPE": "bundled-cpu",
            "DEVICE": "cpu",
            "EPOCHS": "150",
            "FRACTIONS": "0.2",
            "SEEDS": "0,1,2",
            "STRATEGIES": "top,random",
            "DRAWS": "1",
            "EXPERIMENT": "curation",
        },
    ],
)
def test_every_printed_command_parses(env: dict[str, str]) -> None:
    commands = _dry_run(**env)
    assert [argv[1] for argv in commands] == ["split", "train", "train", "score", "curate"]
    for argv in commands:
        assert argv[0] == "sslmem"
        args = build_parser(argv[1]).parse_args(argv[1:])  # exits (fails) on a bad flag
        if argv[1] == "curate":
            assert args.seeds == tuple(int(s) for s in env.get("SEEDS", "0,1,2,3,4").split(","))
            assert args.experiment == env.get("EXPERIMENT")
            assert args.device == env.get("DEVICE", "cuda")
            assert args.strategies == tuple(env.get("STRATEGIES", "top,random,bottom").split(","))
