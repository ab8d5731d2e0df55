"""The reference losses cache: a hit equals a miss bit for bit; bad entries are rewritten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sslmem.data import ImageDataset, SplitManifest
from sslmem.data.store import LocalStore, ObjectStore
from sslmem.memorization.reference_cache import ReferenceLossCache
from sslmem.memorization.scoring import SCORE_COLUMNS, ScoreReport, score_split
from tests.memorization.test_scoring import SCORING, SPEC, _pair
from tests.memorization.test_scoring import data as data

SCORED = ("sslmem_raw", "candidate_alignment", "reference_alignment")


def _score(data: Any, f: Any, g: Any, cache: ReferenceLossCache | None, **scoring: Any) -> Any:
    dataset, split, _ = data
    config = SCORING.model_copy(update=scoring)
    return score_split([f], [g], dataset, split, scoring=config, augment_spec=SPEC,
                       reference_cache=cache)  # fmt: skip


def _assert_identical(a: ScoreReport, b: ScoreReport) -> None:
    for column in SCORE_COLUMNS:
        if column != "set":
            np.testing.assert_array_equal(a.columns[column], b.columns[column], err_msg=column)


def _entries(store: ObjectStore) -> list[str]:
    return list(store.list("cache/"))


def test_a_hit_gives_bit_identical_scores_to_a_miss_and_to_no_cache(
    data: tuple[ImageDataset, SplitManifest, SplitManifest], tmp_path: Path
) -> None:
    f, g = _pair(tmp_path, data[1])
    cache = ReferenceLossCache(LocalStore(tmp_path / "store"))
    miss = _score(data, f, g, cache)
    assert (cache.hits, cache.misses) == (0, 1) and len(_entries(cache.store)) == 1
    hit = _score(data, f, g, cache)
    assert (cache.hits, cache.misses) == (1, 1)
    _assert_identical(miss, hit)
    _assert_identical(miss, _score(data, f, g, None))


def test_the_key_covers_what_the_losses_depend_on(
    data: tuple[ImageDataset, SplitManifest, SplitManifest], tmp_path: Path
) -> None:
    f, g = _pair(tmp_path, data[1])
    cache = ReferenceLossCache(LocalStore(tmp_path / "store"))
    _score(data, f, g, cache)
    # Another view seed, K, or set of points: other losses, so other entries, never a hit.
    _score(data, f, g, cache, seed=1)
    _score(data, f, g, cache, views=3)
    _score(data, f, g, cache, sets=("candidate",))
    assert (cache.hits, cache.misses) == (0, 4) and len(_entries(cache.store)) == 4


@pytest.mark.parametrize("damage", ["truncated", "flipped", "foreign"])
def test_a_corrupt_or_foreign_entry_is_ignored_and_rewritten(
    data: tuple[ImageDataset, SplitManifest, SplitManifest], tmp_path: Path, damage: str
) -> None:
    f, g = _pair(tmp_path, data[1])
    store = LocalStore(tmp_path / "store")
    cache = ReferenceLossCache(store)
    clean = _score(data, f, g, cache)
    (name,) = _entries(store)
    good = store.get_bytes(name)
    if damage == "truncated":
        store.put_bytes(name, good[:-7])
    elif damage == "flipped":  # one payload bit: same length, header intact
        store.put_bytes(name, good[:-1] + bytes([good[-1] ^ 1]))
    else:  # a valid entry of another key (seed 1) placed under this name
        _score(data, f, g, cache, seed=1)
        other = next(n for n in _entries(store) if n != name)
        store.put_bytes(name, store.get_bytes(other))
    cache.hits = cache.misses = 0
    _assert_identical(clean, _score(data, f, g, cache))
    assert (cache.hits, cache.misses) == (0, 1)
    assert store.get_bytes(name) == good  # rewritten
