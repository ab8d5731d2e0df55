"""Argument helpers shared by subcommands (parsing only; no logic).

Standard library only at import time: parsers are built without torch, MLflow or kfp.
Output checks live in the library (:mod:`sslmem.outputs`) so pipeline steps use them too;
every subcommand that writes calls them on its destinations *before* its work.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sslmem.errors import ConfigError

if TYPE_CHECKING:
    from sslmem.config import ExperimentConfig, RuntimeSettings


def check_utf8_arguments(words: Sequence[str]) -> None:
    r"""Refuse a command-line word that is not valid UTF-8, before any work.

    Linux passes a program any bytes; Python keeps the undecodable ones as lone surrogates,
    which fail only where the text is encoded (a path handed to pyarrow, a JSON report, a log
    line): after the work, with a traceback. The entry point checks every word, so every
    command and argument (``path_arg``, ``uri_arg``, plain ``Path``) behaves the same.

    Raises:
        ConfigError: Naming the option the word belongs to and the word, bytes as ``\xNN``.

    """
    option = "a command-line argument"
    for word in words:
        flag = word.split("=", 1)[0] if word.startswith("-") else None
        try:
            word.encode("utf-8")
        except UnicodeEncodeError as exc:
            value = word.split("=", 1)[1] if flag and "=" in word else word
            shown = os.fsencode(value).decode("utf-8", "backslashreplace")
            raise ConfigError(
                f"{flag or option} is not valid UTF-8: {shown}",
                "pass a UTF-8 path or value (rename a file or directory whose name is not UTF-8)",
            ) from exc
        option = flag or option


def path_arg(text: str) -> Path:
    """Argparse ``type`` for a local path; an empty string is an argument error, not ``.``."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text).expanduser()


def uri_arg(text: str) -> str:
    """Argparse ``type`` for a path or ``s3://`` URI; an empty string is an argument error."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path or URI, got an empty string")
    return text


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set key=value`` overrides."""
    parser.add_argument(
        "--config",
        type=path_arg,
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


def device_name(args: argparse.Namespace, settings: RuntimeSettings) -> str:
    """``--device``, else ``SSLMEM_DEVICE``; a bad value is named as the flag or the variable.

    Raises:
        ConfigError: Unknown device, or CUDA requested where there is none.

    """
    from sslmem.device import resolve_device  # imports torch: only for commands that compute

    name: str = args.device if args.device is not None else settings.device
    try:
        resolve_device(name)
    except ConfigError as exc:
        source = "--device" if args.device is not None else "SSLMEM_DEVICE"
        raise ConfigError(f"{source}: {exc.problem}", exc.fix) from exc
    return name
