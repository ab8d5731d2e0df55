"""The all-pairs (U-statistic) estimator: exact sums, same expectation, blocking, provenance."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.config import ModelConfig, ScoringConfig, SplitConfig, TrainingConfig
from sslmem.data import load_dataset, make_split
from sslmem.errors import ConfigError, ScoringError
from sslmem.memorization.alignment import AlignmentEstimator, alignment_losses, pair_distance_sum
from sslmem.memorization.judgement import JudgementOutcome, JudgementPolicy, ScoredVersion, judge
from sslmem.memorization.layer_scoring import score_layers, write_layer_report
from sslmem.memorization.scoring import ScoreSummary, score_split, write_score_report
from sslmem.memorization.ustat import AllPairsAccumulator, all_pairs_distance_sum
from sslmem.models import build_encoder, save_checkpoint
from sslmem.models.checkpoint import load_checkpoint, training_recipe
from sslmem.tracking import tags as T
from tests.helpers import random_images, tiny_encoder
from tests.memorization.scored import make_summary, make_version

CPU = torch.device("cpu")


# ------------------------------------------------------------------ exact sums over all pairs


def _loop_sum(reps: torch.Tensor, distance: str) -> torch.Tensor:
    """Plain double loop over i < j, in float64, straight from the definitions."""
    out = []
    for point in reps.double():
        total = 0.0
        for i, j in itertools.combinations(range(point.shape[0]), 2):
            a, b = point[i], point[j]
            if distance == "l2":
                total += float((a / a.norm() - b / b.norm()).norm())
            else:
                total += 1.0 - float(a @ b / (a.norm() * b.norm()))
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def test_hand_computed_three_views() -> None:
    # Unit views (1,0), (0,1), (-1,0) (the last scaled: scale must not matter):
    # l2 distances sqrt2, 2, sqrt2; cosine distances 1, 2, 1.
    reps = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-3.0, 0.0]]])
    assert all_pairs_distance_sum(reps, "l2").item() == pytest.approx(2 + 2 * math.sqrt(2))
    assert all_pairs_distance_sum(reps, "cosine").item() == pytest.approx(4.0)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("blocks", [[11], [1] * 11, [2, 2, 2, 2, 3], [5, 1, 4, 1]])
def test_block_sums_equal_a_plain_double_loop(distance: str, blocks: list[int]) -> None:
    gen = torch.Generator().manual_seed(3)
    # An offset makes the views close together, as a memorising encoder's are (the regime
    # where a closed form can lose digits).
    reps = torch.randn(4, 11, 6, generator=gen) * 0.05 + torch.randn(4, 1, 6, generator=gen)
    acc = AllPairsAccumulator(distance)
    start = 0
    for size in blocks:
        acc.add(reps[:, start : start + size])
        start += size
    expected = _loop_sum(reps, distance)
    assert acc.count == 11
    assert torch.allclose(acc.pair_sum().double(), expected, rtol=1e-4, atol=1e-5)


def test_accumulator_refuses_unknown_distance_and_empty_input() -> None:
    with pytest.raises(ScoringError, match="no all-pairs estimator for distance 'l1'"):
        AllPairsAccumulator("l1")
    with pytest.raises(ScoringError, match="no views were added"):
        AllPairsAccumulator("l2").pair_sum()


# ------------------------------------------------------------------ same expectation


def _arc_views(half_width: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """Unit 2-d views at angles ~ U(-a, a), a per point: ``[P], -> [P, count, 2]``."""
    theta = (torch.rand(half_width.shape[0], count, generator=gen) * 2 - 1) * half_width[:, None]
    return torch.stack([theta.cos(), theta.sin()], dim=-1).double()


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_both_estimators_are_unbiased_and_ustat_is_less_noisy(distance: str) -> None:
    # Angles theta1, theta2 ~ U(-a, a) i.i.d.: E||u1 - u2|| = E 2|sin((theta1 - theta2)/2)|
    # = 4(a - sin a) / a^2, and E[1 - cos(theta1 - theta2)] = 1 - (sin a / a)^2 (by hand:
    # theta1 - theta2 has the triangular density (2a - |t|) / 4a^2 on [-2a, 2a]).
    a = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    truth = 4 * (a - a.sin()) / a**2 if distance == "l2" else 1 - (a.sin() / a) ** 2
    gen = torch.Generator().manual_seed(0)
    reps, k = 4000, 4  # 4000 replicates of 2K = 8 views per point: equal forwards
    pairs, ustat = [], []
    for _ in range(reps // 500):
        views = _arc_views(a.repeat(500), 2 * k, gen)
        pairs.append(pair_distance_sum(views, distance) / k)  # type: ignore[arg-type]
        ustat.append(all_pairs_distance_sum(views, distance) / (2 * k * (2 * k - 1) / 2))
    for estimates in (torch.cat(pairs), torch.cat(ustat)):
        per_point = estimates.view(-1, 3)  # [replicates, points]
        mean, se = per_point.mean(0), per_point.std(0) / math.sqrt(per_point.shape[0])
        assert ((mean - truth).abs() < 4.5 * se).all(), (mean, truth, se)
    # Rao-Blackwell: averaging over all pairings of the same views cannot add variance.
    var_pairs = torch.cat(pairs).view(-1, 3).var(0)
    var_ustat = torch.cat(ustat).view(-1, 3).var(0)
    assert (var_ustat < var_pairs).all()


# ------------------------------------------------------------------ through the scoring engine


def _losses(estimator: AlignmentEstimator, *, view_batch: int = 32, n: int = 6) -> torch.Tensor:
    return alignment_losses(
        [tiny_encoder(4, pool=2), tiny_encoder(5, pool=2)],
        random_images(n),
        torch.arange(100, 100 + n),
        augmenter=BatchAugmenter(AugmentationSpec()),
        estimator=estimator,
        layers=["backbone", "head"],
        device=CPU,
        chunk_size=4,
        view_batch=view_batch,
    )


def test_ustat_equals_a_plain_per_point_loop() -> None:
    enc = tiny_encoder(4).eval()
    images, keys = random_images(5), torch.arange(70, 75)
    spec, k, seed = AugmentationSpec(), 5, 7
    batched = alignment_losses(
        [enc],
        images,
        keys,
        augmenter=BatchAugmenter(spec),
        estimator=AlignmentEstimator(views=k, seed=seed, estimator="ustat"),
        layers=["head"],
        device=CPU,
        chunk_size=2,
        view_batch=2,
    )[0, 0]
    aug = BatchAugmenter(spec)
    expected = []
    with torch.no_grad():
        for i in range(5):
            one, key = images[i : i + 1], keys[i : i + 1]
            z = [enc(aug.views(one, key, torch.tensor([v]), seed)[0])[0] for v in range(k)]
            dists = [
                (z[a] / z[a].norm() - z[b] / z[b].norm()).norm().item()
                for a, b in itertools.combinations(range(k), 2)
            ]
            expected.append(sum(dists) / len(dists))  # 10 pairs of 5 views
    assert torch.allclose(batched, torch.tensor(expected), atol=1e-5)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_two_views_are_exactly_the_one_pair_of_the_pair_estimator(distance: str) -> None:
    # ustat with K = 2 views uses views 0 and 1: the pair estimator's first pair.
    ustat = _losses(AlignmentEstimator(views=2, distance=distance, estimator="ustat"))  # type: ignore[arg-type]
    pairs = _losses(AlignmentEstimator(views=1, distance=distance, estimator="pairs"))  # type: ignore[arg-type]
    assert torch.allclose(ustat, pairs, atol=1e-6)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_view_blocks_do_not_change_the_estimate(distance: str) -> None:
    est = AlignmentEstimator(views=7, distance=distance, seed=1, estimator="ustat")  # type: ignore[arg-type]
    one_forward = _losses(est, view_batch=7)
    assert one_forward.shape == (2, 2, 6)
    for view_batch in (2, 3):
        assert torch.allclose(_losses(est, view_batch=view_batch), one_forward, atol=1e-6)


def test_views_per_forward_stay_bounded_for_any_k() -> None:
    enc = tiny_encoder(5)
    sizes: list[int] = []
    handle = enc.backbone.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[0]))
    try:
        alignment_losses(
            [enc],
            random_images(4),
            torch.arange(4),
            augmenter=BatchAugmenter(AugmentationSpec()),
            estimator=AlignmentEstimator(views=20, estimator="ustat"),
            layers=["head"],
            device=CPU,
            chunk_size=2,
            view_batch=3,
        )
    finally:
        handle.remove()
    # 2 points x 3 views per forward; 20 views = K forwards per point (pairs would need 40).
    assert max(sizes) == 6 and sum(sizes) == 4 * 20


def test_engine_ustat_and_pairs_agree_in_mean_at_equal_forwards() -> None:
    # Same 16 views per point: ustat over all 120 pairs, pairs over the 8 disjoint ones. Their
    # expectations are equal, so the per-point differences average to zero within their CI.
    enc = tiny_encoder(6, pool=2)
    n = 96
    common: dict[str, Any] = dict(
        augmenter=BatchAugmenter(AugmentationSpec()),
        layers=["head"],
        device=CPU,
        chunk_size=48,
    )
    images, keys = random_images(n, seed=4), torch.arange(n)
    ustat = alignment_losses(
        [enc], images, keys, estimator=AlignmentEstimator(views=16, estimator="ustat"), **common
    )[0, 0].double()
    paper = AlignmentEstimator(views=8, estimator="pairs")
    pairs = alignment_losses([enc], images, keys, estimator=paper, **common)[0, 0].double()
    diff = ustat - pairs
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(n)
    assert not torch.equal(ustat, pairs)  # really different estimates


# ------------------------------------------------------------------ configuration


def test_estimator_settings_are_validated() -> None:
    # The default since the benchmark (same per-point precision at half the forwards)...
    assert ScoringConfig().estimator == "ustat"
    # ...except in anchor mode, which has no view pairs: there the paper's estimator applies.
    assert ScoringConfig(mode="anchor").estimator == "pairs"
    assert ScoringConfig(mode="anchor", views=1).estimator == "pairs"
    with pytest.raises(ValueError, match=r"needs views >= 2.*set scoring\.estimator=pairs"):
        ScoringConfig(views=1)  # one view has no pair: the error names the fix
    assert ScoringConfig(views=1, estimator="pairs").views == 1
    with pytest.raises(ValueError, match="estimator 'ustat' compares views with each other"):
        ScoringConfig(estimator="ustat", mode="anchor")
    with pytest.raises(ValueError, match="needs views >= 2"):
        ScoringConfig(estimator="ustat", views=1)
    with pytest.raises(ValueError, match="estimator"):
        ScoringConfig(estimator="triples")  # type: ignore[arg-type]
    # The kernel validates through the same registry, with the same messages.
    with pytest.raises(ScoringError, match="needs mode 'pair' \\(got mode 'anchor'\\)"):
        AlignmentEstimator(mode="anchor", estimator="ustat")
    with pytest.raises(ScoringError, match="needs views >= 2"):
        AlignmentEstimator(views=1, estimator="ustat")
    # One default, the config's: ustat in pair mode, pairs in anchor mode.
    assert AlignmentEstimator(views=8).estimator == ScoringConfig().estimator == "ustat"
    assert AlignmentEstimator(mode="anchor").estimator == ScoringConfig(mode="anchor").estimator
    assert AlignmentEstimator(views=8, estimator="pairs").forwards_per_point == 16
    assert AlignmentEstimator(views=8, mode="anchor").forwards_per_point == 9
    assert AlignmentEstimator(views=16, estimator="ustat").forwards_per_point == 16
    assert AlignmentEstimator(views=16, estimator="ustat").terms == 120


def test_config_override_names_the_field() -> None:
    from sslmem.config import load_experiment_config

    with pytest.raises(ConfigError, match=r"scoring: .*estimator 'ustat' .* needs mode 'pair'"):
        load_experiment_config(None, ["scoring.estimator=ustat", "scoring.mode=anchor"])


# ------------------------------------------------------------------ provenance and judgement

MODEL = ModelConfig(arch="small_cnn", arch_kwargs={"widths": [8, 8, 8]}, head_hidden_dim=16,
                    head_output_dim=8)  # fmt: skip


def _checkpoint(path: Path, seed: int, role: str, manifest_sha: str) -> Any:
    training = TrainingConfig().model_dump(mode="json")
    model = MODEL.model_dump(mode="json")
    meta = {
        "role": role,
        "split_manifest_sha256": manifest_sha,
        "training": training,
        "model": model,
        "recipe": training_recipe(training, model),
        "augmentation": AugmentationSpec().model_dump(mode="json"),
        "head_trained": True,
        "method": "simclr",
        "seed": seed,
    }
    torch.manual_seed(seed)
    encoder = build_encoder(MODEL, in_channels=1, image_size=28)
    return load_checkpoint(save_checkpoint(encoder, path, metadata=meta))


def test_the_estimator_is_recorded_in_every_report(tmp_path: Path) -> None:
    dataset = load_dataset("bundled")
    split = make_split(dataset, fractions=SplitConfig(pool_size=40, seed=1))
    f = _checkpoint(tmp_path / "f.safetensors", 0, "candidate", split.manifest_sha256)
    g = _checkpoint(tmp_path / "g.safetensors", 1, "reference", split.manifest_sha256)
    scoring = ScoringConfig(views=3, estimator="ustat", sets=("candidate", "independent"))
    spec = AugmentationSpec()
    report = score_split([f], [g], dataset, split, scoring=scoring, augment_spec=spec)
    summary_path = write_score_report(report, tmp_path / "report")
    assert json.loads(summary_path.read_text())["scoring"]["estimator"] == "ustat"
    assert "K = 3 (pair, ustat estimator)" in report.summary.format_table()
    assert T.scoring_provenance(report)["scoring"]["estimator"] == "ustat"
    layers = score_layers(
        [f], [g], dataset, split, scoring=scoring, augment_spec=spec, layers=["head"]
    )
    *_, layers_json = write_layer_report(layers, tmp_path / "report")
    assert json.loads(layers_json.read_text())["scoring"]["estimator"] == "ustat"
    # The per-layer scores at a layer are score_split's at that layer (same estimator).
    head = ScoringConfig(**{**scoring.model_dump(), "layer": "head"})
    direct = score_split([f], [g], dataset, split, scoring=head, augment_spec=spec)
    np.testing.assert_allclose(layers.points["sslmem_raw"], direct.columns["sslmem_raw"], atol=1e-6)


CAND = [0.10, 0.12, 0.08, 0.15, 0.11]
CHAMP = [0.07, 0.10, 0.07, 0.11, 0.09]


def test_different_estimators_are_incomparable_and_the_field_is_named() -> None:
    policy = JudgementPolicy()
    champion = make_version(CHAMP, version="1", views=16, estimator="pairs")
    candidate = make_version(CAND, views=16, estimator="ustat")
    result = judge(candidate, champion, policy)
    assert result.outcome is JudgementOutcome.INCOMPARABLE
    assert result.differences == ["estimator: 'ustat' vs 'pairs'"]
    assert result.mean is None and "estimator" in result.reasons[0]
    same = judge(make_version(CAND, views=16, estimator="ustat"),
                 make_version(CHAMP, version="1", views=16, estimator="ustat"), policy)  # fmt: skip
    assert same.outcome is not JudgementOutcome.INCOMPARABLE and same.mean is not None


def test_summaries_written_before_the_estimator_existed_read_as_pairs() -> None:
    old = json.loads(make_summary(np.asarray(CHAMP)).model_dump_json())
    del old["scoring"]["estimator"]
    summary = ScoreSummary.model_validate(old)
    assert summary.scoring.estimator == "pairs"
    columns = {"sample_index": np.arange(5), "set": ["candidate"] * 5, "sslmem_raw": CHAMP}
    champion = ScoredVersion.from_scores("1", columns, summary, knn_accuracy=0.8,
                                         linear_probe_accuracy=0.85)  # fmt: skip
    pairs = make_version(CAND, estimator="pairs")
    assert judge(pairs, champion, JudgementPolicy()).differences == []
    # A version scored under today's default (ustat) is not silently compared with it.
    upgraded = judge(make_version(CAND), champion, JudgementPolicy())
    assert upgraded.outcome is JudgementOutcome.INCOMPARABLE
    assert upgraded.differences == ["estimator: 'ustat' vs 'pairs'"]
