"""Sharded scoring: score index ranges of the scored points apart, merge into one report.

The scored points are those of :func:`~sslmem.memorization.scoring.select_points`, in its
order (the scored sets concatenated in ``scoring.sets`` order). A shard is a range
``[start, stop)`` of that sequence; its per-point table holds the columns of
``scores.parquet`` (the per-set normalisations ``sslmem_range``/``sslmem_minmax`` are NaN
there: they need the whole set and are computed at the merge). Views are keyed by dataset
index (:mod:`sslmem.augment`), so the per-point values of a shard equal those of the unsharded
run, and the merge, which ends in the same
:func:`~sslmem.memorization.scoring.build_report`, gives the same statistics and verdict.

Each shard table records in its Parquet metadata what it was computed from (encoders, split,
scoring config, augmentation); the merge refuses shards of another run and any gap or overlap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from sslmem.augment import AugmentationSpec
from sslmem.config import ScoringConfig
from sslmem.data.datasets import ImageDataset
from sslmem.data.splits import SplitManifest
from sslmem.errors import ConfigError, ScoringError
from sslmem.memorization.scoring import (
    SCORE_COLUMNS,
    PointScores,
    ScoreReport,
    build_report,
    checked_points,
    score_points,
    select_points,
)
from sslmem.models.checkpoint import LoadedCheckpoint

__all__ = [
    "SHARD_METADATA_KEY",
    "ShardInfo",
    "ShardTable",
    "merge_shards",
    "parse_range",
    "plan_shards",
    "read_shards",
    "score_shard",
    "shard_ranges",
    "write_shard",
]

#: Parquet schema metadata key holding a shard's :class:`ShardInfo` as JSON.
SHARD_METADATA_KEY = b"sslmem.shard"


class ShardInfo(BaseModel):
    """What a shard was computed from, and which points it covers."""

    model_config = ConfigDict(frozen=True)

    start: int
    stop: int
    total: int
    manifest_sha256: str
    candidates: list[str]
    references: list[str]
    scoring: ScoringConfig
    augmentation: AugmentationSpec
    seconds: float
    device: str
    precision: str
    allow_cross_split: bool = False
    allow_missing_provenance: bool = False


class ShardTable(BaseModel):
    """One shard: its per-point scores and where they came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    points: PointScores
    info: ShardInfo


