import math

import pytest
import torch

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.errors import ScoringError
from sslmem.memorization.alignment import (
    AlignmentEstimator,
    alignment_losses,
    anchor_distance_sum,
    cosine_distance,
    l2_distance,
    pair_distance_sum,
    scoring_precision,
)
from tests.helpers import random_images, tiny_encoder

CPU = torch.device("cpu")


def test_distances_on_hand_computed_vectors() -> None:
    a = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [2.0, 2.0]])
    assert torch.allclose(l2_distance(a, b), torch.tensor([math.sqrt(2), 0.0]), atol=1e-6)
    assert torch.allclose(cosine_distance(a, b), torch.tensor([1.0, 0.0]), atol=1e-6)


def test_pair_and_anchor_sums_on_hand_computed_representations() -> None:
    # One point, views [v0, v1, v2, v3]: pairs (v0, v1) and (v2, v3) at distances sqrt2 and 0.
    reps = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    assert torch.allclose(pair_distance_sum(reps, "l2"), torch.tensor([math.sqrt(2)]))
    # Anchor (1, 0) against the views: distances sqrt2 (v1) and 0 (v0, v2, v3).
    anchor = torch.tensor([[1.0, 0.0]])
    assert torch.allclose(anchor_distance_sum(anchor, reps, "l2"), torch.tensor([math.sqrt(2)]))
    assert torch.allclose(anchor_distance_sum(anchor, reps, "cosine"), torch.tensor([1.0]))


def test_losses_have_expected_shape_and_are_chunk_size_invariant() -> None:
    encs = [tiny_encoder(0), tiny_encoder(1)]
    images, keys = random_images(10), torch.arange(10)
    kwargs = dict(
        augmenter=BatchAugmenter(AugmentationSpec()),
        estimator=AlignmentEstimator(views=3, seed=5, estimator="pairs"),
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
            estimator=AlignmentEstimator(estimator="pairs"),
            layers=["backbone"],
            device=CPU,
        )
    with pytest.raises(ScoringError, match="does not exist"):
        alignment_losses(
            [enc],
            random_images(2),
            torch.arange(2),
            augmenter=BatchAugmenter(AugmentationSpec()),
            estimator=AlignmentEstimator(estimator="pairs"),
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
            estimator=AlignmentEstimator(views=2, estimator="pairs"),
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
            estimator=AlignmentEstimator(views=2, estimator="pairs"),
            layers=["head"],
            device=CPU,
        )


def test_pair_mode_equals_a_plain_per_point_loop() -> None:
    enc = tiny_encoder(4).eval()
    images, keys = random_images(5), torch.arange(70, 75)
    spec, k, seed = AugmentationSpec(), 3, 7
    batched = alignment_losses(
        [enc],
        images,
        keys,
        augmenter=BatchAugmenter(spec),
        estimator=AlignmentEstimator(views=k, mode="pair", seed=seed, estimator="pairs"),
        layers=["head"],
        device=CPU,
        chunk_size=2,
        view_batch=2,
    )[0, 0]
    aug = BatchAugmenter(spec)
    expected = []
    with torch.no_grad():
        for i in range(5):
            # Pair j is views (2j, 2j+1) of point i, drawn one at a time.
            dists = []
            for j in range(k):
                one = images[i : i + 1]
                x1 = aug.views(one, keys[i : i + 1], torch.tensor([2 * j]), seed)[0]
                x2 = aug.views(one, keys[i : i + 1], torch.tensor([2 * j + 1]), seed)[0]
                z1, z2 = enc(x1)[0], enc(x2)[0]
                dists.append((z1 / z1.norm() - z2 / z2.norm()).norm().item())
            expected.append(sum(dists) / k)
    assert torch.allclose(batched, torch.tensor(expected), atol=1e-5)


@pytest.mark.parametrize("mode", ["pair", "anchor"])
def test_views_per_forward_are_bounded_and_do_not_change_the_losses(mode: str) -> None:
    enc = tiny_encoder(5)
    sizes: list[int] = []
    handle = enc.backbone.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[0]))
    images, keys = random_images(7), torch.arange(7)
    kwargs = dict(
        augmenter=BatchAugmenter(AugmentationSpec()),
        estimator=AlignmentEstimator(views=9, mode=mode, seed=2, estimator="pairs"),  # type: ignore[arg-type]
        layers=["head"],
        device=CPU,
        chunk_size=3,
    )
    try:
        small = alignment_losses([enc], images, keys, view_batch=4, **kwargs)  # type: ignore[arg-type]
        bounded = max(sizes)
        sizes.clear()
        whole = alignment_losses([enc], images, keys, view_batch=64, **kwargs)  # type: ignore[arg-type]
    finally:
        handle.remove()
    # chunk_size 3 x view_batch 4 = 12 images per forward at most, although K = 9 needs 18
    # (pair) or 10 (anchor) per point; with a large view_batch one forward holds them all.
    assert bounded <= 12
    assert max(sizes) == 3 * (18 if mode == "pair" else 9)
    assert torch.allclose(small, whole, atol=1e-5)


def test_scoring_precision_turns_tf32_off_for_fp32_cuda_scores_and_restores_it() -> None:
    # Only the backend flags are touched (no CUDA call), so this runs on CPU-only machines.
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with scoring_precision(torch.device("cuda")):
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with scoring_precision(CPU):
            assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _checkerboard(size: int) -> torch.Tensor:
    """uint8 ``[1, 1, size, size]``: alternating 0/255 pixels (the highest frequency)."""
    idx = torch.arange(size)
    return ((idx[:, None] + idx[None, :]) % 2 * 255).to(torch.uint8)[None, None]


def test_clean_anchor_and_views_are_resampled_alike_and_antialiased() -> None:
    # Shrinking a 1-pixel checkerboard 24 -> 8 (factor 3): plain bilinear sampling lands on
    # pixel centres and returns the pattern itself (values 0/1, i.e. -1/+1 after normalising
    # with mean 0.5, std 0.5). Antialiased, each output averages 3x3 input pixels: 4/9 or 5/9,
    # i.e. +-1/9 after normalising.
    identity = AugmentationSpec(
        output_size=8, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_prob=0.0,
        jitter_prob=0.0,
    )  # fmt: skip
    aug, board = BatchAugmenter(identity), _checkerboard(24)
    clean = aug.clean(board)
    assert clean.shape == (1, 1, 8, 8)
    assert torch.allclose(clean.abs(), torch.full_like(clean, 1 / 9), atol=1e-5)
    # A view whose crop is the whole image (no flip, no jitter) is the clean anchor.
    images = random_images(3, size=24)
    views = aug.views(images, torch.arange(3), torch.tensor([0]), seed=0)[:, 0]
    assert torch.allclose(views, aug.clean(images), atol=1e-6)
    assert torch.allclose(
        aug.views(board, torch.arange(1), torch.tensor([0]), seed=0)[:, 0], clean, atol=1e-6
    )
    # At the input size the anchor is the image itself (no resampling at all).
    same = BatchAugmenter(AugmentationSpec()).clean(board)
    assert torch.equal(same, board.float() / 255 * 2 - 1)
