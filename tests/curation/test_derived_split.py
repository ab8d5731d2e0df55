"""Derived splits remove exactly the chosen candidates and say so (issue 18)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sslmem.config import SplitConfig
from sslmem.data import load_dataset, make_split
from sslmem.data.splits import SplitManifest, derive_split
from sslmem.errors import ConfigError, ManifestMismatchError

SCORES = "ab" * 32


@pytest.fixture(scope="module")
def parent() -> SplitManifest:
    return make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=200, seed=1))


def _derive(parent: SplitManifest, removed: list[int]) -> SplitManifest:
    return derive_split(
        parent, removed, strategy="top", draw=0, seed=0, scores_sha256=SCORES, reason="test"
    )


def test_removes_exactly_the_chosen_candidates_and_nothing_else(parent: SplitManifest) -> None:
    candidates = list(parent.indices.candidate)
    removed = [candidates[4], candidates[0]]
    derived = _derive(parent, removed)
    assert set(derived.indices.candidate) == set(candidates) - set(removed)
    for name in ("shared", "independent", "extra"):
        assert getattr(derived.indices, name) == getattr(parent.indices, name)
    assert derived.derivation is not None
    assert derived.derivation.removed == tuple(sorted(removed))
    assert derived.derivation.parent_manifest_sha256 == parent.manifest_sha256
    assert derived.derivation.k == 2
    assert derived.manifest_sha256 != parent.manifest_sha256
    # The reference trains on the same points under both; the candidate on two fewer.
    assert np.array_equal(
        derived.training_indices("reference"), parent.training_indices("reference")
    )
    assert (
        derived.training_indices("candidate").size == parent.training_indices("candidate").size - 2
    )


def test_round_trips_and_a_tampered_removal_is_refused(parent: SplitManifest) -> None:
    derived = _derive(parent, [parent.indices.candidate[1]])
    again = SplitManifest.from_json(derived.to_json())
    assert again == derived and again.manifest_sha256 == derived.manifest_sha256
    payload = json.loads(derived.to_json())
    payload["derivation"]["reason"] = "edited"
    with pytest.raises(ManifestMismatchError, match="hash mismatch"):
        SplitManifest.from_json(json.dumps(payload))


def test_a_plain_split_has_no_derivation_key(parent: SplitManifest) -> None:
    # Manifests written before derivations existed keep their bytes and hash; an explicit
    # null derivation is the same content.
    assert "derivation" not in json.loads(parent.to_json())
    payload = json.loads(parent.to_json())
    again = SplitManifest.from_json(json.dumps({**payload, "derivation": None}))
    assert again.manifest_sha256 == parent.manifest_sha256


@pytest.mark.parametrize(
    ("removed", "message"),
    [
        ([], "no candidates to remove"),
        ("dup", "listed twice"),
        ("shared", "not candidates"),
        ("all", "leaves none"),
    ],
)
def test_bad_removals_are_refused(parent: SplitManifest, removed: object, message: str) -> None:
    candidates = list(parent.indices.candidate)
    chosen = {
        "dup": [candidates[0], candidates[0]],
        "shared": [parent.indices.shared[0]],
        "all": candidates,
    }.get(str(removed), removed)
    with pytest.raises(ConfigError, match=message):
        _derive(parent, chosen)  # type: ignore[arg-type]


def test_removals_do_not_stack(parent: SplitManifest) -> None:
    derived = _derive(parent, [parent.indices.candidate[0]])
    with pytest.raises(ConfigError, match="derived split"):
        _derive(derived, [derived.indices.candidate[0]])
