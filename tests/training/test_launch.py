"""The torchrun launch command and the processes-per-node setting (no processes started here)."""

from __future__ import annotations

import sys

import pytest

from sslmem.errors import ConfigError, TrainingError
from sslmem.training.launch import processes_per_node, run_processes, torchrun_command


def test_torchrun_command_runs_the_module_in_n_standalone_processes() -> None:
    command = torchrun_command(4, "sslmem.workflow.train_launch", ["--role=candidate"])
    assert command == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=4",
        "-m",
        "sslmem.workflow.train_launch",
        "--role=candidate",
    ]
    assert torchrun_command(2, "m", [], python="/opt/py")[0] == "/opt/py"


@pytest.mark.parametrize(("value", "expected"), [(None, 1), ("", 1), ("1", 1), (" 8 ", 8)])
def test_processes_per_node_defaults_to_one(value: str | None, expected: int) -> None:
    env = {} if value is None else {"SSLMEM_TRAIN_NPROC_PER_NODE": value}
    assert processes_per_node(env) == expected


@pytest.mark.parametrize("value", ["two", "0", "-1", "65"])
def test_bad_processes_per_node_names_the_variable_and_the_fix(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        processes_per_node({"SSLMEM_TRAIN_NPROC_PER_NODE": value})
    assert "out of range" in str(info.value) or "SSLMEM_TRAIN_NPROC_PER_NODE" in str(info.value)
    assert info.value.fix


def test_torchrun_command_refuses_zero_processes() -> None:
    with pytest.raises(ConfigError):
        torchrun_command(0, "m", [])


def test_a_failed_launch_is_a_training_error_with_the_exit_status() -> None:
    with pytest.raises(TrainingError, match="status 3") as info:
        run_processes([sys.executable, "-c", "raise SystemExit(3)"])
    assert "SSLMEM_TRAIN_NPROC_PER_NODE=1" in (info.value.fix or "")
    run_processes([sys.executable, "-c", "pass"])  # success raises nothing
