"""Alignment loss of encoders on points: the batched core of every memorisation score.

Wang et al. (ICLR 2024), Eq. 1: ``L_align(h, x) = E_{x', x'' ~ Aug(x)} d(h(x'), h(x''))`` with
``d`` the l2 distance of l2-normalised representations. Estimated with K view pairs per point
("pair" mode, the paper's definition) or with the distance from the clean image to each of K
views ("anchor" mode, the authors' script). In pair mode the ``estimator`` is either ``pairs``
(K independent pairs, 2K views: the paper's) or ``ustat`` (all K(K-1)/2 pairs of K views, an
unbiased U-statistic of the same expectation: :mod:`sslmem.memorization.ustat`).

The points of a chunk go through each encoder together, their K views in blocks of at most
``view_batch`` per point, so memory is bounded for any N and K; each block of views is drawn once
and shared by every encoder, as the estimator requires.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from sslmem.augment import BatchAugmenter
from sslmem.device import to_device_layout
from sslmem.errors import ConfigError, ScoringError
from sslmem.estimators import EstimatorName, EstimatorSpec, check_estimator, default_estimator
from sslmem.memorization.representation import extract_layers
from sslmem.memorization.ustat import AllPairsAccumulator

if TYPE_CHECKING:
    from sslmem.config import ScoringConfig

Distance = Literal["l2", "cosine"]
Mode = Literal["pair", "anchor"]
PairEstimator = EstimatorName


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """l2 distance of l2-normalised vectors: ``[..., D], [..., D] -> [...]`` (paper default)."""
    diff = nn.functional.normalize(a, dim=-1) - nn.functional.normalize(b, dim=-1)
    return diff.pow(2).sum(dim=-1).sqrt()


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos(a, b)``: ``[..., D], [..., D] -> [...]``."""
    return 1.0 - torch.cosine_similarity(a, b, dim=-1)


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l2": l2_distance,
    "cosine": cosine_distance,
}


@dataclass(frozen=True)
class AlignmentEstimator:
    """How the alignment loss is estimated (recorded with every score).

    Attributes:
        views: K: view pairs (``pairs``), views (``ustat``) or views against the clean image
            ("anchor") per point.
        mode: "pair" (view to view, the paper) or "anchor" (clean image to view, the authors'
            script).
        distance: "l2" (of l2-normalised vectors) or "cosine".
        seed: Seed of the views; the same seed gives the same views for the same point keys.
        estimator: "pairs" (K independent pairs, views ``2i, 2i+1``: the paper's; anchor
            mode's only one) or "ustat" (pair mode: the mean over all K(K-1)/2 pairs of views
            ``0..K-1``); ``None``: the mode's default (:mod:`sslmem.estimators`: ustat in pair
            mode, pairs in anchor mode), as in ``scoring.estimator``.
    """

    views: int = 8
    mode: Mode = "pair"
    distance: Distance = "l2"
    seed: int = 0
    estimator: PairEstimator | None = None

    def __post_init__(self) -> None:
        if self.views < 1:
            raise ScoringError(f"views must be >= 1, got {self.views}", "use e.g. --views 8")
        if self.distance not in DISTANCES:
            raise ScoringError(
                f"unknown distance {self.distance!r}", f"use one of {sorted(DISTANCES)}"
            )
        try:
            if self.estimator is None:  # the one default (sslmem.estimators)
                object.__setattr__(self, "estimator", default_estimator(self.mode))
            spec = check_estimator(str(self.estimator), self.mode, self.views)
        except ConfigError as exc:
            raise ScoringError(exc.problem, exc.fix) from None
        object.__setattr__(self, "_spec", spec)

    @classmethod
    def from_config(cls, scoring: ScoringConfig) -> AlignmentEstimator:
        """The estimator of a ``scoring`` config section (K, mode, distance, seed, estimator)."""
        return cls(
            views=scoring.views,
            mode=scoring.mode,
            distance=scoring.distance,
            seed=scoring.seed,
            estimator=scoring.estimator,
        )

    @property
    def spec(self) -> EstimatorSpec:
        """The registered estimator (:data:`sslmem.estimators.ESTIMATORS`)."""
        spec: EstimatorSpec = self.__dict__["_spec"]
        return spec

    @property
    def terms(self) -> int:
        """Distances averaged per point: K (pairs, anchor) or K(K-1)/2 (ustat)."""
        return self.spec.terms(self.views)

    @property
    def forwards_per_point(self) -> int:
        """Encoder forwards per point and encoder: 2K (pairs), K + 1 (anchor), K (ustat)."""
        return self.spec.forwards(self.views, self.mode)


