"""UnitMem of every unit of an encoder's layers (Wang et al., NeurIPS 2024), to a directory.

``sslmem unitmem`` is :func:`units_to_dir`: the adapter parses, this loads, measures and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.workflow._common import (
    ProgressFactory,
    process_settings,
    progress_bar,
    scored_point_count,
    views_augmentation,
)

if TYPE_CHECKING:
    from sslmem.memorization.layer_scoring import TableFormat
    from sslmem.memorization.unit_scoring import UnitMemReport
    from sslmem.memorization.unitmem import Reduction


@dataclass(frozen=True)
class WrittenUnits:
    """A UnitMem report written by :func:`units_to_dir`.

    Attributes:
        report: Per-unit UnitMem and the per-layer summary.
        files: The paths written (table, summary, figure).

    """

    report: UnitMemReport
    files: list[Path]


def units_to_dir(
    *,
    encoder: Path | str,
    manifest_path: Path | str,
    config: ExperimentConfig,
    out_dir: Path,
    layers: str | tuple[str, ...] = "stages",
    reduction: Reduction = "mean",
    data_root: Path | None = None,
    augmentation: Literal["checkpoint", "config"] = "checkpoint",
    fmt: TableFormat = "parquet",
    plots: bool = True,
    device: str | None = None,
    settings: RuntimeSettings | None = None,
    progress: ProgressFactory | None = None,
) -> WrittenUnits:
    """UnitMem of ``encoder``'s units on the split's points (``config.scoring.sets``).

    Args:
        encoder: The encoder checkpoint (f, the candidate, for the paper's UnitMem).
        manifest_path: The split manifest (path or store URI).
        config: Experiment config (``scoring``: K, seed, chunk size, sets; ``augmentation``).
        out_dir: Output directory (checked before the work).
        layers: ``"stages"`` or layer names.
        reduction: ``mean`` (paper) or ``median`` (authors' code) over the other points.
        data_root: Local dataset directory (default ``config.data.root``).
        augmentation: Views from the encoder's training augmentation or the config's.
        fmt: Table format.
        plots: Also draw ``unitmem.png``.
        device: Compute device; default ``SSLMEM_DEVICE``.
        settings: Runtime settings (default: from the environment).
        progress: Opens a progress bar.

    Raises:
        ConfigError: ``out_dir`` is not a usable directory; a bad layer name.
        CheckpointError, DataError, StoreError: The inputs cannot be read.

    """
    from sslmem.data.splits import load_manifest, manifest_dataset
    from sslmem.device import resolve_device
    from sslmem.memorization.unit_scoring import score_units, write_unit_report
    from sslmem.models.checkpoint import load_checkpoint
    from sslmem.outputs import check_output_dir
    from sslmem.reporting import UNITMEM_FILE, unitmem_figure

    out = Path(out_dir)
    check_output_dir(out)  # a directory, writable, names UTF-8 within NAME_MAX: before the work
    settings = process_settings(settings)
    compute = resolve_device(device or settings.device)
    manifest = load_manifest(manifest_path, settings)
    dataset = manifest_dataset(manifest, data_root or config.data.root)
    checkpoint = load_checkpoint(encoder)
    total = scored_point_count(manifest, config.scoring) if progress is not None else 0
    with progress_bar(progress, "unitmem", total) as update:
        report = score_units(
            checkpoint,
            dataset,
            manifest,
            scoring=config.scoring,
            augment_spec=views_augmentation(checkpoint, config, augmentation),
            layers=layers,
            reduction=reduction,
            device=compute,
            progress=update,
        )
    figures = [unitmem_figure(report.table, out / UNITMEM_FILE)] if plots else []
    written = write_unit_report(report, out, fmt=fmt)  # summary last
    return WrittenUnits(report, [*written, *figures])
