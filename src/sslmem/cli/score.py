"""``sslmem score``: SSLMem of candidate vs reference checkpoints on a split's sets.

The work is :func:`sslmem.workflow.score.score_to_dir` (``--merge`` included) and
:func:`~sslmem.workflow.score.score_pair_shard` (``--shard``); this module parses and prints.

Exit status: 0 when a report was written, whatever the verdict, unless ``--fail-on`` asks for 1
on a ``failed`` (or also an ``inconclusive``) verdict; 2 on an error (nothing written).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslmem.cli.common import add_config_arguments, add_device_argument, experiment_config
from sslmem.errors import ConfigError
from sslmem.estimators import ESTIMATORS

if TYPE_CHECKING:
    from tqdm import tqdm

#: Exit status of a written report whose verdict ``--fail-on`` rejects (errors exit 2).
VERDICT_EXIT = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem score``."""
    parser.add_argument("--candidate", nargs="+", required=True, metavar="CKPT")
    parser.add_argument("--reference", nargs="+", required=True, metavar="CKPT")
    parser.add_argument("--split", required=True, help="split manifest (path or s3:// URI)")
    parser.add_argument(
        "--sets", help="comma-separated, each once: candidate,independent,extra,shared"
    )
    parser.add_argument(
        "--views", type=int, help="K views per point (view pairs with scoring.estimator=pairs)"
    )
    parser.add_argument(
        "--mode",
        choices=["pair", "anchor"],
        help="paper (pair) or clean anchor; a recipe's estimator that does not serve it gives way "
        "to the mode's default (said on stderr)",
    )
    parser.add_argument(
        "--estimator",
        choices=sorted(ESTIMATORS),
        help="ustat (pair mode's default: all pairs of K views) or pairs (K independent pairs; "
        "anchor mode's)",
    )
    parser.add_argument("--distance", choices=["l2", "cosine"])
    parser.add_argument("--layer", help="representation layer, e.g. backbone or head")
    parser.add_argument(
        "--layers",
        metavar="stages|NAME,...",
        help="also write per-layer SSLMem, LayerMem and ΔLayerMem (layers.*, layer_scores.*, "
        "layers.json, layermem.png): the encoder's stages or comma-separated layer names",
    )
    parser.add_argument("--seed", type=int, help="view seed")
    parser.add_argument("--chunk-size", type=int, help="points per forward (bounds memory)")
    parser.add_argument(
        "--view-batch", type=int, help="views per point per forward (bounds memory for any K)"
    )
    parser.add_argument("--data-root", type=Path, help="local directory of the dataset")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument(
        "--augmentation",
        choices=["checkpoint", "config"],
        default="checkpoint",
        help="views drawn with the candidate's training augmentation (default) or the config's",
    )
    parser.add_argument(
        "--no-plots",
        action="store_true",
        help="skip the PNGs (histogram per set, grid of the most/least memorised candidates)",
    )
    parser.add_argument("--grid-k", type=int, default=16, help="images per block of the grid")
    parser.add_argument(
        "--allow-cross-split",
        action="store_true",
        help="score encoders trained on another split (recorded in summary.json and the table)",
    )
    parser.add_argument(
        "--allow-missing-provenance",
        action="store_true",
        help="score checkpoints that do not record role/split/recipe (recorded, unchecked)",
    )
    parser.add_argument(
        "--fail-on",
        choices=["failed", "inconclusive"],
        help="exit 1 on a failed verdict ('inconclusive': on any verdict but passed); "
        "default: exit 0 whenever the report is written",
    )
    parser.add_argument("--no-progress", action="store_true")
    sharded = parser.add_mutually_exclusive_group()
    sharded.add_argument(
        "--shard",
        metavar="START:STOP",
        help="score only points START..STOP-1 of the scored sets (in --sets order) and write "
        "their table shard-START-STOP.parquet into --out (merge with --merge)",
    )
    sharded.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="merge the shard tables in DIR... (written by --shard, covering every point once) "
        "into the report the unsharded run writes",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    add_config_arguments(parser)
    add_device_argument(parser)


def _overrides(args: argparse.Namespace) -> list[str]:
    flags = {
        "views": args.views,
        "mode": args.mode,
        "estimator": args.estimator,
        "distance": args.distance,
        "layer": args.layer,
        "seed": args.seed,
        "chunk_size": args.chunk_size,
        "view_batch": args.view_batch,
    }
    overrides = [f"scoring.{k}={v}" for k, v in flags.items() if v is not None]
    if args.sets is not None:
        overrides.append(f"scoring.sets={json.dumps(_parse_sets(args.sets))}")
    return [*args.overrides, *overrides]


def _parse_sets(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise ConfigError(
            f"--sets {text!r} names an empty set",
            "pass comma-separated set names, e.g. --sets candidate,independent,extra",
        )
    return names


def run(args: argparse.Namespace) -> int:
    """Check the flags, score (:mod:`sslmem.workflow.score`), print the verdict."""
    # Imported here so that building the parser (every sslmem command) stays light.
    from tqdm import tqdm

    from sslmem.workflow.score import ReportOptions, Waivers, score_pair_shard, score_to_dir

    if args.grid_k < 1:
        raise ConfigError(f"--grid-k must be >= 1, got {args.grid_k}", "pass e.g. --grid-k 16")
    if args.layers is not None and (args.shard or args.merge):
        raise ConfigError(
            "--layers cannot be sharded",
            "score the layers in an unsharded run (no --shard/--merge)",
        )
    if args.shard:
        from sslmem.memorization.sharding import parse_range

        parse_range(args.shard)  # a bad range fails before the config is read
    args.overrides = _overrides(args)

    def progress(what: str, total: int) -> tqdm[Any]:
        return tqdm(total=total, unit="pt", desc=what, disable=args.no_progress)

    common: dict[str, Any] = {
        "candidate_checkpoints": args.candidate,
        "reference_checkpoints": args.reference,
        "manifest_path": args.split,
        "config": experiment_config(args),
        "out_dir": args.out,
        "data_root": args.data_root,
        "augmentation": args.augmentation,
        "waivers": Waivers(args.allow_cross_split, args.allow_missing_provenance),
        "device": args.device,
        "progress": progress,
    }
    if args.shard:
        shard = score_pair_shard(shard=args.shard, **common)
        print(f"wrote {shard.path} ({shard.stop - shard.start} of {shard.total} points)")
        return 0
    options = ReportOptions(
        fmt=args.format, plots=not args.no_plots, grid_k=args.grid_k, layers=args.layers
    )
    written = score_to_dir(shards=args.merge, options=options, **common)
    print(written.report.summary.format_table())
    if written.layer_report is not None:
        print(written.layer_report.summary.format_table())
    print("wrote " + ", ".join(str(path) for path in written.files))
    outcome = written.report.summary.verdict.outcome
    if args.fail_on == "failed" and outcome == "failed":
        return VERDICT_EXIT
    if args.fail_on == "inconclusive" and outcome != "passed":
        return VERDICT_EXIT
    return 0
