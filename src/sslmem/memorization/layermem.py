"""LayerMem and ΔLayerMem: where in the encoder memorisation happens.

Wang, Kaleem, Dziedzic, Backes, Papernot, Boenisch, "Localizing Memorization in SSL Vision
Encoders" (NeurIPS 2024, arXiv 2409.19069): SSLMem computed on the output of each layer,
averaged over the candidate points and min-max normalised to [0, 1]; ΔLayerMem_l =
LayerMem_l - LayerMem_{l-1} isolates what layer l adds. All layers are hooked in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.errors import ScoringError
from sslmem.memorization.alignment import AlignmentEstimator, alignment_losses


@dataclass(frozen=True)
class LayerMemResult:
    """LayerMem per layer.

    Attributes:
        layers: The L layer names, in the order given (forward order).
        raw: ``[L, N]`` raw per-point SSLMem at each layer.
        layermem_raw: ``[L]`` mean raw SSLMem over the points.
        layermem: ``[L]`` mean after min-max normalising all ``raw`` values to [0, 1] on one
            common scale (so layers stay comparable).
        delta: ``[L]`` ΔLayerMem; the first entry is LayerMem of the first layer.
        candidate_alignment: ``[m, L, N]`` alignment loss of each candidate at each layer.
        reference_alignment: ``[n, L, N]`` alignment loss of each reference at each layer.
    """

    layers: tuple[str, ...]
    raw: torch.Tensor
    layermem_raw: torch.Tensor
    layermem: torch.Tensor
    delta: torch.Tensor
    candidate_alignment: torch.Tensor
    reference_alignment: torch.Tensor


def layermem_from_scores(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerMem from per-layer scores: ``[L, N] -> (raw mean [L], normalised [L], delta [L])``.

    Normalisation uses the global min and max over all layers and points: per-layer min-max
    would erase the differences between layers that LayerMem exists to show.
    """
    if raw.dim() != 2 or raw.shape[1] == 0:
        raise ScoringError("LayerMem needs a [layers, points] score matrix with points")
    low, high = raw.min(), raw.max()
    span = torch.where(high > low, high - low, torch.ones_like(high))
    layermem = ((raw - low) / span).mean(dim=1)
    delta = torch.cat([layermem[:1], layermem[1:] - layermem[:-1]])
    return raw.mean(dim=1), layermem, delta


def compute_layermem(
    candidates: Sequence[nn.Module],
    references: Sequence[nn.Module],
    images: torch.Tensor,
    keys: torch.Tensor,
    *,
    layers: Sequence[str],
    augment_spec: AugmentationSpec,
    estimator: AlignmentEstimator,
    device: torch.device | None = None,
    chunk_size: int = 64,
    view_batch: int = 32,
    autocast_bf16: bool = False,
    progress: Callable[[int], object] | None = None,
) -> LayerMemResult:
    """LayerMem and ΔLayerMem for ``layers`` (all captured in one pass per view batch).

    Args:
        candidates: m encoders that trained on the points.
        references: n encoders that did not.
        images: uint8 ``[N, C, H, W]`` candidate points.
        keys: int64 ``[N]`` stable point ids.
        layers: Layer names in forward order.
        augment_spec: The augmentation distribution.
        estimator: K, mode, distance, seed.
        device: Compute device.
        chunk_size: Points per forward.
        view_batch: Views per point per forward (bounds memory for any K; see
            :func:`~sslmem.memorization.alignment.alignment_losses`).
        autocast_bf16: Run the encoders in bf16 on CUDA (default fp32).
        progress: Progress callback (points finished).

    Returns:
        Per-layer scores and summaries.
    """
    if not candidates or not references:
        raise ScoringError("LayerMem needs at least one candidate and one reference encoder")
    losses = alignment_losses(
        [*candidates, *references],
        images,
        keys,
        augmenter=BatchAugmenter(augment_spec),
        estimator=estimator,
        layers=layers,
        device=device or torch.device("cpu"),
        chunk_size=chunk_size,
        view_batch=view_batch,
        autocast_bf16=autocast_bf16,
        progress=progress,
    )  # [E, L, N]
    m = len(candidates)
    cand, ref = losses[:m], losses[m:]
    raw = ref.mean(dim=0) - cand.mean(dim=0)
    layermem_raw, layermem, delta = layermem_from_scores(raw)
    return LayerMemResult(tuple(layers), raw, layermem_raw, layermem, delta, cand, ref)
