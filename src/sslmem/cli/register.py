"""``sslmem register``: register an externally trained encoder for the scoring service."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem register``."""
    parser.add_argument("--encoder", type=Path, required=True, help="sslmem checkpoint file")
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument(
        "--split", required=True, help="split manifest URI the encoder was trained on"
    )
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument(
        "--reference",
        metavar="MODEL_URI",
        help="reference encoder, models:/NAME/N (an @alias is resolved to its number now)",
    )
    role.add_argument(
        "--as-reference",
        action="store_true",
        help="register this encoder as a reference (never scored itself)",
    )
    parser.add_argument("--layer", default="backbone", help="representation layer to score")
    parser.add_argument("--seed", type=int, help="training seed (default: checkpoint metadata)")
    parser.add_argument(
        "--evaluation",
        type=Path,
        metavar="FILE",
        help="the encoder's downstream accuracies: the JSON `sslmem evaluate --out FILE` wrote "
        "(without them the judgement cannot weigh more memorisation against an accuracy gain)",
    )


def run(args: argparse.Namespace) -> int:
    """Register the encoder; print the new version."""
    from sslmem.workflow.register_external import register_external_encoder

    version = register_external_encoder(
        args.encoder,
        model_name=args.model,
        split_uri=args.split,
        reference_uri=None if args.as_reference else args.reference,
        layer=args.layer,
        seed=args.seed,
        evaluation=args.evaluation,
    )
    role = "reference" if args.as_reference else f"candidate of {args.reference}, status pending"
    print(f"registered {version.uri} ({role})")
    return 0