def shard_ranges(total: int, shard_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of ``shard_size`` points covering ``range(total)``.

    The last range is shorter when ``shard_size`` does not divide ``total``.

    Raises:
        ConfigError: ``shard_size < 1`` or ``total < 1``.
    """
    if shard_size < 1:
        raise ConfigError(f"shard size must be >= 1, got {shard_size}", "pass e.g. 20000")
    if total < 1:
        raise ScoringError("no points to score", "check the split sets you asked to score")
    return [(start, min(start + shard_size, total)) for start in range(0, total, shard_size)]


def parse_range(text: str) -> tuple[int, int]:
    """``"START:STOP"`` -> ``(start, stop)``.

    Raises:
        ConfigError: Not two integers with ``0 <= start < stop``.
    """
    parts = text.split(":")
    try:
        start, stop = (int(p) for p in parts) if len(parts) == 2 else (-1, -1)
    except ValueError:
        start, stop = -1, -1
    if not 0 <= start < stop:
        raise ConfigError(
            f"shard range {text!r} is not START:STOP with 0 <= START < STOP",
            "pass e.g. --shard 0:20000 (points START..STOP-1 of the scored sets, in order)",
        )
    return start, stop


def plan_shards(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    dataset: ImageDataset,
    manifest: SplitManifest,
    *,
    scoring: ScoringConfig,
    shard_size: int,
    allow_cross_split: bool = False,
    allow_missing_provenance: bool = False,
) -> list[tuple[int, int]]:
    """Check the encoders once (:func:`check_compatible`), then the shards' index ranges.

    Raises:
        ScoringError, ManifestMismatchError: See :func:`check_compatible`.
        ConfigError: ``shard_size < 1``.
    """
    indices, _ = checked_points(
        candidates,
        references,
        dataset,
        manifest,
        scoring=scoring,
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
    )
    return shard_ranges(len(indices), shard_size)


def score_shard(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    dataset: ImageDataset,
    manifest: SplitManifest,
    *,
    start: int,
    stop: int,
    scoring: ScoringConfig,
    augment_spec: AugmentationSpec,
    device: torch.device | None = None,
    progress: Callable[[int], object] | None = None,
    allow_cross_split: bool = False,
    allow_missing_provenance: bool = False,
) -> ShardTable:
    """Score the points ``[start, stop)`` of the scored sequence (:func:`select_points`).

    The encoders are checked like every scorer's (:func:`check_compatible`: header and hash
    comparisons, no forward pass), so a shard run on its own cannot mislabel scores.

    Raises:
        ConfigError: The range is empty or beyond the scored points.
        ScoringError, ManifestMismatchError: See :func:`check_compatible`.
    """
    indices, set_names = checked_points(
        candidates,
        references,
        dataset,
        manifest,
        scoring=scoring,
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
    )
    if not 0 <= start < stop <= len(indices):
        raise ConfigError(
            f"shard [{start}, {stop}) is not within the {len(indices)} scored points",
            f"pass a range within 0:{len(indices)}",
        )
    points = score_points(
        candidates,
        references,
        dataset,
        indices[start:stop],
        set_names[start:stop],
        scoring=scoring,
        augment_spec=augment_spec,
        device=device or torch.device("cpu"),
        progress=progress,
    )
    info = ShardInfo(
        start=start,
        stop=stop,
        total=len(indices),
        manifest_sha256=manifest.manifest_sha256,
        candidates=[c.sha256 for c in candidates],
        references=[r.sha256 for r in references],
        scoring=scoring,
        augmentation=augment_spec,
        seconds=points.seconds,
        device=points.device,
        precision=points.precision,
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
    )
    return ShardTable(points=points, info=info)


def shard_file_name(start: int, stop: int) -> str:
    """``shard-<start>-<stop>.parquet``, zero-padded so names sort by range."""
    return f"shard-{start:012d}-{stop:012d}.parquet"


def write_shard(shard: ShardTable, out_dir: Path) -> Path:
    """Write a shard's table (the columns of ``scores.parquet``) into ``out_dir``, atomically.

    Returns:
        The file written, ``out_dir/shard-<start>-<stop>.parquet``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sslmem.atomic import atomic_path

    p = shard.points
    nan = np.full(len(p.sslmem_raw), np.nan)
    columns = {
        "sample_index": p.sample_index,
        "set": p.set,
        "sslmem_raw": p.sslmem_raw,
        "sslmem_range": nan,  # per-set normalisations need the whole set: merge
        "sslmem_minmax": nan,
        "candidate_alignment": p.candidate_alignment,
        "reference_alignment": p.reference_alignment,
    }
    table = pa.table({name: columns[name] for name in SCORE_COLUMNS})
    table = table.replace_schema_metadata({SHARD_METADATA_KEY: shard.info.model_dump_json()})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / shard_file_name(shard.info.start, shard.info.stop)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_shards(locations: Sequence[Path]) -> list[ShardTable]:
    """Read shard tables from files or directories (every ``shard-*.parquet`` in them).

    Raises:
        ConfigError: A location holds no shard table, or a file is not one.
    """
    import pyarrow.parquet as pq

    files: list[Path] = []
    for location in locations:
        found = sorted(location.glob("shard-*.parquet")) if location.is_dir() else [location]
        if not found or not all(f.is_file() for f in found):
            raise ConfigError(
                f"{location} holds no shard table (shard-*.parquet)",
                "pass the directories or files written by `sslmem score --shard`",
            )
        files += found
    shards = []
    for path in files:
        table = pq.read_table(path)
        meta = (table.schema.metadata or {}).get(SHARD_METADATA_KEY)
        if meta is None or table.column_names != list(SCORE_COLUMNS):
            raise ConfigError(
                f"{path} is not a shard table of `sslmem score --shard`",
                "pass only shard tables",
            )
        info = ShardInfo.model_validate(json.loads(meta))
        col = {name: table.column(name).to_numpy(zero_copy_only=False) for name in SCORE_COLUMNS}
        points = PointScores(
            sample_index=col["sample_index"].astype(np.int64),
            set=col["set"].astype(str),
            sslmem_raw=col["sslmem_raw"],
            candidate_alignment=col["candidate_alignment"],
            reference_alignment=col["reference_alignment"],
            seconds=info.seconds,
            device=info.device,
            precision=info.precision,
        )
        shards.append(ShardTable(points=points, info=info))
    return shards


