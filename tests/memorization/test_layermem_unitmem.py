import pytest
import torch

from sslmem.augment import AugmentationSpec
from sslmem.errors import ScoringError
from sslmem.memorization import (
    AlignmentEstimator,
    compute_layermem,
    layermem_from_scores,
    unit_activations,
    unitmem_from_activations,
)
from tests.helpers import random_images, tiny_encoder


def test_unitmem_on_constructed_activations() -> None:
    mu = torch.tensor(
        [
            [1.0, 0.0, 4.0, 4.0],
            [0.0, 0.0, 2.0, 1.0],
            [0.0, 0.0, 2.0, 1.0],
            [0.0, 0.0, 2.0, 4.0],
        ]
    )
    mean = unitmem_from_activations(mu, "mean")
    # unit 0: only one point fires -> 1; unit 1 silent -> 0; unit 2: (4-2)/(4+2);
    # unit 3: others (1, 1, 4) mean 2 -> 1/3.
    assert torch.allclose(mean, torch.tensor([1.0, 0.0, 1 / 3, 1 / 3]), atol=1e-6)
    median = unitmem_from_activations(mu, "median")
    # unit 3: median of others (1, 1, 4) is 1 -> (4-1)/(4+1).
    assert torch.allclose(median, torch.tensor([1.0, 0.0, 1 / 3, 3 / 5]), atol=1e-6)


def test_unitmem_needs_two_points() -> None:
    with pytest.raises(ScoringError, match=">= 2 points"):
        unitmem_from_activations(torch.ones(1, 3))


def test_unit_activations_of_conv_and_linear_layers() -> None:
    enc = tiny_encoder(0)
    images, keys = random_images(5), torch.arange(5)
    conv = unit_activations(
        enc, images, keys, layer="backbone.2", augment_spec=AugmentationSpec(), views=3
    )
    assert conv.shape == (5, 8)
    assert (conv >= 0).all()  # after ReLU
    lin = unit_activations(enc, images, keys, layer="head.1", augment_spec=AugmentationSpec())
    assert lin.shape == (5, 16)
    score = unitmem_from_activations(conv)
    assert score.shape == (8,) and (score >= 0).all() and (score <= 1).all()


def test_layermem_summaries() -> None:
    raw = torch.tensor([[0.0, 0.2], [0.4, 0.6], [1.0, 1.0]])
    mean_raw, layermem, delta = layermem_from_scores(raw)
    assert torch.allclose(mean_raw, torch.tensor([0.1, 0.5, 1.0]))
    assert torch.allclose(layermem, torch.tensor([0.1, 0.5, 1.0]))
    assert torch.allclose(delta, torch.tensor([0.1, 0.4, 0.5]))
    assert torch.allclose(delta.cumsum(0), layermem)


def test_compute_layermem_in_one_pass_matches_per_layer_sslmem() -> None:
    from sslmem.memorization import compute_sslmem

    f, g = tiny_encoder(0), tiny_encoder(1)
    images, keys = random_images(6), torch.arange(6)
    est = AlignmentEstimator(views=2, seed=3)
    layers = ["backbone.2", "backbone", "head"]
    res = compute_layermem(
        [f], [g], images, keys, layers=layers, augment_spec=AugmentationSpec(), estimator=est
    )
    assert res.raw.shape == (3, 6)
    for i, layer in enumerate(layers):
        single = compute_sslmem(
            [f], [g], images, keys, augment_spec=AugmentationSpec(), estimator=est, layer=layer
        )
        assert torch.allclose(res.raw[i], single.raw, atol=1e-5)
