"""``sslmem evaluate``: downstream kNN and linear-probe accuracy of an encoder checkpoint.

Features are extracted with the preprocessing the encoder was trained with (its checkpoint's
augmentation spec: output size, mean, std) from the train split (kNN bank, probe training set)
and the test split of a labelled dataset. The work is
:func:`sslmem.workflow.evaluate.evaluate_role`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import json

from sslmem.cli.common import (
    add_config_arguments,
    add_device_argument,
    device_name,
    experiment_config,
    path_arg,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem evaluate``."""
    parser.add_argument("--encoder", type=path_arg, required=True, metavar="CKPT")
    parser.add_argument(
        "--data",
        help="labelled dataset, e.g. fashion-mnist (default: the one the encoder was trained on, "
        "else data.dataset)",
    )
    parser.add_argument("--data-root", type=path_arg, help="local directory of the dataset")
    parser.add_argument("--out", type=path_arg, help="also write the JSON result to this file")
    add_config_arguments(parser)
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print (and optionally write) the JSON record."""
    # Imported here so that building the parser (every sslmem command) stays light.
    from sslmem.config import RuntimeSettings
    from sslmem.workflow.evaluate import evaluate_role

    settings = RuntimeSettings()
    evaluation = evaluate_role(
        args.encoder,
        experiment_config(args),
        dataset=args.data,
        data_root=args.data_root,
        out=args.out,
        device=device_name(args, settings),
        settings=settings,
    )
    print(json.dumps(evaluation.to_record(), indent=2, sort_keys=True))
    return 0
