"""``sslmem unitmem``: UnitMem of every unit of an encoder's layers on a split's points."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslmem.cli.common import add_config_arguments, add_device_argument, experiment_config

if TYPE_CHECKING:
    from tqdm import tqdm


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
    """Measure (:func:`sslmem.workflow.unitmem.units_to_dir`), print the per-layer summary."""
    from tqdm import tqdm

    from sslmem.errors import ConfigError
    from sslmem.memorization.layers import parse_names
    from sslmem.workflow.unitmem import units_to_dir

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

    def progress(what: str, total: int) -> tqdm[Any]:
        return tqdm(total=total, unit="pt", desc=what, disable=args.no_progress)

    written = units_to_dir(
        encoder=args.encoder,
        manifest_path=args.split,
        config=config,
        out_dir=args.out,
        layers=layers,
        reduction=args.reduction,
        data_root=args.data_root,
        augmentation=args.augmentation,
        fmt=args.format,
        plots=not args.no_plots,
        device=args.device,
        progress=progress,
    )
    print(written.report.summary.format_table())
    print("wrote " + ", ".join(str(path) for path in written.files))
    return 0
