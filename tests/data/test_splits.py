from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sslmem.config import SplitConfig
from sslmem.data import ImageDataset, SplitManifest, load_manifest, make_split, save_manifest
from sslmem.data.splits import SET_NAMES
from sslmem.errors import ConfigError, DataError, ManifestMismatchError, StoreError


def _dataset(labels: list[int] | np.ndarray, name: str = "toy", seed: int = 0) -> ImageDataset:
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (len(labels_t), 1, 2, 2), generator=gen, dtype=torch.uint8)
    classes = tuple(f"c{k}" for k in range(int(labels_t.max()) + 1))
    return ImageDataset(name, images, labels_t, classes)


@pytest.fixture
def balanced() -> ImageDataset:
    return _dataset(np.repeat(np.arange(5), 40))  # 200 points, 40 per class


def _sets(manifest: SplitManifest) -> dict[str, np.ndarray]:
    return {name: manifest.set_indices(name) for name in SET_NAMES}


def test_same_inputs_give_byte_identical_manifest(balanced: ImageDataset, tmp_path: Path) -> None:
    config = SplitConfig(seed=3)
    first, second = make_split(balanced, fractions=config), make_split(balanced, fractions=config)
    assert first.to_json() == second.to_json()
    assert first.manifest_sha256 == second.manifest_sha256
    path = save_manifest(first, tmp_path / "nested" / "split.json")
    assert path.read_bytes() == first.to_json() and path.read_bytes().endswith(b"}\n")
    assert load_manifest(path).to_json() == first.to_json()
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temp file left behind


def test_different_seed_gives_different_split(balanced: ImageDataset) -> None:
    a = make_split(balanced, fractions=SplitConfig(seed=0))
    b = make_split(balanced, fractions=SplitConfig(seed=1))
    assert not np.array_equal(a.set_indices("candidate"), b.set_indices("candidate"))
    assert a.manifest_sha256 != b.manifest_sha256


def test_sets_are_disjoint_sorted_and_cover_the_pool(balanced: ImageDataset) -> None:
    manifest = make_split(balanced)  # default fractions 0.7 / 0.1 / 0.1 / 0.1
    sets = _sets(manifest)
    assert [len(sets[n]) for n in SET_NAMES] == [140, 20, 20, 20]
    union = np.concatenate(list(sets.values()))
    assert sorted(union.tolist()) == list(range(200))
    assert all(np.all(np.diff(idx) > 0) and idx.dtype == np.int64 for idx in sets.values())


def test_pool_size_draws_a_subset_first(balanced: ImageDataset) -> None:
    config = SplitConfig(shared=0.6, candidate=0.2, independent=0.1, extra=0.1, pool_size=50)
    manifest = make_split(balanced, fractions=config)
    sets = _sets(manifest)
    assert manifest.pool_size == 50 and [len(sets[n]) for n in SET_NAMES] == [30, 10, 5, 5]
    union = np.concatenate(list(sets.values()))
    assert len(np.unique(union)) == 50 and union.max() < 200
    # The pool itself is stratified: 10 of each of the 5 classes.
    assert np.bincount(balanced.labels.numpy()[union]).tolist() == [10] * 5


def test_rounding_covers_pool_exactly() -> None:
    ds = _dataset(np.arange(37) % 3)
    config = SplitConfig(shared=0.55, candidate=0.15, independent=0.15, extra=0.15)
    sets = _sets(make_split(ds, fractions=config))
    assert sum(len(s) for s in sets.values()) == 37
    # Quotas 20.35, 5.55, 5.55, 5.55: the two spare points go to the largest remainders (ties:
    # earlier set first).
    assert [len(sets[n]) for n in SET_NAMES] == [20, 6, 6, 5]


def test_split_is_stratified_by_label() -> None:
    # Unbalanced classes: 300 / 120 / 60 / 20 points.
    labels = np.repeat(np.arange(4), [300, 120, 60, 20])
    ds = _dataset(np.random.default_rng(0).permutation(labels))
    config = SplitConfig(shared=0.6, candidate=0.2, independent=0.1, extra=0.1)
    manifest = make_split(ds, fractions=config)
    for name, idx in _sets(manifest).items():
        counts = np.bincount(ds.labels.numpy()[idx], minlength=4)
        expected = np.array([300, 120, 60, 20]) * getattr(config, name)
        assert np.all(np.abs(counts - expected) <= 2), (name, counts, expected)


def test_bundled_split_is_exactly_balanced() -> None:
    from sslmem.data import load_dataset

    ds = load_dataset("bundled")
    manifest = make_split(ds)
    counts = np.bincount(ds.labels.numpy()[manifest.set_indices("candidate")])
    assert counts.tolist() == [40] * 10


def test_training_indices_follow_the_protocol(balanced: ImageDataset) -> None:
    manifest = make_split(balanced)
    sets = _sets(manifest)
    candidate = manifest.training_indices("candidate")
    reference = manifest.training_indices("reference")
    assert candidate.tolist() == sorted([*sets["shared"], *sets["candidate"]])
    assert reference.tolist() == sorted([*sets["shared"], *sets["independent"]])
    assert not set(candidate) & set(sets["extra"]) and not set(reference) & set(sets["extra"])
    with pytest.raises(ConfigError, match="candidate, reference"):
        manifest.training_indices("teacher")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown split set"):
        manifest.set_indices("holdout")  # type: ignore[arg-type]


def test_tampered_manifest_is_refused(balanced: ImageDataset, tmp_path: Path) -> None:
    manifest = make_split(balanced)
    payload = json.loads(manifest.to_json())
    moved = payload["indices"]["extra"].pop()  # move a point from S_E into S_C
    payload["indices"]["candidate"] = sorted([*payload["indices"]["candidate"], moved])
    path = tmp_path / "split.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ManifestMismatchError, match="hash mismatch"):
        load_manifest(path)
    payload = json.loads(manifest.to_json())
    payload["seed"] = 99
    with pytest.raises(ManifestMismatchError):
        SplitManifest.from_json(json.dumps(payload).encode())


def test_malformed_or_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"absent\.json does not exist"):
        load_manifest(tmp_path / "absent.json")
    with pytest.raises(DataError, match="not valid JSON"):
        SplitManifest.from_json(b"{")
    with pytest.raises(DataError, match="malformed"):
        SplitManifest.from_json(b'{"format_version": 1}')


def test_manifest_against_other_data_is_refused(balanced: ImageDataset) -> None:
    manifest = make_split(balanced)
    manifest.verify_against(balanced)  # the dataset it was made from: fine
    other = _dataset(balanced.labels.numpy(), seed=1)  # same name and size, other pixels
    with pytest.raises(ManifestMismatchError) as info:
        manifest.verify_against(other)
    message = str(info.value)
    assert balanced.content_hash in message and other.content_hash in message
    assert "re-create the split" in message
    with pytest.raises(ManifestMismatchError):
        manifest.verify_against(balanced.subset(np.arange(100)))


def test_empty_set_names_the_set_and_the_fix() -> None:
    ds = _dataset(np.arange(10) % 2)
    config = SplitConfig(shared=0.97, candidate=0.01, independent=0.01, extra=0.01)
    with pytest.raises(DataError, match="'candidate' would be empty") as info:
        make_split(ds, fractions=config)
    assert info.value.fix is not None and "pool_size" in info.value.fix


def test_pool_larger_than_dataset_is_refused(balanced: ImageDataset) -> None:
    with pytest.raises(DataError, match="pool_size=500"):
        make_split(balanced, fractions=SplitConfig(pool_size=500))
