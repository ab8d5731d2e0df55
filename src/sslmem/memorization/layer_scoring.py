"""Score a split layer by layer: per-layer SSLMem, LayerMem and ΔLayerMem.

Wang, Kaleem, Dziedzic, Backes, Papernot, Boenisch, "Localizing Memorization in SSL Vision
Encoders" (NeurIPS 2024, arXiv 2409.19069), Sec. 3: SSLMem computed on each layer's output;
LayerMem_l is its mean over the points after min-max normalising all layers' scores on one
common scale, ΔLayerMem_l = LayerMem_l - LayerMem_{l-1}.

The library function behind ``sslmem score --layers``; it takes the same inputs as
:func:`~sslmem.memorization.scoring.score_split`, runs the same checks, and hooks every layer in
one pass over the views (:func:`~sslmem.memorization.layermem.compute_layermem`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from sslmem import __version__
from sslmem.atomic import atomic_path, atomic_write_bytes
from sslmem.augment import AugmentationSpec
from sslmem.config import ScoringConfig
from sslmem.data.datasets import ImageDataset
from sslmem.data.splits import SplitManifest
from sslmem.memorization.alignment import AlignmentEstimator
from sslmem.memorization.layermem import compute_layermem, layermem_from_scores
from sslmem.memorization.layers import select_layers
from sslmem.memorization.report_files import (
    LAYER_POINTS_FILE,
    LAYER_SUMMARY_FILE,
    LAYER_TABLE_FILE,
)
from sslmem.memorization.scoring import PairProvenance, _ref, check_compatible, select_points
from sslmem.models.checkpoint import LoadedCheckpoint

TableFormat = Literal["parquet", "csv"]

#: Columns of the per-layer table (one row per layer and scored set).
LAYER_COLUMNS = ("layer", "layer_index", "set", "n", "sslmem_mean", "layermem", "delta_layermem")
#: Columns of the per-point, per-layer table.
LAYER_POINT_COLUMNS = (
    "layer",
    "sample_index",
    "set",
    "sslmem_raw",
    "candidate_alignment",
    "reference_alignment",
)


_NORMALIZATION = (
    "LayerMem: per scored set, raw per-layer SSLMem min-max normalised to [0, 1] with the min and "
    "max over all layers and that set's points (one common scale), then averaged over the points; "
    "ΔLayerMem_l = LayerMem_l - LayerMem_{l-1}, the first layer's is its LayerMem"
)


class LayerScoreSummary(PairProvenance):
    """Per-layer results and the provenance of a layer-scoring run (``layers.json``)."""

    layers: list[str]
    selection: str
    head_trained: bool
    rows: list[dict[str, Any]]
    normalization: str

    def format_table(self) -> str:
        """A compact text table: one line per layer and set."""
        lines = [f"{'layer':<28} {'set':<12} {'n':>5} {'SSLMem':>9} {'LayerMem':>9} {'Δ':>8}"]
        lines += [
            f"{r['layer']:<28} {r['set']:<12} {r['n']:>5} {r['sslmem_mean']:>+9.4f} "
            f"{r['layermem']:>9.4f} {r['delta_layermem']:>+8.4f}"
            for r in self.rows
        ]
        return "\n".join(lines)


class LayerScoreReport(BaseModel):
    """The per-layer table, the per-point per-layer scores (column arrays) and the summary."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    table: dict[str, Any]
    points: dict[str, Any]
    summary: LayerScoreSummary


