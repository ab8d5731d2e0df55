"""Hand-built scored versions for the judgement and metrics tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from sslmem.augment import AugmentationSpec
from sslmem.config import ScoringConfig
from sslmem.memorization.judgement import ScoredVersion
from sslmem.memorization.scoring import ScoreSummary
from sslmem.memorization.stats import summarize_scores

# Hand data: per-point differences 0.03, 0.02, 0.01, 0.04, 0.02 -> mean 0.024, sd 0.0114018,
# t = 0.024 / (0.0114018 / sqrt 5) = 4.7068 with 4 df: a clear, paired rise (p = 0.0093).
CAND = [0.10, 0.12, 0.08, 0.15, 0.11]
CHAMP = [0.07, 0.10, 0.07, 0.11, 0.09]

DATASET = {
    "name": "fashion-mnist",
    "split": "train",
    "num_samples": 600,
    "content_sha256": "a" * 64,
}


def make_summary(scores: np.ndarray, *, manifest: str = "m" * 64, **scoring: Any) -> ScoreSummary:
    control = np.linspace(-0.05, 0.05, 10)
    sets, tests, verdict = summarize_scores({"candidate": scores, "independent": control})
    return ScoreSummary(
        sets=sets,
        welch_tests=tests,
        verdict=verdict,
        candidates=[],
        references=[],
        manifest_sha256=manifest,
        dataset=DATASET,
        augmentation=AugmentationSpec(),
        scoring=ScoringConfig(**scoring),
        normalization="raw",
        sslmem_version="test",
        torch_version="test",
        device="cpu",
        seconds=1.0,
        points_per_second=1.0,
    )


def make_version(
    scores: list[float] | np.ndarray,
    *,
    version: str = "2",
    indices: list[int] | np.ndarray | None = None,
    knn: float | None = 0.80,
    probe: float | None = 0.85,
    manifest: str = "m" * 64,
    **scoring: Any,
) -> ScoredVersion:
    values = np.asarray(scores, dtype=np.float64)
    index = np.arange(values.size) if indices is None else np.asarray(indices)
    columns = {"sample_index": index, "set": ["candidate"] * values.size, "sslmem_raw": values}
    return ScoredVersion.from_scores(
        version,
        columns,
        make_summary(values, manifest=manifest, **scoring),
        knn_accuracy=knn,
        linear_probe_accuracy=probe,
    )
