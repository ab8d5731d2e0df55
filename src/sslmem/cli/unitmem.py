"""``sslmem unitmem``: UnitMem of every unit of an encoder's layers on a split's points."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslmem.cli.common import add_config_arguments, add_device_argument, experiment_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem unitmem``."""
    parser.add_argument(
        "--encoder", required=True, metavar="CKPT", help="the candidate encoder f (checkpoint)"
    )
    parser.add_argument("--split", required=True, help="split manifest (path or s3:// URI)")
    parser.add_argument(
        "--sets",
        default="candidate",
        help="comma-separated sets whose points are pooled (default: candidate)",
    )
    layers = parser.add_mutually_exclusive_group()
    layers.add_argument("--layer", help="one layer, e.g. backbone.blocks.2")
    layers.add_argument(
        "--layers",
        metavar="stages|NAME,...",
        help="the backbone's stages (default) or comma-separated layer names",
    )
    parser.add_argument("--views", type=int, help="K augmented views per point")
    parser.add_argument("--seed", type=int, help="view seed")
    parser.add_argument("--chunk-size", type=int, help="points per forward (bounds memory)")
    parser.add_argument(
        "--reduction",
        choices=["mean", "median"],
        default="mean",
        help="mu_-max over the other points: mean (paper, default) or median (authors' code)",
    )
    parser.add_argument("--data-root", type=Path, help="local directory of the dataset")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument(
        "--augmentation",
        choices=["checkpoint", "config"],
        default="checkpoint",
        help="views drawn with the encoder's training augmentation (default) or the config's",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip unitmem.png")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    add_config_arguments(parser)
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Load, measure, write, print the per-layer summary."""
    from tqdm import tqdm

    from sslmem.config import RuntimeSettings
    from sslmem.data.splits import load_manifest, manifest_dataset
    from sslmem.device import resolve_device
    from sslmem.errors import ConfigError
    from sslmem.memorization.layers import parse_names
    from sslmem.memorization.scoring import select_points
    from sslmem.memorization.unit_scoring import score_units, write_unit_report
    from sslmem.models.checkpoint import load_checkpoint, recorded_augmentation
    from sslmem.outputs import check_output_dir
    from sslmem.reporting import UNITMEM_FILE, unitmem_figure

    sets = parse_names(args.sets, "--sets", "candidate")
    flags = {"views": args.views, "seed": args.seed, "chunk_size": args.chunk_size}
    args.overrides = [
        *args.overrides,
        *(f"scoring.{k}={v}" for k, v in flags.items() if v is not None),
        f"scoring.sets=[{','.join(sets)}]",
    ]
    config = experiment_config(args)
    layers: str | tuple[str, ...]
    if args.layer is not None:
        layers = parse_names(args.layer, "--layer", "backbone.blocks.2")
        if len(layers) != 1:
            raise ConfigError(f"--layer takes one name, got {args.layer!r}", "use --layers A,B")
    else:
        layers = args.layers if args.layers is not None else "stages"
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a directory", "pass a directory")
    check_output_dir(args.out)  # writable, names UTF-8 and within NAME_MAX: before the work
    settings = RuntimeSettings()
    device = resolve_device(args.device or settings.device)
    manifest = load_manifest(args.split, settings)
    dataset = manifest_dataset(manifest, args.data_root or config.data.root)
    checkpoint = load_checkpoint(args.encoder)
    augment_spec = config.augmentation
    if args.augmentation == "checkpoint":
        augment_spec, _ = recorded_augmentation(checkpoint, config.augmentation)
    scoring = config.scoring
    total = len(
        select_points(
            manifest, scoring.sets, shared_sample=scoring.shared_sample, seed=scoring.seed
        )[0]
    )
    with tqdm(total=total, unit="pt", desc="unitmem", disable=args.no_progress) as bar:
        report = score_units(
            checkpoint,
            dataset,
            manifest,
            scoring=scoring,
            augment_spec=augment_spec,
            layers=layers,
            reduction=args.reduction,
            device=device,
            progress=bar.update,
        )
    figures = [] if args.no_plots else [unitmem_figure(report.table, args.out / UNITMEM_FILE)]
    written = write_unit_report(report, args.out, fmt=args.format)  # summary last
    print(report.summary.format_table())
    print("wrote " + ", ".join(str(path) for path in [*written, *figures]))
    return 0
