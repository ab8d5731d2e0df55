"""``sslmem split``: make the protocol's split of a dataset and write its manifest."""

from __future__ import annotations

import argparse

from sslmem.cli.common import add_config_arguments, experiment_config, path_arg, uri_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem split``."""
    add_config_arguments(parser)
    parser.add_argument("--data", help="dataset name (overrides data.dataset)")
    parser.add_argument("--data-root", type=path_arg, help="local dataset directory")
    parser.add_argument("--seed", type=int, help="split seed (overrides split.seed)")
    parser.add_argument("--pool-size", type=int, help="use a seeded subset of this size")
    parser.add_argument(
        "--out", type=uri_arg, required=True, help="manifest destination: a path or s3://bucket/key"
    )


def run(args: argparse.Namespace) -> int:
    """Make the split and write the manifest (:func:`sslmem.workflow.split.write_split`)."""
    # Imported here so that building the parser (every sslmem command) stays light.
    from sslmem.workflow.split import write_split

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.dataset={args.data}")
    if args.seed is not None:
        overrides.append(f"split.seed={args.seed}")
    if args.pool_size is not None:
        overrides.append(f"split.pool_size={args.pool_size}")
    args.overrides = overrides
    manifest = write_split(experiment_config(args), args.out, data_root=args.data_root)
    sizes = {
        name: len(manifest.set_indices(name))
        for name in ("shared", "candidate", "independent", "extra")
    }
    print(f"wrote {args.out}: {sizes}, manifest sha256 {manifest.manifest_sha256}")
    return 0
