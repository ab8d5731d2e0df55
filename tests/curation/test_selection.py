"""Choosing the candidates to remove from a hand-made score table (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from sslmem.curation.selection import CandidateScores, removal_size, select_removal
from sslmem.errors import ConfigError, ScoringError

H = "0" * 64


def _scores(
    index: list[int], sslmem: list[float], sets: list[str] | None = None
) -> CandidateScores:
    return CandidateScores.from_columns(
        {
            "sample_index": index,
            "set": sets or ["candidate"] * len(index),
            "sslmem_raw": sslmem,
        },
        manifest_sha256=H,
        reference_sha256s=[H],
        candidate_sha256s=[H],
        scores_sha256=H,
        source="table",
    )


TABLE = _scores(
    [50, 10, 40, 20, 30, 60, 70],
    [0.30, 0.90, -0.20, 0.90, 0.10, 0.00, 0.50],
)


def test_top_and_bottom_with_ties_broken_by_index() -> None:
    # 10 and 20 tie at 0.90: both are the top two; next is 70 (0.50).
    assert select_removal(TABLE, "top", 3).tolist() == [10, 20, 70]
    assert select_removal(TABLE, "top", 1).tolist() == [10]  # the lower index wins the tie
    assert select_removal(TABLE, "bottom", 2).tolist() == [40, 60]


def test_other_sets_are_ignored() -> None:
    scores = _scores([1, 2, 3], [5.0, 1.0, 2.0], ["independent", "candidate", "candidate"])
    assert scores.sample_index.tolist() == [2, 3]
    assert select_removal(scores, "top", 1).tolist() == [3]


def test_random_draws_are_reproducible_distinct_and_within_the_candidates() -> None:
    first = select_removal(TABLE, "random", 3, draw=0, seed=7)
    assert np.array_equal(first, select_removal(TABLE, "random", 3, draw=0, seed=7))
    draws = {tuple(select_removal(TABLE, "random", 3, draw=d, seed=7)) for d in range(10)}
    assert len(draws) > 1
    for draw in draws:
        assert len(set(draw)) == 3 and set(draw) <= set(TABLE.sample_index.tolist())


@pytest.mark.parametrize("k", [0, 7, 8])
def test_k_outside_the_scored_set_is_refused(k: int) -> None:
    with pytest.raises(ConfigError, match=f"cannot remove k={k} of the 7"):
        select_removal(TABLE, "top", k)


def test_removal_size_rounds_and_refuses_empty_or_total_removals() -> None:
    assert removal_size(0.1, 90) == 9
    assert removal_size(0.25, 90) == 22  # round half to even: 22.5 -> 22
    with pytest.raises(ConfigError, match="removes no point"):
        removal_size(0.001, 90)
    with pytest.raises(ConfigError, match="not in"):
        removal_size(1.0, 90)


def test_a_table_without_candidates_or_with_repeats_is_refused() -> None:
    with pytest.raises(ScoringError, match="0 scored candidate point"):
        _scores([1, 2], [0.0, 1.0], ["extra", "extra"])
    with pytest.raises(ScoringError, match="more than once"):
        _scores([1, 1, 2], [0.0, 1.0, 2.0])
    with pytest.raises(ScoringError, match="non-finite"):
        _scores([1, 2], [0.0, float("nan")])
