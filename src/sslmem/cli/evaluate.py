"""``sslmem evaluate``: downstream kNN and linear-probe accuracy of an encoder checkpoint.

Features are extracted with the preprocessing the encoder was trained with (its checkpoint's
augmentation spec: output size, mean, std) from the train split (kNN bank, probe training set)
and the test split of a labelled dataset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from sslmem.atomic import atomic_write_bytes
from sslmem.cli.common import (
    add_config_arguments,
    add_device_argument,
    device_name,
    experiment_config,
    path_arg,
)
from sslmem.errors import ConfigError, DataError
from sslmem.outputs import check_output_file

if TYPE_CHECKING:  # torch-importing modules load in run(), so --help stays light
    pass


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


def _write_json(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def run(args: argparse.Namespace) -> int:
    """Evaluate and print (and optionally write) the JSON result."""
    # Imported here so that building the parser (every sslmem command) stays light.
    from sslmem.config import RuntimeSettings
    from sslmem.data.datasets import available_datasets, load_dataset
    from sslmem.device import resolve_device
    from sslmem.evaluation import evaluate_encoder
    from sslmem.models.checkpoint import load_checkpoint, recorded_augmentation

    if args.data is not None and args.data not in available_datasets():
        raise ConfigError(
            f"--data: unknown dataset {args.data!r}",
            f"choose one of {', '.join(available_datasets())}",
        )
    config = experiment_config(args)
    if args.out is not None:
        check_output_file(args.out, what="result file")
    device = resolve_device(device_name(args, RuntimeSettings()))
    loaded = load_checkpoint(args.encoder)
    metadata = loaded.metadata
    dataset_ref = metadata.get("dataset")
    trained_on = dataset_ref.get("name") if isinstance(dataset_ref, dict) else None
    name = args.data or trained_on or config.data.dataset
    root = args.data_root or config.data.root
    train = load_dataset(name, split="train", root=root)
    test = load_dataset(name, split="test", root=root)
    encoder = loaded.encoder
    if train.num_channels != encoder.in_channels:
        raise DataError(
            f"dataset {name!r} has {train.num_channels}-channel images, the encoder expects "
            f"{encoder.in_channels}",
            "evaluate on a dataset like the one the encoder was trained on (--data)",
        )
    spec, spec_source = recorded_augmentation(loaded, config.augmentation)
    result = evaluate_encoder(
        encoder, train, test, config=config.evaluation, augment_spec=spec, device=device
    )
    record = {
        "encoder": str(args.encoder),
        "encoder_sha256": loaded.sha256,
        "arch": loaded.header.arch,
        "role": metadata.get("role"),
        "method": metadata.get("method"),
        "dataset": name,
        "augmentation_source": spec_source,
        **result.to_dict(),
    }
    text = json.dumps(record, indent=2, sort_keys=True)
    print(text)
    if args.out is not None:
        _write_json(args.out, text + "\n")
    return 0
