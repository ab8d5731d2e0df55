"""``sslmem score``: SSLMem of candidate vs reference checkpoints on a split's sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslmem.cli.common import add_config_arguments, add_device_argument, experiment_config
from sslmem.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem score``."""
    parser.add_argument("--candidate", nargs="+", required=True, metavar="CKPT")
    parser.add_argument("--reference", nargs="+", required=True, metavar="CKPT")
    parser.add_argument("--split", required=True, help="split manifest (path or s3:// URI)")
    parser.add_argument("--sets", help="comma-separated: candidate,independent,extra,shared")
    parser.add_argument("--views", type=int, help="K view pairs per point")
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
    parser.add_argument("--no-progress", action="store_true")
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
    }
    overrides = [f"scoring.{k}={v}" for k, v in flags.items() if v is not None]
    if args.sets:
        overrides.append(f"scoring.sets=[{args.sets}]")
    return [*args.overrides, *overrides]


def run(args: argparse.Namespace) -> int:
    """Load, score, write, print the verdict."""
    # Imported here so that building the parser (every sslmem command) stays light.
    from tqdm import tqdm

    from sslmem.config import RuntimeSettings
    from sslmem.data.datasets import load_dataset
    from sslmem.data.splits import load_manifest
    from sslmem.device import resolve_device
    from sslmem.memorization.layer_scoring import score_layers, write_layer_report
    from sslmem.memorization.layers import select_layers
    from sslmem.memorization.scoring import score_split, select_points, write_score_report
    from sslmem.models.checkpoint import load_checkpoint
    from sslmem.reporting import LAYERMEM_FILE, layermem_figure, write_score_figures

    if args.grid_k < 1:
        raise ConfigError(f"--grid-k must be >= 1, got {args.grid_k}", "pass e.g. --grid-k 16")
    args.overrides = _overrides(args)
    config = experiment_config(args)
    settings = RuntimeSettings()
    device = resolve_device(args.device or settings.device)
    manifest = load_manifest(args.split, settings)
    dataset = load_dataset(
        manifest.dataset.name,
        split="train" if manifest.dataset.split == "train" else "test",
        root=args.data_root or config.data.root,
    )
    candidates = [load_checkpoint(p) for p in args.candidate]
    references = [load_checkpoint(p) for p in args.reference]
    augment_spec = config.augmentation
    recorded = candidates[0].metadata.get("augmentation")
    if args.augmentation == "checkpoint" and recorded is not None:
        augment_spec = type(augment_spec).model_validate(recorded)
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
            )
    figures: dict[str, Path] = {}
    if not args.no_plots:
        # Before the report: summary.json is written last, so its presence means "complete".
        figures = write_score_figures(report.columns, args.out, dataset.images, grid_k=args.grid_k)
        if layer_report is not None:
            figures["layermem"] = layermem_figure(layer_report.table, args.out / LAYERMEM_FILE)
    layer_files = (
        [] if layer_report is None else write_layer_report(layer_report, args.out, fmt=args.format)
    )
    summary_path = write_score_report(report, args.out, fmt=args.format)
    print(report.summary.format_table())
    if layer_report is not None:
        print(layer_report.summary.format_table())
    written = [args.out / f"scores.{args.format}", summary_path, *layer_files, *figures.values()]
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
