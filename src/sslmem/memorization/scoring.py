"""Score a split: SSLMem of candidate vs reference checkpoints on the protocol's sets.

The one library function behind ``sslmem score``, the KFP scoring component and the scoring
service: load nothing, decide nothing about I/O -- take loaded checkpoints, the dataset and its
split manifest, return per-point scores, per-set statistics, the verdict and full provenance.
:func:`write_score_report` persists a report atomically.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from sslmem import __version__
from sslmem.augment import AugmentationSpec
from sslmem.config import ScoringConfig
from sslmem.data.datasets import ImageDataset
from sslmem.data.splits import SplitManifest
from sslmem.errors import ScoringError
from sslmem.memorization.alignment import AlignmentEstimator
from sslmem.memorization.normalize import minmax_normalize, range_normalize
from sslmem.memorization.sslmem import compute_sslmem
from sslmem.memorization.stats import SetSummary, Verdict, WelchTest, summarize_scores
from sslmem.models.checkpoint import LoadedCheckpoint

SCORE_COLUMNS = (
    "sample_index",
    "set",
    "sslmem_raw",
    "sslmem_range",
    "sslmem_minmax",
    "candidate_alignment",
    "reference_alignment",
)


class CheckpointRef(BaseModel):
    """Provenance of one encoder."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    arch: str
    representation: dict[str, Any]


class ScoreSummary(BaseModel):
    """Statistics, verdict and provenance of a scoring run (the JSON summary)."""

    model_config = ConfigDict(frozen=True)

    sets: dict[str, SetSummary]
    welch_tests: dict[str, WelchTest]
    verdict: Verdict
    candidates: list[CheckpointRef]
    references: list[CheckpointRef]
    manifest_sha256: str
    dataset: dict[str, Any]
    augmentation: AugmentationSpec
    scoring: ScoringConfig
    normalization: str
    sslmem_version: str
    torch_version: str
    device: str
    seconds: float
    points_per_second: float

    def format_table(self) -> str:
        """A compact text table of the per-set statistics and the verdict."""
        lines = [f"{'set':<12} {'n':>6} {'mean':>9} {'95% CI':>21} {'p(S_C > set)':>13}"]
        for name, s in self.sets.items():
            test = self.welch_tests.get(name)
            p = f"{test.p_value:.2e}" if test else "-"
            ci = f"[{s.ci95_low:+.4f}, {s.ci95_high:+.4f}]"
            lines.append(f"{name:<12} {s.n:>6} {s.mean:>+9.4f} {ci:>21} {p:>13}")
        verdict = self.verdict
        lines.append(f"verdict: {'PASS' if verdict.passed else 'FAIL'} (alpha {verdict.alpha})")
        lines += [f"  [{'x' if c.passed else ' '}] {c.name}: {c.detail}" for c in verdict.checks]
        return "\n".join(lines)


class ScoreReport(BaseModel):
    """Per-point scores (column arrays) and the summary."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    columns: dict[str, Any]
    summary: ScoreSummary

    def rows(self) -> list[dict[str, Any]]:
        """Per-point rows (for small reports and tests)."""
        n = len(self.columns["sample_index"])
        return [{k: self.columns[k][i] for k in SCORE_COLUMNS} for i in range(n)]


def _ref(checkpoint: LoadedCheckpoint) -> CheckpointRef:
    return CheckpointRef(
        path=str(checkpoint.path),
        sha256=checkpoint.sha256,
        arch=checkpoint.header.arch,
        representation=dict(checkpoint.header.representation),
    )


def check_compatible(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    dataset: ImageDataset,
) -> None:
    """Refuse encoders whose representation specs differ or do not fit the data."""
    if not candidates or not references:
        raise ScoringError(
            f"need at least one candidate and one reference checkpoint, got {len(candidates)} "
            f"and {len(references)}",
            "pass --candidate CKPT ... and --reference CKPT ...",
        )
    first = candidates[0]
    expected = dict(first.header.representation)
    for ckpt in [*candidates, *references]:
        spec = dict(ckpt.header.representation)
        if spec != expected:
            raise ScoringError(
                f"representation spec of {ckpt.path} ({spec}) differs from {first.path} "
                f"({expected})",
                "score candidates and references trained with the same architecture and head",
            )
    channels = expected.get("in_channels")
    if channels is not None and channels != dataset.num_channels:
        raise ScoringError(
            f"encoders take {channels}-channel images but dataset {dataset.name!r} has "
            f"{dataset.num_channels}",
            "score the dataset the encoders were trained on",
        )


def select_points(
    manifest: SplitManifest, sets: Sequence[str], *, shared_sample: int, seed: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Dataset indices to score and the set name of each (S_S is subsampled, seeded).

    Returns:
        ``(indices [N] int64, set_names [N] str)``.
    """
    if not sets:
        raise ScoringError("no sets to score", "pass e.g. --sets candidate,independent,extra")
    index_parts, name_parts = [], []
    for name in sets:
        indices = manifest.set_indices(name)  # type: ignore[arg-type]
        if name == "shared" and len(indices) > shared_sample:
            rng = np.random.default_rng(seed)
            indices = np.sort(rng.choice(indices, size=shared_sample, replace=False))
        if len(indices) == 0:
            raise ScoringError(f"set {name!r} of the split is empty", "make a larger split")
        index_parts.append(indices.astype(np.int64))
        name_parts.append(np.full(len(indices), name, dtype=object))
    return np.concatenate(index_parts), np.concatenate(name_parts)


