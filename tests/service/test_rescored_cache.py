"""The re-scored champions cache: exact round trip; corrupt or foreign entries are ignored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sslmem.data.store import LocalStore
from sslmem.workflow.rescoring import RescoredChampions, rescore_key
from tests.memorization.scored import make_summary

RAW = np.array([0.1, 1 / 3, -2e-17, 0.7])


def _columns() -> dict[str, object]:
    return {
        "sample_index": np.array([4, 1, 9, 2, 5]),
        "set": np.array(["candidate", "candidate", "independent", "candidate", "candidate"]),
        "sslmem_raw": np.array([0.1, 1 / 3, 0.5, -2e-17, 0.7]),
    }


def test_a_hit_returns_the_candidate_rows_exactly(tmp_path: Path) -> None:
    cache = RescoredChampions(LocalStore(tmp_path))
    summary = make_summary(RAW)
    key = rescore_key("c" * 64, summary)
    assert cache.load(key) is None
    cache.save(key, _columns(), summary)
    loaded = cache.load(key)
    assert loaded is not None
    columns, back = loaded
    np.testing.assert_array_equal(columns["sample_index"], [4, 1, 2, 5])
    np.testing.assert_array_equal(columns["sslmem_raw"], RAW)  # bit for bit
    assert back == summary


def test_the_key_names_the_weights_and_the_protocol(tmp_path: Path) -> None:
    summary = make_summary(RAW)
    cache = RescoredChampions(LocalStore(tmp_path))
    cache.save(rescore_key("c" * 64, summary), _columns(), summary)
    assert cache.load(rescore_key("d" * 64, summary)) is None
    other = summary.model_copy(update={"precision": "bf16 autocast"})
    assert cache.load(rescore_key("c" * 64, other)) is None


def test_a_corrupt_or_foreign_entry_is_ignored(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    cache = RescoredChampions(store)
    summary = make_summary(RAW)
    key, other = rescore_key("c" * 64, summary), rescore_key("d" * 64, summary)
    store.put_bytes(cache.object_key(key), b"{not json")
    assert cache.load(key) is None
    cache.save(other, _columns(), summary)  # a valid entry of another key, under key's name
    store.put_bytes(cache.object_key(key), store.get_bytes(cache.object_key(other)))
    assert json.loads(store.get_bytes(cache.object_key(key)))["key"] == other
    assert cache.load(key) is None