def _check_coverage(shards: Sequence[ShardTable], total: int) -> list[ShardTable]:
    """The shards sorted by start, after checking they cover ``range(total)`` exactly once."""
    ordered = sorted(shards, key=lambda s: (s.info.start, s.info.stop))
    gaps, overlaps = [], []
    covered = 0
    for shard in ordered:
        start, stop = shard.info.start, shard.info.stop
        if start > covered:
            gaps.append(f"[{covered}, {start})")
        elif start < covered:
            overlaps.append(f"[{start}, {min(stop, covered)})")
        covered = max(covered, stop)
    if covered < total:
        gaps.append(f"[{covered}, {total})")
    if gaps or overlaps:
        problems = [f"missing {', '.join(gaps)}"] if gaps else []
        problems += [f"scored more than once {', '.join(overlaps)}"] if overlaps else []
        raise ScoringError(
            f"the shards do not cover the {total} scored points exactly once: "
            + "; ".join(problems),
            "score the missing ranges with `sslmem score --shard START:STOP` and pass each "
            "range's table once",
        )
    return ordered


def merge_shards(
    shards: Sequence[ShardTable],
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    manifest: SplitManifest,
    *,
    scoring: ScoringConfig,
    augment_spec: AugmentationSpec,
    alpha: float = 0.01,
    allow_cross_split: bool = False,
    allow_missing_provenance: bool = False,
) -> ScoreReport:
    """One report from shard tables, exactly as :func:`score_split` makes it from one pass.

    Every shard must come from these encoders, this split, scoring config, augmentation and
    provenance waivers (the encoders were checked when each shard was scored), and together
    they must cover every scored point exactly once. The summary records the shard size (the
    largest shard), the summed shard time and each distinct device.

    Raises:
        ScoringError: Shards of another run, or a gap or overlap (the ranges are named).
    """
    if not shards:
        raise ScoringError("no shard tables to merge", "pass the shard tables' directories")
    indices, set_names = select_points(
        manifest, scoring.sets, shared_sample=scoring.shared_sample, seed=scoring.seed
    )
    expected: dict[str, Any] = {
        "manifest_sha256": manifest.manifest_sha256,
        "candidates": [c.sha256 for c in candidates],
        "references": [r.sha256 for r in references],
        "scoring": scoring,
        "augmentation": augment_spec,
        "total": len(indices),
        # The waivers the summary records are those the shards were checked under.
        "allow_cross_split": allow_cross_split,
        "allow_missing_provenance": allow_missing_provenance,
    }
    for shard in shards:
        for field, value in expected.items():
            if getattr(shard.info, field) != value:
                raise ScoringError(
                    f"shard [{shard.info.start}, {shard.info.stop}) was computed with another "
                    f"{field} than the merge was given",
                    "merge only the shards of one run, with the encoders, split and config "
                    "they were scored with",
                )
    ordered = _check_coverage(shards, len(indices))
    parts = [s.points for s in ordered]
    sample_index = np.concatenate([p.sample_index for p in parts])
    if not np.array_equal(sample_index, indices) or not np.array_equal(
        np.concatenate([p.set for p in parts]), set_names.astype(str)
    ):
        raise ScoringError(
            "the shard tables' points are not the scored points of this split",
            "re-score the shards; a shard table was altered",
        )
    devices = sorted({p.device for p in parts})
    precisions = sorted({p.precision for p in parts})
    merged = PointScores(
        sample_index=sample_index,
        set=np.concatenate([p.set for p in parts]),
        sslmem_raw=np.concatenate([p.sslmem_raw for p in parts]),
        candidate_alignment=np.concatenate([p.candidate_alignment for p in parts]),
        reference_alignment=np.concatenate([p.reference_alignment for p in parts]),
        seconds=float(sum(p.seconds for p in parts)),
        device=", ".join(devices),
        precision=", ".join(precisions),
    )
    return build_report(
        merged,
        candidates,
        references,
        manifest,
        scoring=scoring,
        augment_spec=augment_spec,
        alpha=alpha,
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
        shard_size=max(s.info.stop - s.info.start for s in ordered),
    )
