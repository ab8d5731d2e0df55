"""Which candidates a curation study removes: the k most or least memorised, or k at random.

Wang et al. (ICLR 2024, Sec. 5) compare removing the k candidates (S_C) with the highest SSLMem
against removing k random candidates and the k with the lowest SSLMem. The scores come from a
score report of the candidate encoder (``sslmem score``); the choice is deterministic: ties are
broken by dataset index, random draws are seeded by ``(seed, draw)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sslmem.errors import ConfigError, DataError
from sslmem.memorization.score_table import candidate_rows

Strategy = Literal["top", "bottom", "random"]
#: The strategies in the order the report shows them.
STRATEGIES: tuple[Strategy, ...] = ("top", "random", "bottom")


@dataclass(frozen=True, eq=False)  # holds arrays
class CandidateScores:
    """The SSLMem of each scored candidate (S_C) of one split, as a score report records it.

    Attributes:
        sample_index: ``int64 [n]`` dataset indices, ascending and unique.
        sslmem: ``float64 [n]`` raw SSLMem, aligned with ``sample_index``.
        manifest_sha256: The split the scores were computed on.
        reference_sha256s: The reference checkpoints the scores were computed against.
        candidate_sha256s: The candidate checkpoints that were scored.
        scores_sha256: SHA-256 of the score table file (recorded in derived splits).
        source: Where the scores were read from (for messages).

    """

    sample_index: npt.NDArray[np.int64]
    sslmem: npt.NDArray[np.float64]
    manifest_sha256: str
    reference_sha256s: tuple[str, ...]
    candidate_sha256s: tuple[str, ...]
    scores_sha256: str
    source: str

    @classmethod
    def from_columns(
        cls,
        columns: dict[str, Any],
        *,
        manifest_sha256: str,
        reference_sha256s: Sequence[str],
        candidate_sha256s: Sequence[str],
        scores_sha256: str,
        source: str,
    ) -> CandidateScores:
        """The S_C rows of a score table (``sample_index``, ``set``, ``sslmem_raw`` columns).

        Raises:
            ScoringError: A column is missing, fewer than two candidates were scored, a score
                is not finite, or an index repeats
                (:func:`~sslmem.memorization.score_table.candidate_rows`).

        """
        index, raw = candidate_rows(columns, f"score report {source}")
        return cls(
            sample_index=index,
            sslmem=raw,
            manifest_sha256=manifest_sha256,
            reference_sha256s=tuple(reference_sha256s),
            candidate_sha256s=tuple(candidate_sha256s),
            scores_sha256=scores_sha256,
            source=source,
        )


def read_candidate_scores(report_dir: Path | str) -> CandidateScores:
    """The candidate scores of a score report directory (``summary.json`` + score table).

    Raises:
        DataError: The directory holds no report, or the report is unusable (see
            :meth:`CandidateScores.from_columns`).

    """
    from sslmem.memorization.report_files import SUMMARY_FILE, TABLE_FILES
    from sslmem.memorization.report_schema import ScoreSummary

    directory = Path(report_dir)
    summary_path = directory / SUMMARY_FILE
    tables = [directory / name for name in TABLE_FILES if (directory / name).is_file()]
    if not summary_path.is_file() or not tables:
        raise DataError(
            f"{directory} is not a score report directory (it needs {SUMMARY_FILE} and one of "
            f"{', '.join(TABLE_FILES)})",
            "pass the directory `sslmem score --out DIR` (or `sslmem run`'s score/) wrote",
        )
    try:
        summary = ScoreSummary.model_validate_json(summary_path.read_bytes())
    except ValueError as exc:
        raise DataError(
            f"{summary_path} is not a score summary ({type(exc).__name__})",
            "pass the directory `sslmem score --out DIR` wrote",
        ) from None
    table = tables[0]
    columns = _read_table(table)
    return CandidateScores.from_columns(
        columns,
        manifest_sha256=summary.manifest_sha256,
        reference_sha256s=[ref.sha256 for ref in summary.references],
        candidate_sha256s=[cand.sha256 for cand in summary.candidates],
        scores_sha256=hashlib.sha256(table.read_bytes()).hexdigest(),
        source=str(directory),
    )


def _read_table(path: Path) -> dict[str, Any]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return dict(pq.read_table(path).to_pydict())
    import pyarrow.csv as pacsv

    return dict(pacsv.read_csv(path).to_pydict())


def removal_size(fraction: float, num_candidates: int) -> int:
    """K for a removal ``fraction`` of ``num_candidates`` scored candidates (rounded).

    Raises:
        ConfigError: ``fraction`` is not in (0, 1), or gives k < 1 or k >= the candidates.

    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(
            f"removal fraction {fraction:g} is not in (0, 1)",
            "give fractions of the scored candidates, e.g. --fractions 0.1,0.2",
        )
    k = round(fraction * num_candidates)
    if k < 1:
        raise ConfigError(
            f"removal fraction {fraction:g} of {num_candidates} candidates removes no point",
            f"use a fraction of at least {1 / num_candidates:.3g}",
        )
    if k >= num_candidates:
        raise ConfigError(
            f"removal fraction {fraction:g} removes all {num_candidates} scored candidates",
            "use a smaller fraction",
        )
    return k


def select_removal(
    scores: CandidateScores, strategy: Strategy, k: int, *, draw: int = 0, seed: int = 0
) -> npt.NDArray[np.int64]:
    """The dataset indices ``int64 [k]`` (ascending) of the candidates to remove.

    Args:
        scores: The scored candidates.
        strategy: ``top`` (highest SSLMem), ``bottom`` (lowest) or ``random``.
        k: How many.
        draw: Which random draw (``random`` only): draws differ, each is reproducible.
        seed: The seed of the random draws.

    Raises:
        ConfigError: ``k`` is not in [1, n - 1] or the strategy is unknown.

    """
    n = scores.sample_index.size
    if not 1 <= k < n:
        raise ConfigError(
            f"cannot remove k={k} of the {n} scored candidates in {scores.source}",
            f"choose k between 1 and {n - 1} (a smaller --fractions)",
        )
    if strategy == "random":
        rng = np.random.default_rng([seed, draw])
        chosen = rng.choice(scores.sample_index, size=k, replace=False)
    elif strategy in ("top", "bottom"):
        sign = -1.0 if strategy == "top" else 1.0
        # lexsort sorts by the last key first: score, then dataset index for ties.
        order = np.lexsort((scores.sample_index, sign * scores.sslmem))
        chosen = scores.sample_index[order[:k]]
    else:
        raise ConfigError(
            f"unknown removal strategy {strategy!r}", f"use one of {', '.join(STRATEGIES)}"
        )
    return np.sort(np.asarray(chosen, dtype=np.int64))