@contextlib.contextmanager
def scoring_precision(device: torch.device, *, autocast_bf16: bool = False) -> Iterator[None]:
    """The numeric precision of scoring forwards.

    SSLMem is a difference of two small losses, so on CUDA it is computed in true fp32 by
    default: TF32 (10-bit mantissa, on by default for cuDNN convolutions) is switched off for
    the duration and restored afterwards. ``autocast_bf16`` opts in to bf16 autocast (faster,
    noisier); on the CPU everything is fp32.
    """
    if device.type != "cuda":
        yield
    elif autocast_bf16:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _view_blocks(estimator: AlignmentEstimator, view_batch: int) -> list[torch.Tensor]:
    """View ids per forward: pairs ``(2i, 2i+1)`` are never split; at most ``view_batch`` each."""
    k = estimator.views
    if estimator.mode == "pair" and estimator.estimator == "pairs":
        step = max(1, view_batch // 2)
        return [torch.arange(2 * p, 2 * min(p + step, k)) for p in range(0, k, step)]
    step = max(1, view_batch)
    return [torch.arange(v, min(v + step, k)) for v in range(0, k, step)]


def pair_distance_sum(reps: torch.Tensor, distance: Distance) -> torch.Tensor:
    """Sum over view pairs ``(2i, 2i+1)`` of their distance: ``[B, 2P, D] -> [B]``."""
    return DISTANCES[distance](reps[:, 0::2], reps[:, 1::2]).sum(dim=1)


def anchor_distance_sum(
    anchor: torch.Tensor, reps: torch.Tensor, distance: Distance
) -> torch.Tensor:
    """Sum over views of their distance to the clean anchor: ``[B, D], [B, V, D] -> [B]``."""
    return DISTANCES[distance](anchor.unsqueeze(1), reps).sum(dim=1)


def alignment_losses(
    encoders: Sequence[nn.Module],
    images: torch.Tensor,
    keys: torch.Tensor,
    *,
    augmenter: BatchAugmenter,
    estimator: AlignmentEstimator,
    layers: Sequence[str],
    device: torch.device,
    chunk_size: int = 64,
    view_batch: int = 32,
    autocast_bf16: bool = False,
    progress: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Alignment loss of every encoder at every layer on every point.

    Args:
        encoders: E encoders (candidates and references together, so they see the same views).
        images: uint8 ``[N, C, H, W]`` (any device; moved chunk by chunk).
        keys: int64 ``[N]``: stable point ids (dataset indices) that seed each point's views.
        augmenter: Draws the views.
        estimator: K, mode, distance, seed and (pair mode) the pairs/ustat estimator.
        layers: L layer names; all are captured in the same forward pass.
        device: Where encoders run (they are moved there).
        chunk_size: Points per forward.
        view_batch: Views per point per forward (pair mode rounds down to whole pairs). Peak
            memory is about ``chunk_size * view_batch`` images and their activations, for any
            K and N: the K views are drawn and run in blocks, and only per-point distance sums
            are kept (``ustat`` with ``l2`` also keeps the K representations of each point;
            see :mod:`sslmem.memorization.ustat`). Views depend only on (seed, key, view id),
            so the blocking does not change which views are drawn.
        autocast_bf16: bf16 autocast on CUDA (default fp32; see :func:`scoring_precision`).
        progress: Called with the number of points finished after each chunk.

    Returns:
        float32 ``[E, L, N]`` on the CPU.

    Raises:
        ScoringError: Empty input, representation sizes differing between encoders, or
            non-finite representations.
    """
    n = images.shape[0]
    if n == 0:
        raise ScoringError("no points to score", "check the split sets you asked to score")
    if keys.shape != (n,):
        raise ScoringError(f"keys must have shape [{n}], got {list(keys.shape)}")
    if chunk_size < 1:
        raise ScoringError(f"chunk_size must be >= 1, got {chunk_size}")
    if view_batch < 2:
        raise ScoringError(f"view_batch must be >= 2, got {view_batch}", "use e.g. 32")
    if not layers:
        raise ScoringError("no layers requested", "pass at least one layer, e.g. 'backbone'")
    out = torch.empty(len(encoders), len(layers), n, dtype=torch.float32)
    dims: dict[tuple[int, str], int] = {}
    blocks = _view_blocks(estimator, view_batch)
    was_training = [enc.training for enc in encoders]
    for enc in encoders:
        # channels_last weights make convolutions 1.4-2x faster on CPU too (benchmarks/README.md);
        # results are identical, and the layout is restored below.
        enc.eval().to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def represent(e: int, batch: torch.Tensor, b: int) -> list[torch.Tensor]:
        flat = to_device_layout(batch.reshape(-1, *batch.shape[-3:]), device)
        reps = extract_layers(encoders[e], flat, layers)
        grouped = [reps[layer].float().reshape(b, -1, reps[layer].shape[-1]) for layer in layers]
        for layer, rep in zip(layers, grouped, strict=True):
            _check_representation(rep, e, layer, dims)
        return grouped

    try:
        with torch.inference_mode(), scoring_precision(device, autocast_bf16=autocast_bf16):
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                chunk = images[start:stop].to(device, non_blocking=True)
                chunk_keys = keys[start:stop].to(device)
                b = stop - start
                sums = torch.zeros(len(encoders), len(layers), b, device=device)
                all_pairs = [
                    [AllPairsAccumulator(estimator.distance) for _ in layers] for _ in encoders
                ]
                anchors: list[list[torch.Tensor]] = []
                if estimator.mode == "anchor":
                    clean = augmenter.clean(chunk).unsqueeze(1)  # [B, 1, C, S, S]
                    anchors = [
                        [rep[:, 0] for rep in represent(e, clean, b)] for e in range(len(encoders))
                    ]
                for ids in blocks:
                    views = augmenter.views(chunk, chunk_keys, ids.to(device), estimator.seed)
                    for e in range(len(encoders)):
                        for li, rep in enumerate(represent(e, views, b)):
                            if estimator.estimator == "ustat":
                                all_pairs[e][li].add(rep)
                            elif estimator.mode == "pair":
                                sums[e, li] += pair_distance_sum(rep, estimator.distance)
                            else:
                                sums[e, li] += anchor_distance_sum(
                                    anchors[e][li], rep, estimator.distance
                                )
                if estimator.estimator == "ustat":
                    for e, per_layer in enumerate(all_pairs):
                        for li, acc in enumerate(per_layer):
                            sums[e, li] = acc.pair_sum()
                out[:, :, start:stop] = (sums / estimator.terms).cpu()
                if progress is not None:
                    progress(b)
    finally:
        for enc, mode in zip(encoders, was_training, strict=True):
            enc.train(mode).to(memory_format=torch.contiguous_format)
    return out


def _check_representation(
    rep: torch.Tensor, encoder_index: int, layer: str, dims: dict[tuple[int, str], int]
) -> None:
    dim = rep.shape[-1]
    known = {d for (_, name), d in dims.items() if name == layer}
    if known and dim not in known:
        raise ScoringError(
            f"encoders disagree on the representation at layer {layer!r}: "
            f"encoder {encoder_index} gives {dim} values, others {sorted(known)}",
            "score candidate and reference encoders of the same architecture and head",
        )
    dims[(encoder_index, layer)] = dim
    if not torch.isfinite(rep).all():
        raise ScoringError(
            f"encoder {encoder_index} produced NaN/inf representations at layer {layer!r}",
            "the checkpoint is likely diverged; retrain it or score another layer",
        )
