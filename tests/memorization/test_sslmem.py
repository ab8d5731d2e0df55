import copy

import pytest
import torch

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.errors import ScoringError
from sslmem.memorization import AlignmentEstimator, compute_sslmem, sslmem_from_alignment
from sslmem.memorization.normalize import minmax_normalize, normalize, range_normalize
from tests.helpers import random_images, tiny_encoder

SPEC = AugmentationSpec()


def _score(cands, refs, images, keys, seed=0, **kw):  # type: ignore[no-untyped-def]
    return compute_sslmem(
        cands,
        refs,
        images,
        keys,
        augment_spec=SPEC,
        estimator=AlignmentEstimator(views=3, seed=seed, estimator="pairs"),
        layer=kw.pop("layer", "head"),
        **kw,
    )


def test_sslmem_is_reference_minus_candidate_mean() -> None:
    cand = torch.tensor([[0.2, 0.5], [0.4, 0.5]])
    ref = torch.tensor([[0.6, 0.1]])
    assert torch.allclose(sslmem_from_alignment(cand, ref), torch.tensor([0.3, -0.4]))


def test_encoder_scored_against_itself_gives_zero() -> None:
    f = tiny_encoder(0)
    result = _score([f], [copy.deepcopy(f)], random_images(8), torch.arange(8))
    assert torch.equal(result.raw, torch.zeros(8))


def test_swapping_candidates_and_references_negates_scores() -> None:
    f, g = tiny_encoder(0), tiny_encoder(1)
    images, keys = random_images(8), torch.arange(8)
    ab = _score([f], [g], images, keys).raw
    ba = _score([g], [f], images, keys).raw
    assert torch.allclose(ab, -ba, atol=1e-6)
    assert ab.abs().sum() > 0


def test_permuting_points_permutes_scores() -> None:
    f, g = tiny_encoder(0), tiny_encoder(1)
    images, keys = random_images(9), torch.arange(9) * 7
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    base = _score([f], [g], images, keys, chunk_size=4).raw
    permuted = _score([f], [g], images[perm], keys[perm], chunk_size=4).raw
    assert torch.allclose(base[perm], permuted, atol=1e-5)


def test_same_seed_identical_and_other_seed_different() -> None:
    f, g = tiny_encoder(0), tiny_encoder(1)
    images, keys = random_images(6), torch.arange(6)
    a = _score([f], [g], images, keys, seed=1).raw
    b = _score([f], [g], images, keys, seed=1).raw
    c = _score([f], [g], images, keys, seed=2).raw
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_several_candidates_and_references_are_averaged() -> None:
    fs, gs = [tiny_encoder(0), tiny_encoder(2)], [tiny_encoder(1), tiny_encoder(3)]
    images, keys = random_images(5), torch.arange(5)
    res = _score(fs, gs, images, keys)
    assert res.candidate_alignment.shape == (2, 5)
    assert res.reference_alignment.shape == (2, 5)
    singles = [_score([f], [g], images, keys).raw for f in fs for g in gs]
    assert torch.allclose(res.raw, torch.stack(singles).mean(0), atol=1e-5)


def test_memorised_points_rank_highest() -> None:
    """Fine-tune a copy of g to collapse the views of 6 chosen points while keeping the other
    points' alignment as it was: the engine must rank exactly those 6 highest.

    The chosen images are given a distinct intensity band so that an 8-channel encoder can tell
    them apart in a few steps; what is tested is the engine, not SSL training (the paper's
    signature on real data is tested with the training recipe).
    """
    g = tiny_encoder(0, head_dim=16, pool=4).eval()
    f = copy.deepcopy(g)
    images, keys = random_images(40, seed=5), torch.arange(40)
    chosen, others = torch.arange(6), torch.arange(6, 40)
    images[chosen] = images[chosen] // 4 + 190
    images[others] = images[others] // 2
    aug = BatchAugmenter(SPEC)
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)

    def align(z: torch.Tensor) -> torch.Tensor:
        return (z[:, 0] - z[:, 1]).norm(dim=-1)

    for step in range(50):
        views = aug.views(images, keys, torch.arange(2), seed=1000 + step).flatten(0, 1)
        z = torch.nn.functional.normalize(f(views), dim=-1).view(40, 2, -1)
        with torch.no_grad():
            zg = torch.nn.functional.normalize(g(views), dim=-1).view(40, 2, -1)
        keep = (align(z[others]) - align(zg[others])).pow(2).mean()
        loss = align(z[chosen]).mean() + 100 * keep
        opt.zero_grad()
        loss.backward()
        opt.step()
    raw = compute_sslmem(
        [f],
        [g],
        images,
        keys,
        augment_spec=SPEC,
        estimator=AlignmentEstimator(views=4, estimator="pairs"),
        layer="head",
    ).raw
    assert set(torch.topk(raw, 6).indices.tolist()) == set(chosen.tolist())
    assert raw[chosen].min() > raw[others].max()


def test_empty_encoder_lists_rejected() -> None:
    with pytest.raises(ScoringError, match="at least one candidate"):
        _score([], [tiny_encoder()], random_images(2), torch.arange(2))


def test_normalisations() -> None:
    raw = torch.tensor([-1.0, 0.0, 3.0])
    assert torch.allclose(range_normalize(raw), raw / 4)
    assert torch.allclose(minmax_normalize(raw), torch.tensor([0.0, 0.25, 1.0]))
    assert torch.equal(minmax_normalize(torch.ones(3)), torch.zeros(3))
    with pytest.raises(Exception, match="unknown normalisation"):
        normalize(raw, "zscore")
