"""Score a split unit by unit: UnitMem of every unit of the chosen layers of one encoder.

Wang, Kaleem, Dziedzic, Backes, Papernot, Boenisch, "Localizing Memorization in SSL Vision
Encoders" (NeurIPS 2024, arXiv 2409.19069), Sec. 4: ``UnitMem(u) = (mu_max - mu_-max) /
(mu_max + mu_-max)`` over a set of training points. Needs only the candidate encoder f.

The library function behind ``sslmem unitmem``: check the encoder against the split, draw K
views per point, hook every layer in one pass, return a per-unit table with provenance.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from sslmem import __version__
from sslmem.atomic import atomic_write_bytes
from sslmem.augment import AugmentationSpec
from sslmem.config import ScoringConfig
from sslmem.data.datasets import ImageDataset
from sslmem.data.splits import SplitManifest
from sslmem.errors import ManifestMismatchError, ScoringError
from sslmem.memorization.layer_scoring import TableFormat, write_table
from sslmem.memorization.layers import STAGES, select_layers
from sslmem.memorization.scoring import CheckpointRef, _ref, select_points
from sslmem.memorization.unitmem import Reduction, unit_activations_by_layer, unitmem_per_unit
from sslmem.models.checkpoint import LoadedCheckpoint

#: Columns of the per-unit table.
UNIT_COLUMNS = (
    "layer",
    "unit",
    "unitmem",
    "argmax_sample_index",
    "argmax_set",
    "mu_max",
    "mu_rest",
)
UNIT_TABLE_FILE = "unitmem"  # + .parquet / .csv
UNIT_SUMMARY_FILE = "unitmem.json"


class UnitLayerSummary(BaseModel):
    """UnitMem statistics of one layer's units."""

    model_config = ConfigDict(frozen=True)

    layer: str
    units: int
    mean: float
    median: float
    max: float
    top_unit: int
    top_sample_index: int


class UnitMemSummary(BaseModel):
    """Per-layer statistics and the provenance of a UnitMem run (``unitmem.json``)."""

    model_config = ConfigDict(frozen=True)

    layers: list[UnitLayerSummary]
    selection: str
    reduction: Reduction
    sets: list[str]
    points: int
    encoder: CheckpointRef
    role: str | None
    manifest_sha256: str
    dataset: dict[str, Any]
    augmentation: AugmentationSpec
    views: int
    seed: int
    chunk_size: int
    sslmem_version: str
    torch_version: str
    device: str
    seconds: float

    def format_table(self) -> str:
        """A compact text table: one line per layer."""
        lines = [f"{'layer':<28} {'units':>6} {'mean':>7} {'median':>7} {'max':>7}  top (point)"]
        lines += [
            f"{s.layer:<28} {s.units:>6} {s.mean:>7.4f} {s.median:>7.4f} {s.max:>7.4f}  "
            f"{s.top_unit} (#{s.top_sample_index})"
            for s in self.layers
        ]
        return "\n".join(lines)


