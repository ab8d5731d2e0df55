import math

import pytest
import torch

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.errors import ScoringError
from sslmem.memorization.alignment import (
    AlignmentEstimator,
    _loss_from_representations,
    alignment_losses,
    cosine_distance,
    l2_distance,
)
from tests.helpers import random_images, tiny_encoder

CPU = torch.device("cpu")


def test_distances_on_hand_computed_vectors() -> None:
    a = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [2.0, 2.0]])
    assert torch.allclose(l2_distance(a, b), torch.tensor([math.sqrt(2), 0.0]), atol=1e-6)
    assert torch.allclose(cosine_distance(a, b), torch.tensor([1.0, 0.0]), atol=1e-6)


def test_pair_and_anchor_losses_on_hand_computed_representations() -> None:
    # One point, views grouped as [v0, v1, v2, v3]: pairs (v0, v1) and (v2, v3).
    reps = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    pair = _loss_from_representations(reps, AlignmentEstimator(views=2, mode="pair"))
    assert torch.allclose(pair, torch.tensor([math.sqrt(2) / 2]))
    # Anchor: v0 is the clean image, distances to v1, v2, v3 = sqrt2, 0, 0.
    anchor = _loss_from_representations(reps, AlignmentEstimator(views=3, mode="anchor"))
    assert torch.allclose(anchor, torch.tensor([math.sqrt(2) / 3]))


def test_losses_have_expected_shape_and_are_chunk_size_invariant() -> None:
    encs = [tiny_encoder(0), tiny_encoder(1)]
    images, keys = random_images(10), torch.arange(10)
    kwargs = dict(
        augmenter=BatchAugmenter(AugmentationSpec()),
        estimator=AlignmentEstimator(views=3, seed=5),
        layers=["backbone", "head"],
        device=CPU,
    )
    a = alignment_losses(encs, images, keys, chunk_size=10, **kwargs)  # type: ignore[arg-type]
    b = alignment_losses(encs, images, keys, chunk_size=3, **kwargs)  # type: ignore[arg-type]
    assert a.shape == (2, 2, 10)
    assert (a >= 0).all() and (a <= 2).all()
    assert torch.allclose(a, b, atol=1e-5)


def test_anchor_mode_equals_a_plain_per_point_loop() -> None:
    enc = tiny_encoder(3).eval()
    images, keys = random_images(6), torch.arange(40, 46)
    spec, k, seed = AugmentationSpec(), 4, 11
    batched = alignment_losses(
        [enc],
        images,
        keys,
        augmenter=BatchAugmenter(spec),
        estimator=AlignmentEstimator(views=k, mode="anchor", seed=seed),
        layers=["head"],
        device=CPU,
        chunk_size=4,
    )[0, 0]
    aug = BatchAugmenter(spec)
    expected = []
    with torch.no_grad():
        for i in range(6):
            clean = enc(aug.clean(images[i : i + 1]))
            views = aug.views(images[i : i + 1], keys[i : i + 1], torch.arange(k), seed)[0]
            dists = []
            for j in range(k):
                z = enc(views[j : j + 1])
                a = clean / clean.norm()
                b = z / z.norm()
                dists.append((a - b).norm().item())
            expected.append(sum(dists) / k)
    assert torch.allclose(batched, torch.tensor(expected), atol=1e-5)


def test_bad_inputs_raise_clear_errors() -> None:
    enc = tiny_encoder()
    with pytest.raises(ScoringError, match="views must be >= 1"):
        AlignmentEstimator(views=0)
    with pytest.raises(ScoringError, match="no points"):
        alignment_losses(
            [enc],
            random_images(0),
            torch.arange(0),
            augmenter=BatchAugmenter(AugmentationSpec()),
            estimator=AlignmentEstimator(),
            layers=["backbone"],
            device=CPU,
        )
    with pytest.raises(ScoringError, match="does not exist"):
        alignment_losses(
            [enc],
            random_images(2),
            torch.arange(2),
            augmenter=BatchAugmenter(AugmentationSpec()),
            estimator=AlignmentEstimator(),
            layers=["backbone.nope"],
            device=CPU,
        )


def test_non_finite_representations_are_refused() -> None:
    enc = tiny_encoder()
    with torch.no_grad():
        enc.head[2].weight.fill_(float("nan"))
    with pytest.raises(ScoringError, match="NaN/inf"):
        alignment_losses(
            [enc],
            random_images(2),
            torch.arange(2),
            augmenter=BatchAugmenter(AugmentationSpec()),
            estimator=AlignmentEstimator(views=2),
            layers=["head"],
            device=CPU,
        )


def test_encoders_with_different_representation_sizes_are_refused() -> None:
    with pytest.raises(ScoringError, match="disagree"):
        alignment_losses(
            [tiny_encoder(head_dim=4), tiny_encoder(head_dim=5)],
            random_images(2),
            torch.arange(2),
            augmenter=BatchAugmenter(AugmentationSpec()),
            estimator=AlignmentEstimator(views=2),
            layers=["head"],
            device=CPU,
        )
