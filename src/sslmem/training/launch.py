"""Launching several training processes on one node with ``torchrun``.

A pipeline's train step that reserves N accelerators runs N processes, one per device, under
``python -m torch.distributed.run --standalone --nproc-per-node N`` (torchrun's module, so the
image needs no ``torchrun`` script on the ``PATH``). Each process runs the same training
function; :mod:`sslmem.training.distributed` joins them into one process group.

How many processes a step runs is ``SSLMEM_TRAIN_NPROC_PER_NODE`` (default 1); the pipeline sets
it on the train task from the platform config's accelerator limit (see
:mod:`sslmem.pipelines.platform`), so the setting lives where the devices are reserved.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence

from sslmem.errors import ConfigError, TrainingError
from sslmem.training.settings import MAX_NPROC, TrainProcessSettings

logger = logging.getLogger(__name__)

#: Environment variable with the number of training processes of a step on one node.
NPROC_ENV = "SSLMEM_TRAIN_NPROC_PER_NODE"
#: torchrun's implementation, run as a module (``torchrun`` is its console script).
TORCHRUN_MODULE = "torch.distributed.run"
_MAX_NPROC = MAX_NPROC


def check_nproc(nproc: int) -> int:
    """Return ``nproc`` if it is a usable number of processes per node.

    Raises:
        ConfigError: ``nproc`` is not between 1 and 64.

    """
    if not 1 <= nproc <= _MAX_NPROC:
        raise ConfigError(
            f"{nproc} training processes per node is out of range",
            f"use 1 to {_MAX_NPROC} (one process per accelerator of the train step)",
        )
    return nproc


def processes_per_node(environ: Mapping[str, str] | None = None) -> int:
    """Training processes per node requested by ``SSLMEM_TRAIN_NPROC_PER_NODE`` (default 1).

    Read by :class:`~sslmem.training.settings.TrainProcessSettings` from ``environ`` (default:
    the process environment).

    Raises:
        ConfigError: The variable is not an integer in 1..64 (the message names it).

    """
    return TrainProcessSettings.from_environ(environ).nproc_per_node


def torchrun_command(
    nproc: int | None, module: str, args: Sequence[str], *, python: str | None = None
) -> list[str]:
    """The command that runs ``python -m module *args`` in several processes.

    With ``nproc``: ``nproc`` processes on this node; ``--standalone`` starts a local
    rendezvous on a free port (no ``MASTER_ADDR`` needed). With ``None``: the layout comes from
    the environment, as on several nodes under Kubeflow Trainer's torch runtime, which sets
    ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
    ``PET_MASTER_PORT`` (torchrun reads ``PET_<OPTION>`` as its options' defaults). ``-m`` makes
    every process run ``module`` with the same interpreter.

    Args:
        nproc: Processes on this node (one per accelerator), 1..64; ``None``: from ``PET_*``.
        module: The Python module each process runs.
        args: Its arguments.
        python: The interpreter (default: this one, so the image's environment is used).

    Returns:
        The argument vector (no shell).

    Raises:
        ConfigError: ``nproc`` is out of range.

    """
    layout: list[str] = []
    if nproc is not None:
        layout = ["--standalone", f"--nproc-per-node={check_nproc(nproc)}"]
    return [python or sys.executable, "-m", TORCHRUN_MODULE, *layout, "-m", module, *args]


def run_processes(command: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
    """Run a launcher command to completion, its output passed through to the step's log.

    Raises:
        TrainingError: A process failed (torchrun stops the others and exits non-zero).

    """
    logger.info("launching: %s", " ".join(command))
    completed = subprocess.run(list(command), env=None if env is None else dict(env), check=False)
    if completed.returncode != 0:
        raise TrainingError(
            f"distributed training failed: {command[2] if len(command) > 2 else command[0]} "
            f"exited with status {completed.returncode}",
            "see the log above for the failing rank's error; fix it, or set "
            f"{NPROC_ENV}=1 to train in one process",
        )