class UnitMemReport(BaseModel):
    """The per-unit table (column arrays) and the summary."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    table: dict[str, Any]
    summary: UnitMemSummary


def check_encoder_split(checkpoint: LoadedCheckpoint, manifest: SplitManifest) -> None:
    """Refuse an encoder whose metadata records training on another split.

    Checkpoints without a recorded split hash (not written by ``sslmem train``) pass.

    Raises:
        ManifestMismatchError: The recorded hash differs from the manifest's.
    """
    recorded = checkpoint.metadata.get("split_manifest_sha256")
    if recorded is not None and recorded != manifest.manifest_sha256:
        raise ManifestMismatchError(
            f"encoder {checkpoint.path} was trained on split {recorded}, not on the manifest "
            f"being scored ({manifest.manifest_sha256})",
            "pass the split manifest the encoder was trained on (--split)",
        )


def _non_negative_layers(encoder: nn.Module, names: Sequence[str]) -> list[str]:
    return [n for n in names if isinstance(encoder.get_submodule(n), nn.ReLU | nn.ReLU6)]


def score_units(
    checkpoint: LoadedCheckpoint,
    dataset: ImageDataset,
    manifest: SplitManifest,
    *,
    scoring: ScoringConfig,
    augment_spec: AugmentationSpec,
    layers: str | Sequence[str] = "stages",
    reduction: Reduction = "mean",
    device: torch.device | None = None,
    progress: Callable[[int], object] | None = None,
) -> UnitMemReport:
    """UnitMem of every unit of ``layers`` over the points of ``scoring.sets`` (pooled).

    Args:
        checkpoint: The encoder (f, the candidate, for the paper's UnitMem).
        dataset: The data the manifest was made from (verified).
        manifest: The split; must be the one the encoder recorded, if it recorded one.
        scoring: ``views`` (K), ``seed``, ``chunk_size``, ``sets`` and ``shared_sample`` are
            used (mode, distance and layer are not).
        augment_spec: The augmentation distribution of the views.
        layers: ``"stages"`` (the backbone's stages from ``Encoder.stage_names``, or
            ``"backbone"`` when it declares none) or layer names (``Encoder.layer_names``).
        reduction: ``"mean"`` (paper) or ``"median"`` (authors' code) for ``mu_-max``.
        device: Compute device (default CPU).
        progress: Called with the number of points finished after each chunk.

    Returns:
        One row per (layer, unit) (:data:`UNIT_COLUMNS`) and the summary.

    Raises:
        ScoringError: A layer that is not scorable, fewer than two points, a channel mismatch,
            or a layer with negative mean activations (UnitMem is defined on non-negative
            activations, e.g. after a ReLU).
        ManifestMismatchError: The manifest does not match the dataset or the encoder's split.
    """
    manifest.verify_against(dataset)
    check_encoder_split(checkpoint, manifest)
    encoder = checkpoint.encoder
    if encoder.in_channels != dataset.num_channels:
        raise ScoringError(
            f"the encoder takes {encoder.in_channels}-channel images but dataset "
            f"{dataset.name!r} has {dataset.num_channels}",
            "score the dataset the encoder was trained on",
        )
    if isinstance(layers, str) and layers.strip() == STAGES:
        # The backbone's own stages: "head" is a signed linear projection, not an activation,
        # and a CNN's pooled "backbone" output repeats its last stage's per-channel means.
        stages = [n for n in encoder.stage_names() if n not in ("backbone", "head")]
        names = select_layers([encoder], stages or ["backbone"])
    else:
        names = select_layers([encoder], layers)
    device = device or torch.device("cpu")
    indices, set_names = select_points(
        manifest, scoring.sets, shared_sample=scoring.shared_sample, seed=scoring.seed
    )
    if len(indices) < 2:
        raise ScoringError(
            f"UnitMem compares a unit's activation on one point with the others, but the sets "
            f"{list(scoring.sets)} hold {len(indices)} point",
            "score more points (a larger split or more sets)",
        )
    started = time.perf_counter()
    activations = unit_activations_by_layer(
        encoder,
        dataset.images[torch.from_numpy(indices)],
        torch.from_numpy(indices),
        layers=names,
        augment_spec=augment_spec,
        views=scoring.views,
        seed=scoring.seed,
        device=device,
        chunk_size=scoring.chunk_size,
        view_batch=scoring.view_batch,
        autocast_bf16=scoring.autocast_bf16,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    negative = {n: float(mu.min()) for n, mu in activations.items() if bool((mu < 0).any())}
    if negative:
        shown = ", ".join(f"{n!r} (min {v:.3g})" for n, v in negative.items())
        relus = _non_negative_layers(encoder, encoder.layer_names())
        raise ScoringError(
            f"layers {shown} have negative mean activations; UnitMem (Wang et al., NeurIPS 2024) "
            "is defined on non-negative activations",
            "choose layers after a ReLU: --layers stages"
            + (f", or names from: {', '.join(relus[:20])}" if relus else ""),
        )
    columns: dict[str, list[Any]] = {key: [] for key in UNIT_COLUMNS}
    summaries = []
    for name in names:
        result = unitmem_per_unit(activations[name], reduction)
        units = result.unitmem.numel()
        argmax = result.argmax.numpy()
        columns["layer"] += [name] * units
        columns["unit"] += list(range(units))
        columns["unitmem"] += result.unitmem.double().tolist()
        columns["argmax_sample_index"] += indices[argmax].tolist()
        columns["argmax_set"] += set_names[argmax].astype(str).tolist()
        columns["mu_max"] += result.mu_max.double().tolist()
        columns["mu_rest"] += result.mu_rest.double().tolist()
        top = int(result.unitmem.argmax())
        summaries.append(
            UnitLayerSummary(
                layer=name,
                units=units,
                mean=float(result.unitmem.mean()),
                median=float(result.unitmem.median()),
                max=float(result.unitmem.max()),
                top_unit=top,
                top_sample_index=int(indices[argmax[top]]),
            )
        )
    summary = UnitMemSummary(
        layers=summaries,
        selection=layers if isinstance(layers, str) else ",".join(layers),
        reduction=reduction,
        sets=list(scoring.sets),
        points=len(indices),
        encoder=_ref(checkpoint),
        role=checkpoint.metadata.get("role"),
        manifest_sha256=manifest.manifest_sha256,
        dataset=manifest.dataset.model_dump(),
        augmentation=augment_spec,
        views=scoring.views,
        seed=scoring.seed,
        chunk_size=scoring.chunk_size,
        sslmem_version=__version__,
        torch_version=torch.__version__,
        device=f"{device} ({platform.processor() or platform.machine()})",
        seconds=seconds,
    )
    table = {key: np.asarray(values) for key, values in columns.items()}
    return UnitMemReport(table=table, summary=summary)


def write_unit_report(
    report: UnitMemReport, out_dir: Path, *, fmt: TableFormat = "parquet"
) -> list[Path]:
    """Write ``unitmem.<fmt>`` and then ``unitmem.json`` into ``out_dir``, each atomically.

    Returns:
        The paths written, the summary last.
    """
    table = write_table(report.table, UNIT_COLUMNS, out_dir / f"{UNIT_TABLE_FILE}.{fmt}", fmt)
    summary = out_dir / UNIT_SUMMARY_FILE
    atomic_write_bytes(summary, (report.summary.model_dump_json(indent=2) + "\n").encode())
    return [table, summary]