def score_split(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    dataset: ImageDataset,
    manifest: SplitManifest,
    *,
    scoring: ScoringConfig,
    augment_spec: AugmentationSpec,
    device: torch.device | None = None,
    alpha: float = 0.01,
    progress: Callable[[int], object] | None = None,
) -> ScoreReport:
    """SSLMem on the manifest's sets, with statistics, verdict and provenance.

    Args:
        candidates: m loaded candidate checkpoints (trained on S_S ∪ S_C).
        references: n loaded reference checkpoints (trained on S_S ∪ S_I).
        dataset: The data the manifest was made from (verified).
        manifest: The split.
        scoring: K, mode, distance, layer, chunk size, seed, sets, S_S sample size.
        augment_spec: The augmentation distribution of the views.
        device: Compute device (default CPU).
        alpha: Significance level of the verdict.
        progress: Called with the number of points finished after each chunk.

    Returns:
        Per-point columns (sample index, set, raw and normalised SSLMem, mean alignment losses)
        and the summary.
    """
    manifest.verify_against(dataset)
    check_compatible(candidates, references, dataset)
    device = device or torch.device("cpu")
    indices, set_names = select_points(
        manifest, scoring.sets, shared_sample=scoring.shared_sample, seed=scoring.seed
    )
    started = time.perf_counter()
    result = compute_sslmem(
        [c.encoder for c in candidates],
        [r.encoder for r in references],
        dataset.images[torch.from_numpy(indices)],
        torch.from_numpy(indices),
        augment_spec=augment_spec,
        estimator=AlignmentEstimator(
            views=scoring.views, mode=scoring.mode, distance=scoring.distance, seed=scoring.seed
        ),
        layer=scoring.layer,
        device=device,
        chunk_size=scoring.chunk_size,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    raw = result.raw.numpy().astype(np.float64)
    # Normalised per scored set, as the authors normalise over the set they score.
    range_scores, minmax_scores = np.empty_like(raw), np.empty_like(raw)
    by_set: dict[str, np.ndarray[Any, Any]] = {}
    for name in scoring.sets:
        mask = set_names == name
        scores = torch.from_numpy(raw[mask])
        range_scores[mask] = range_normalize(scores).numpy()
        minmax_scores[mask] = minmax_normalize(scores).numpy()
        by_set[name] = raw[mask]
    summaries, tests, verdict = summarize_scores(by_set, alpha=alpha)
    columns = {
        "sample_index": indices,
        "set": set_names.astype(str),
        "sslmem_raw": raw,
        "sslmem_range": range_scores,
        "sslmem_minmax": minmax_scores,
        "candidate_alignment": result.candidate_alignment.mean(0).numpy().astype(np.float64),
        "reference_alignment": result.reference_alignment.mean(0).numpy().astype(np.float64),
    }
    summary = ScoreSummary(
        sets=summaries,
        welch_tests=tests,
        verdict=verdict,
        candidates=[_ref(c) for c in candidates],
        references=[_ref(r) for r in references],
        manifest_sha256=manifest.manifest_sha256,
        dataset=manifest.dataset.model_dump(),
        augmentation=augment_spec,
        scoring=scoring,
        normalization="raw kept; 'range' = raw/(max-min) and 'minmax' per scored set",
        sslmem_version=__version__,
        torch_version=torch.__version__,
        device=f"{device} ({platform.processor() or platform.machine()})",
        seconds=seconds,
        points_per_second=len(indices) / seconds if seconds > 0 else float("inf"),
    )
    return ScoreReport(columns=columns, summary=summary)


ScoreFormat = Literal["parquet", "csv"]


def _write_table(columns: dict[str, Any], path: Path, fmt: ScoreFormat) -> None:
    import pyarrow as pa

    table = pa.table({name: columns[name] for name in SCORE_COLUMNS})
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)


def write_score_report(report: ScoreReport, out_dir: Path, *, fmt: ScoreFormat = "parquet") -> Path:
    """Write ``scores.<fmt>`` and ``summary.json`` into ``out_dir`` atomically.

    Both files are written to a staging folder first and moved into place, the summary last, so
    a reader that sees ``summary.json`` sees a complete report and a failure leaves no file that
    looks complete.

    Returns:
        The summary's path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        table_name = f"scores.{fmt}"
        _write_table(report.columns, staging / table_name, fmt)
        summary_json = report.summary.model_dump_json(indent=2)
        json.loads(summary_json)  # fail here, not in a reader, if it is not valid JSON
        (staging / "summary.json").write_text(summary_json + "\n")
        stale = out_dir / "summary.json"
        if stale.exists():
            stale.unlink()  # never leave an old summary beside a new table
        os.replace(staging / table_name, out_dir / table_name)
        os.replace(staging / "summary.json", out_dir / "summary.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / "summary.json"