def score_layers(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    dataset: ImageDataset,
    manifest: SplitManifest,
    *,
    scoring: ScoringConfig,
    augment_spec: AugmentationSpec,
    layers: str | Sequence[str] = "stages",
    device: torch.device | None = None,
    progress: Callable[[int], object] | None = None,
    allow_cross_split: bool = False,
    allow_missing_provenance: bool = False,
) -> LayerScoreReport:
    """Per-layer SSLMem, LayerMem and ΔLayerMem on the manifest's sets, with provenance.

    Every layer is hooked in the same forward, so the views are drawn and encoded once for all
    layers. ``scoring.layer`` is not used (``layers`` replaces it); everything else (K, mode,
    distance, seed, chunk size, sets, S_S sample) is as in
    :func:`~sslmem.memorization.scoring.score_split`, so the per-point scores at a layer equal
    ``score_split``'s with ``scoring.layer`` set to that layer.

    Args:
        candidates: m loaded candidate checkpoints (trained on S_S ∪ S_C).
        references: n loaded reference checkpoints (trained on S_S ∪ S_I).
        dataset: The data the manifest was made from (verified).
        manifest: The split.
        scoring: K, mode, distance, chunk size, seed, sets, S_S sample size.
        augment_spec: The augmentation distribution of the views.
        layers: ``"stages"`` (``Encoder.stage_names``; without ``"head"`` when a checkpoint
            records an untrained head, e.g. MAE) or layer names (``Encoder.layer_names``),
            scored in forward order.
        device: Compute device (default CPU).
        progress: Called with the number of points finished after each chunk.
        allow_cross_split: Score checkpoints trained on another split (see
            :func:`~sslmem.memorization.scoring.check_compatible`).
        allow_missing_provenance: Score checkpoints that record no provenance.

    Returns:
        ``table`` (one row per layer and set: :data:`LAYER_COLUMNS`), ``points`` (one row per
        layer and point: :data:`LAYER_POINT_COLUMNS`) and the summary.

    Raises:
        ScoringError: Incompatible checkpoints, or a layer that is not scorable (the message
            lists the valid names).
        ManifestMismatchError: The manifest does not match the dataset.
    """
    manifest.verify_against(dataset)
    everyone = [*candidates, *references]
    head_trained = all(bool(c.metadata.get("head_trained", True)) for c in everyone)
    names = select_layers([c.encoder for c in everyone], layers, include_head=head_trained)
    check_compatible(
        candidates,
        references,
        dataset,
        manifest=manifest,
        layers=names,
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
    )
    device = device or torch.device("cpu")
    indices, set_names = select_points(
        manifest, scoring.sets, shared_sample=scoring.shared_sample, seed=scoring.seed
    )
    started = time.perf_counter()
    result = compute_layermem(
        [c.encoder for c in candidates],
        [r.encoder for r in references],
        dataset.images[torch.from_numpy(indices)],
        torch.from_numpy(indices),
        layers=names,
        augment_spec=augment_spec,
        estimator=AlignmentEstimator.from_config(scoring),
        device=device,
        chunk_size=scoring.chunk_size,
        view_batch=scoring.view_batch,
        autocast_bf16=scoring.autocast_bf16,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    for name in scoring.sets:
        mask = torch.from_numpy(set_names == name)
        # Normalised per scored set, as score_split normalises: the paper's LayerMem is over S_C.
        mean_raw, layermem, delta = layermem_from_scores(result.raw[:, mask].double())
        rows += [
            {
                "layer": layer,
                "layer_index": li,
                "set": name,
                "n": int(mask.sum()),
                "sslmem_mean": float(mean_raw[li]),
                "layermem": float(layermem[li]),
                "delta_layermem": float(delta[li]),
            }
            for li, layer in enumerate(names)
        ]
    n_layers, n_points = len(names), len(indices)
    points = {
        "layer": np.repeat(np.asarray(names, dtype=object), n_points).astype(str),
        "sample_index": np.tile(indices, n_layers),
        "set": np.tile(set_names.astype(str), n_layers),
        "sslmem_raw": result.raw.double().numpy().reshape(-1),
        "candidate_alignment": result.candidate_alignment.mean(0).double().numpy().reshape(-1),
        "reference_alignment": result.reference_alignment.mean(0).double().numpy().reshape(-1),
    }
    summary = LayerScoreSummary(
        layers=list(names),
        selection=layers if isinstance(layers, str) else ",".join(layers),
        head_trained=head_trained,
        rows=rows,
        candidates=[_ref(c) for c in candidates],
        references=[_ref(r) for r in references],
        manifest_sha256=manifest.manifest_sha256,
        dataset=manifest.dataset.model_dump(),
        augmentation=augment_spec,
        scoring=scoring,
        normalization=_NORMALIZATION,
        sslmem_version=__version__,
        torch_version=torch.__version__,
        device=f"{device} ({platform.processor() or platform.machine()})",
        seconds=seconds,
        points_per_second=n_points / seconds if seconds > 0 else float("inf"),
        precision="bf16 autocast" if scoring.autocast_bf16 and device.type == "cuda" else "fp32",
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
    )
    table = {key: [row[key] for row in rows] for key in LAYER_COLUMNS}
    return LayerScoreReport(table=table, points=points, summary=summary)


def write_table(
    columns: Mapping[str, Any], names: Sequence[str], path: Path, fmt: TableFormat
) -> Path:
    """Write ``columns[names]`` as one parquet or CSV file, atomically."""
    import pyarrow as pa

    table = pa.table({name: columns[name] for name in names})
    with atomic_path(path, suffix=f".{fmt}") as tmp:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
    return path


def write_layer_report(
    report: LayerScoreReport, out_dir: Path, *, fmt: TableFormat = "parquet"
) -> list[Path]:
    """Write ``layers.<fmt>``, ``layer_scores.<fmt>`` and ``layers.json`` (last) into ``out_dir``.

    Each file is replaced atomically; the summary comes last, so its presence means the tables
    beside it are complete.

    Returns:
        The paths written, the summary last.
    """
    written = [
        write_table(report.table, LAYER_COLUMNS, out_dir / f"{LAYER_TABLE_FILE}.{fmt}", fmt),
        write_table(
            report.points, LAYER_POINT_COLUMNS, out_dir / f"{LAYER_POINTS_FILE}.{fmt}", fmt
        ),
    ]
    summary = out_dir / LAYER_SUMMARY_FILE
    atomic_write_bytes(summary, (report.summary.model_dump_json(indent=2) + "\n").encode())
    return [*written, summary]
