"""``sslmem score``: SSLMem of candidate vs reference checkpoints on a split's sets.

Exit status: 0 when a report was written, whatever the verdict, unless ``--fail-on`` asks for 1
on a ``failed`` (or also an ``inconclusive``) verdict; 2 on an error (nothing written).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sslmem.cli.common import add_config_arguments, add_device_argument, experiment_config
from sslmem.errors import ConfigError

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
    parser.add_argument("--mode", choices=["pair", "anchor"], help="paper (pair) or clean anchor")
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
    """Check the output, load, score, write the report as a whole, print the verdict."""
    # Imported here so that building the parser (every sslmem command) stays light.
    from tqdm import tqdm

    from sslmem.config import RuntimeSettings
    from sslmem.data.splits import load_manifest, manifest_dataset
    from sslmem.device import resolve_device
    from sslmem.memorization.layer_scoring import score_layers, write_layer_report
    from sslmem.memorization.layers import select_layers
    from sslmem.memorization.scoring import (
        check_report_dir,
        score_split,
        select_points,
        write_score_outputs,
    )
    from sslmem.memorization.sharding import (
        merge_shards,
        parse_range,
        read_shards,
        score_shard,
        write_shard,
    )
    from sslmem.models.checkpoint import load_checkpoint, recorded_augmentation
    from sslmem.reporting import LAYERMEM_FILE, layermem_figure

    if args.grid_k < 1:
        raise ConfigError(f"--grid-k must be >= 1, got {args.grid_k}", "pass e.g. --grid-k 16")
    if args.layers is not None and (args.shard or args.merge):
        raise ConfigError(
            "--layers cannot be sharded",
            "score the layers in an unsharded run (no --shard/--merge)",
        )
    shard = parse_range(args.shard) if args.shard else None  # before the work
    args.overrides = _overrides(args)
    config = experiment_config(args)
    if shard is None:
        check_report_dir(args.out)  # before the work, not after it
    elif args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file", "pass a directory for the shard tables")
    settings = RuntimeSettings()
    device = resolve_device(args.device or settings.device)
    manifest = load_manifest(args.split, settings)
    dataset = manifest_dataset(manifest, args.data_root or config.data.root)
    candidates = [load_checkpoint(p) for p in args.candidate]
    references = [load_checkpoint(p) for p in args.reference]
    augment_spec = config.augmentation
    if args.augmentation == "checkpoint":
        augment_spec, _ = recorded_augmentation(candidates[0], config.augmentation)
    if args.layers is not None:  # resolved before any work, so a bad name fails at once
        select_layers([c.encoder for c in [*candidates, *references]], args.layers)
    total = len(
        select_points(
            manifest,
            config.scoring.sets,
            shared_sample=config.scoring.shared_sample,
            seed=config.scoring.seed,
        )[0]
    )
    waivers = {
        "allow_cross_split": args.allow_cross_split,
        "allow_missing_provenance": args.allow_missing_provenance,
    }
    if shard is not None:
        start, stop = shard
        with tqdm(total=stop - start, unit="pt", desc="shard", disable=args.no_progress) as bar:
            table = score_shard(
                candidates,
                references,
                dataset,
                manifest,
                start=start,
                stop=stop,
                scoring=config.scoring,
                augment_spec=augment_spec,
                device=device,
                progress=bar.update,
                **waivers,
            )
        path = write_shard(table, args.out)
        print(f"wrote {path} ({stop - start} of {table.info.total} points)")
        return 0
    if args.merge:
        report = merge_shards(
            read_shards(args.merge),
            candidates,
            references,
            manifest,
            scoring=config.scoring,
            augment_spec=augment_spec,
            **waivers,
        )
    else:
        with tqdm(total=total, unit="pt", desc="scoring", disable=args.no_progress) as bar:
            report = score_split(
                candidates,
                references,
                dataset,
                manifest,
                scoring=config.scoring,
                augment_spec=augment_spec,
                device=device,
                progress=bar.update,
                **waivers,
            )
    layer_report = None
    if args.layers is not None:
        with tqdm(total=total, unit="pt", desc="layers", disable=args.no_progress) as bar:
            layer_report = score_layers(
                candidates,
                references,
                dataset,
                manifest,
                scoring=config.scoring,
                augment_spec=augment_spec,
                layers=args.layers,
                device=device,
                progress=bar.update,
                **waivers,
            )

    def write_layers(staging: Path) -> list[Path]:
        if layer_report is None:
            return []
        files = write_layer_report(layer_report, staging, fmt=args.format)
        if not args.no_plots:
            files.append(layermem_figure(layer_report.table, staging / LAYERMEM_FILE))
        return files

    written = write_score_outputs(
        report,
        args.out,
        fmt=args.format,
        images=dataset.images,
        plots=not args.no_plots,
        grid_k=args.grid_k,
        extra=write_layers,
    )
    print(report.summary.format_table())
    if layer_report is not None:
        print(layer_report.summary.format_table())
    print("wrote " + ", ".join(str(path) for path in written))
    outcome = report.summary.verdict.outcome
    if args.fail_on == "failed" and outcome == "failed":
        return VERDICT_EXIT
    if args.fail_on == "inconclusive" and outcome != "passed":
        return VERDICT_EXIT
    return 0
