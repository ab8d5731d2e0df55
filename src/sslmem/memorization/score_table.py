"""The candidate rows (S_C) of a per-point score table, checked once for every reader.

A score table (``scores.parquet``/``scores.csv`` of ``sslmem score``) has one row per scored
point; the judgement of a version against its champion and a curation study both need its S_C
rows as ``(sample_index, raw SSLMem)`` sorted by index, and both must refuse the same defects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sslmem.errors import ScoringError

#: The set whose points are judged and curated: the candidates.
CANDIDATE_SET = "candidate"


def candidate_rows(
    columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]], owner: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The S_C rows of a score table, sorted by dataset index.

    Args:
        columns: At least ``sample_index``, ``set`` and ``sslmem_raw`` of equal lengths; rows of
            other sets are ignored.
        owner: Whose table it is, for messages (e.g. ``"version 7"``, ``"report DIR"``).

    Returns:
        ``(sample_index int64 [n], sslmem_raw float64 [n])``.

    Raises:
        ScoringError: Missing columns, unequal lengths, fewer than two S_C points, a non-finite
            score or a repeated sample index.

    """
    missing = [c for c in ("sample_index", "set", "sslmem_raw") if c not in columns]
    if missing:
        raise ScoringError(
            f"score table of {owner} lacks column(s) {', '.join(missing)}",
            "pass the scores.parquet written by sslmem score",
        )
    index = np.asarray(columns["sample_index"])
    sets = np.asarray(columns["set"]).astype(str)
    raw = np.asarray(columns["sslmem_raw"], dtype=np.float64)
    if not index.shape == sets.shape == raw.shape or index.ndim != 1:
        raise ScoringError(
            f"score table of {owner} has columns of unequal lengths "
            f"({index.shape}, {sets.shape}, {raw.shape})",
            "pass the scores.parquet written by sslmem score",
        )
    mask = sets == CANDIDATE_SET
    index, raw = index[mask].astype(np.int64), raw[mask]
    if index.size < 2:
        raise ScoringError(
            f"{owner} has {index.size} scored candidate point(s); at least 2 are needed",
            "score the 'candidate' set (S_C)",
        )
    if not np.isfinite(raw).all():
        raise ScoringError(
            f"{owner} has {int((~np.isfinite(raw)).sum())} non-finite SSLMem score(s) on S_C",
            "re-score it",
        )
    if np.unique(index).size != index.size:
        raise ScoringError(
            f"{owner} scores some S_C sample indices more than once",
            "re-score it (each candidate point is scored once; merge shards with "
            "`sslmem score --merge`)",
        )
    order = np.argsort(index, kind="stable")
    return index[order], raw[order]
