import pytest
import torch
from torch import nn

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.errors import ScoringError
from sslmem.memorization import (
    AlignmentEstimator,
    compute_layermem,
    layermem_from_scores,
    unit_activations,
    unitmem_from_activations,
)
from sslmem.memorization.layers import select_layers
from sslmem.memorization.representation import capture_layers
from sslmem.memorization.unitmem import unit_activations_by_layer, unitmem_per_unit
from sslmem.models import build_encoder
from sslmem.models.encoder import Encoder
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


def test_layermem_normalises_on_one_common_scale_of_all_layers_and_points() -> None:
    # Raw scores spanning [-0.2, 0.6], not [0, 1]: a missing or per-layer normalisation fails.
    raw = torch.tensor([[-0.2, 0.0], [0.1, 0.3], [0.2, 0.6]])
    mean_raw, layermem, delta = layermem_from_scores(raw)
    # By hand: (x + 0.2) / 0.8 -> [[0, .25], [.375, .625], [.5, 1]]; row means; differences.
    assert torch.allclose(mean_raw, torch.tensor([-0.1, 0.2, 0.4]))
    assert torch.allclose(layermem, torch.tensor([0.125, 0.5, 0.75]))
    assert torch.allclose(delta, torch.tensor([0.125, 0.375, 0.25]))


def test_layermem_of_equal_scores_is_zero_not_nan() -> None:
    _, layermem, delta = layermem_from_scores(torch.full((2, 3), 0.7))
    assert torch.equal(layermem, torch.zeros(2)) and torch.equal(delta, torch.zeros(2))


def test_compute_layermem_in_one_pass_matches_per_layer_sslmem() -> None:
    from sslmem.memorization import compute_sslmem

    f, g = tiny_encoder(0), tiny_encoder(1)
    images, keys = random_images(6), torch.arange(6)
    est = AlignmentEstimator(views=2, seed=3, estimator="pairs")
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


def _pooling_encoder() -> Encoder:
    """Backbone = global average pool: each unit (channel) is the image's mean value there."""
    backbone = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Encoder(
        backbone=backbone,
        head=nn.Identity(),
        arch="test_pool",
        arch_config={},
        feature_dim=3,
        head_dim=3,
    )


def test_unitmem_end_to_end_on_constant_images_by_hand() -> None:
    # Constant-colour images: crops, flips and resizing leave every view equal to the image, so
    # with jitter off and normalisation x / 255 a unit's mean activation is its channel value.
    values = [(255, 0, 51), (0, 0, 51), (0, 0, 153)]
    images = torch.tensor(values, dtype=torch.uint8)[:, :, None, None].expand(3, 3, 8, 8)
    spec = AugmentationSpec(jitter_prob=0.0, grayscale_prob=0.0, mean=(0.0,), std=(1.0,))
    acts = unit_activations_by_layer(
        _pooling_encoder(),
        images.contiguous(),
        torch.tensor([10, 11, 12]),
        layers=["backbone.0", "backbone"],
        augment_spec=spec,
        views=4,
        chunk_size=2,  # two chunks
    )
    expected_mu = torch.tensor(values, dtype=torch.float32) / 255
    for layer in ("backbone.0", "backbone"):
        assert torch.allclose(acts[layer], expected_mu, atol=1e-5), layer
    result = unitmem_per_unit(acts["backbone"], "mean")
    # unit 0: max 1 (point 0), others (0, 0) -> (1 - 0) / (1 + 0) = 1
    # unit 1: silent -> 0
    # unit 2: max 0.6 (point 2), others (0.2, 0.2) mean 0.2 -> (0.6 - 0.2) / (0.6 + 0.2) = 0.5
    assert torch.allclose(result.unitmem, torch.tensor([1.0, 0.0, 0.5]), atol=1e-5)
    assert result.argmax[[0, 2]].tolist() == [0, 2]
    assert torch.allclose(result.mu_max, torch.tensor([1.0, 0.0, 0.6]), atol=1e-5)
    assert torch.allclose(result.mu_rest, torch.tensor([0.0, 0.0, 0.2]), atol=1e-5)


def test_select_layers_orders_and_checks_names() -> None:
    enc = build_encoder(
        "small_cnn", in_channels=1, image_size=16, arch_kwargs={"widths": [4, 4]},
        head_hidden_dim=8, head_output_dim=4,
    )  # fmt: skip
    assert select_layers([enc], "stages") == (
        "backbone.blocks.0", "backbone.blocks.1", "backbone", "head",
    )  # fmt: skip
    assert select_layers([enc], "stages", include_head=False)[-1] == "backbone"
    # Explicit names come back in forward order, whatever order they were given in.
    assert select_layers([enc], "head, backbone.blocks.0.conv") == (
        "backbone.blocks.0.conv", "head",
    )  # fmt: skip
    with pytest.raises(ScoringError, match=r"'backbone\.nope' is not a layer") as info:
        select_layers([enc], "backbone,backbone.nope")
    assert "backbone.blocks.1.relu" in (info.value.fix or "")
    for bad in ("", ",,", "backbone,"):
        with pytest.raises(ScoringError, match="empty name"):
            select_layers([enc], bad)
    with pytest.raises(ScoringError, match="more than once"):
        select_layers([enc], "backbone,backbone")


def test_select_layers_refuses_a_module_that_runs_several_times() -> None:
    # A torchvision ResNet block calls its one `relu` module twice per forward.
    enc = build_encoder(
        "resnet18", in_channels=1, image_size=16, head_hidden_dim=8, head_output_dim=4
    )
    with pytest.raises(ScoringError, match="fires exactly once"):
        select_layers([enc], "backbone.layer1.0.relu")
    assert select_layers([enc], "stages")[:4] == tuple(f"backbone.layer{i}" for i in range(1, 5))


def test_unit_activations_in_view_blocks_equal_a_plain_mean_over_all_views() -> None:
    # Memory is bounded by processing views in blocks; the result must be the plain mean over
    # all K views, computed here view by view with one forward per view (an independent path).
    enc = tiny_encoder().eval()
    images = random_images(5, seed=3)
    keys = torch.arange(5)
    spec = AugmentationSpec()
    blocked = unit_activations_by_layer(
        enc, images, keys, layers=["backbone"], augment_spec=spec, views=7, view_batch=3
    )["backbone"]
    augmenter = BatchAugmenter(spec)
    per_view = []
    with torch.inference_mode():
        for v in range(7):
            view = augmenter.views(images, keys, torch.tensor([v]), 0)[:, 0]
            per_view.append(capture_layers(enc, view, ["backbone"])["backbone"].flatten(1))
    expected = torch.stack(per_view).mean(dim=0)
    torch.testing.assert_close(blocked, expected, rtol=1e-5, atol=1e-6)
