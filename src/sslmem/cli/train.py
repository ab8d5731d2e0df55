r"""``sslmem train``: train the candidate or reference encoder of a split.

Example (single process)::

    sslmem train --split split.json --role candidate --method simclr --arch small_cnn \\
        --epochs 200 --batch-size 128 --out runs/f

Several processes (one per GPU, or gloo on CPU)::

    torchrun --nproc-per-node 4 --no-python sslmem train --split split.json --role reference \\
        ... --out runs/g
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
    uri_arg,
)

# Flag -> config field; flags override --config and --set.
_FLAG_FIELDS = {
    "method": "training.method",
    "arch": "model.arch",
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "lr": "training.lr",
    "seed": "training.seed",
    "checkpoint_every": "training.checkpoint_every",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem train``."""
    parser.add_argument(
        "--split", type=uri_arg, required=True, help="split manifest (path or s3:// URI)"
    )
    parser.add_argument("--role", required=True, choices=["candidate", "reference"])
    parser.add_argument(
        "--method", help="SSL method: simclr, byol, simsiam, dino, mae (training.method)"
    )
    parser.add_argument("--arch", help="encoder architecture (model.arch)")
    parser.add_argument("--epochs", type=int, help="training.epochs")
    parser.add_argument(
        "--batch-size", type=int, help="images per optimizer step, all processes together"
    )
    parser.add_argument("--lr", type=float, help="base learning rate (training.lr)")
    parser.add_argument("--seed", type=int, help="training seed (training.seed)")
    parser.add_argument("--checkpoint-every", type=int, help="resume file every N epochs")
    parser.add_argument("--data-root", type=path_arg, help="local directory of the dataset")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its resume file"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--out", type=path_arg, required=True, help="run directory")
    add_config_arguments(parser)
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Train (:func:`sslmem.workflow.train.train_to_dir`) and print a JSON summary (rank 0)."""
    # Imported here so that building the parser (every sslmem command) stays light.
    from sslmem.config import RuntimeSettings
    from sslmem.workflow.train import train_to_dir

    flags = {field: getattr(args, name) for name, field in _FLAG_FIELDS.items()}
    args.overrides = [
        *args.overrides,
        *(f"{field}={value}" for field, value in flags.items() if value is not None),
    ]
    settings = RuntimeSettings()
    trained = train_to_dir(
        manifest_path=args.split,
        config=experiment_config(args),
        role=args.role,
        out_dir=args.out,
        data_root=args.data_root,
        device=device_name(args, settings),
        resume=args.resume,
        progress=not args.no_progress,
        settings=settings,
    )
    if trained.is_main:
        result = trained.result
        summary = {
            "checkpoint": str(result.checkpoint),
            "resume_checkpoint": str(result.resume_checkpoint),
            "metrics": str(trained.metrics),
            "role": result.role,
            "method": result.method,
            "arch": result.arch,
            "seed": result.seed,
            "epochs": result.epochs,
            "steps": result.steps,
            "num_train": result.num_train,
            "final_loss": result.final_loss,
            "resumed_from_epoch": result.resumed_from_epoch,
            "split_manifest_sha256": trained.manifest_sha256,
        }
        print(json.dumps(summary, indent=2))
    return 0
