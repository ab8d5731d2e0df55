"""Alignment loss of encoders on points: the batched core of every memorisation score.

Wang et al. (ICLR 2024), Eq. 1: ``L_align(h, x) = E_{x', x'' ~ Aug(x)} d(h(x'), h(x''))`` with
``d`` the l2 distance of l2-normalised representations. Estimated with K view pairs per point
("pair" mode, the paper's definition) or with the distance from the clean image to each of K
views ("anchor" mode, the authors' script).

All points of a chunk and all their views go through each encoder in one forward; the views are
drawn once per chunk and shared by every encoder, as the estimator requires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sslmem.augment import BatchAugmenter
from sslmem.device import autocast_for, to_device_layout
from sslmem.errors import ScoringError
from sslmem.memorization.representation import extract_layers

Distance = Literal["l2", "cosine"]
Mode = Literal["pair", "anchor"]


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
        views: K, the number of view pairs ("pair") or views ("anchor") per point.
        mode: "pair" (view to view, the paper) or "anchor" (clean image to view, the authors'
            script).
        distance: "l2" (of l2-normalised vectors) or "cosine".
        seed: Seed of the views; the same seed gives the same views for the same point keys.
    """

    views: int = 8
    mode: Mode = "pair"
    distance: Distance = "l2"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.views < 1:
            raise ScoringError(f"views must be >= 1, got {self.views}", "use e.g. --views 8")
        if self.mode not in ("pair", "anchor"):
            raise ScoringError(f"unknown mode {self.mode!r}", "use 'pair' or 'anchor'")
        if self.distance not in DISTANCES:
            raise ScoringError(
                f"unknown distance {self.distance!r}", f"use one of {sorted(DISTANCES)}"
            )


def _draw_views(
    augmenter: BatchAugmenter,
    images: torch.Tensor,
    keys: torch.Tensor,
    estimator: AlignmentEstimator,
) -> torch.Tensor:
    """Views for a chunk: ``[B, 2K, C, S, S]`` (pair) or ``[B, 1 + K, C, S, S]`` (anchor)."""
    if estimator.mode == "pair":
        ids = torch.arange(2 * estimator.views, device=images.device)
        return augmenter.views(images, keys, ids, estimator.seed)
    ids = torch.arange(estimator.views, device=images.device)
    views = augmenter.views(images, keys, ids, estimator.seed)
    return torch.cat([augmenter.clean(images).unsqueeze(1), views], dim=1)


def _loss_from_representations(reps: torch.Tensor, estimator: AlignmentEstimator) -> torch.Tensor:
    """Per-point alignment loss from grouped representations ``[B, V, D] -> [B]``."""
    distance = DISTANCES[estimator.distance]
    if estimator.mode == "pair":
        return distance(reps[:, 0::2], reps[:, 1::2]).mean(dim=1)
    return distance(reps[:, :1], reps[:, 1:]).mean(dim=1)


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
    progress: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Alignment loss of every encoder at every layer on every point.

    Args:
        encoders: E encoders (candidates and references together, so they see the same views).
        images: uint8 ``[N, C, H, W]`` (any device; moved chunk by chunk).
        keys: int64 ``[N]``: stable point ids (dataset indices) that seed each point's views.
        augmenter: Draws the views.
        estimator: K, mode, distance and seed.
        layers: L layer names; all are captured in the same forward pass.
        device: Where encoders run (they are moved there).
        chunk_size: Points per forward; bounds memory at ``chunk_size * 2K`` images.
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
    if not layers:
        raise ScoringError("no layers requested", "pass at least one layer, e.g. 'backbone'")
    out = torch.empty(len(encoders), len(layers), n, dtype=torch.float32)
    dims: dict[tuple[int, str], int] = {}
    was_training = [enc.training for enc in encoders]
    for enc in encoders:
        # channels_last weights make convolutions 1.4-2x faster on CPU too (benchmarks/README.md);
        # results are identical, and the layout is restored below.
        enc.eval().to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    try:
        with torch.inference_mode():
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                chunk = images[start:stop].to(device, non_blocking=True)
                chunk_keys = keys[start:stop].to(device)
                views = _draw_views(augmenter, chunk, chunk_keys, estimator)
                b, v = views.shape[:2]
                flat = to_device_layout(views.reshape(b * v, *views.shape[2:]), device)
                for e, enc in enumerate(encoders):
                    with autocast_for(device):
                        reps = extract_layers(enc, flat, layers)
                    for li, layer in enumerate(layers):
                        rep = reps[layer].reshape(b, v, -1)
                        _check_representation(rep, e, layer, dims)
                        out[e, li, start:stop] = _loss_from_representations(rep, estimator).cpu()
                if progress is not None:
                    progress(stop - start)
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
