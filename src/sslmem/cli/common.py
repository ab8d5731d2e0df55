"""Argument helpers shared by subcommands (parsing only; no logic).

Standard library only at import time: parsers are built without torch, MLflow or kfp.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sslmem.config import ExperimentConfig


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set key=value`` overrides."""
    parser.add_argument(
        "--config",
        type=Path,
        help="experiment YAML file, or a shipped recipe by name (bundled-cpu, fashion-mnist)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set scoring.views=8 (repeatable)",
    )


def experiment_config(args: argparse.Namespace) -> ExperimentConfig:
    """The validated experiment config from ``--config`` and ``--set``."""
    from sslmem.config import load_experiment_config

    return load_experiment_config(args.config, list(args.overrides))


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default from SSLMEM_DEVICE, else auto)."""
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
