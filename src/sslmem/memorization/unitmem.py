"""UnitMem: how strongly single units (neurons, conv channels) memorise single points.

Wang et al., "Localizing Memorization in SSL Vision Encoders" (NeurIPS 2024, arXiv 2409.19069):
``UnitMem(u) = (mu_max - mu_-max) / (mu_max + mu_-max)``, where ``mu_{i,u}`` is unit u's
activation on point i averaged over K augmentations (and over space for a conv channel),
``mu_max`` its maximum over points and ``mu_-max`` the mean (paper) or median (authors' code)
over the other points. Needs only the candidate encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.device import to_device_layout
from sslmem.errors import ScoringError
from sslmem.memorization.alignment import scoring_precision
from sslmem.memorization.representation import capture_layers

Reduction = Literal["mean", "median"]


@dataclass(frozen=True)
class UnitMemResult:
    """UnitMem of every unit of one layer and the quantities it came from.

    Attributes:
        unitmem: ``[U]`` UnitMem per unit.
        argmax: int64 ``[U]`` row (point) at which each unit is most active (the first on ties).
        mu_max: ``[U]`` the highest mean activation.
        mu_rest: ``[U]`` mean (or median) mean activation over the other points.
    """

    unitmem: torch.Tensor
    argmax: torch.Tensor
    mu_max: torch.Tensor
    mu_rest: torch.Tensor


def unitmem_per_unit(mu: torch.Tensor, reduction: Reduction = "mean") -> UnitMemResult:
    """UnitMem per unit from mean activations ``[N, U]``, with the arg-max point of each unit.

    Args:
        mu: ``mu[i, u]``, unit u's activation on point i averaged over augmentations (N >= 2;
            non-negative, e.g. after a ReLU, for the score to lie in [0, 1]).
        reduction: "mean" (paper) or "median" (authors' code) over the points other than the
            arg-max point.

    Returns:
        The scores (0 where a unit is silent, ``mu_max + mu_-max == 0``) and their parts.
    """
    if mu.dim() != 2 or mu.shape[0] < 2:
        raise ScoringError(f"UnitMem needs activations of >= 2 points, got shape {list(mu.shape)}")
    if reduction not in ("mean", "median"):
        raise ScoringError(f"unknown UnitMem reduction {reduction!r}", "use 'mean' or 'median'")
    mu = mu.double()
    ascending = mu.sort(dim=0).values
    mu_max = ascending[-1]
    others = ascending[:-1]  # every point but (one copy of) the maximum
    mu_rest = others.mean(dim=0) if reduction == "mean" else others.quantile(0.5, dim=0)
    denom = mu_max + mu_rest
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    score = torch.where(denom != 0, (mu_max - mu_rest) / safe, torch.zeros_like(denom))
    argmax = mu.argmax(dim=0)  # torch returns the first maximal index on ties
    return UnitMemResult(score.float(), argmax.long(), mu_max.float(), mu_rest.float())


def unitmem_from_activations(mu: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """UnitMem per unit from mean activations: ``[N, U] -> [U]`` (see :func:`unitmem_per_unit`)."""
    return unitmem_per_unit(mu, reduction).unitmem


def _per_unit(out: torch.Tensor) -> torch.Tensor:
    """Collapse a layer output to one value per unit.

    Conv ``[B, C, H, W] -> [B, C]`` (spatial mean), tokens ``[B, T, D] -> [B, D]`` (token
    mean), ``[B, D]`` unchanged.
    """
    if out.dim() == 4:
        return out.float().mean(dim=(2, 3))
    if out.dim() == 3:
        return out.float().mean(dim=1)
    if out.dim() == 2:
        return out.float()
    raise ScoringError(f"cannot take units of a layer output of shape {list(out.shape)}")


def unit_activations_by_layer(
    encoder: nn.Module,
    images: torch.Tensor,
    keys: torch.Tensor,
    *,
    layers: Sequence[str],
    augment_spec: AugmentationSpec,
    views: int = 8,
    seed: int = 0,
    device: torch.device | None = None,
    chunk_size: int = 64,
    view_batch: int = 32,
    autocast_bf16: bool = False,
    progress: Callable[[int], object] | None = None,
) -> dict[str, torch.Tensor]:
    """Mean activation of each unit of every layer on each point over K augmented views.

    All layers are captured in the same forward, so the views are drawn and encoded once.

    Args:
        encoder: The candidate encoder.
        images: uint8 ``[N, C, H, W]``.
        keys: int64 ``[N]`` stable point ids that seed the views.
        layers: L named layers whose units are measured.
        augment_spec: The augmentation distribution.
        views: K.
        seed: View seed.
        device: Compute device.
        chunk_size: Points per forward.
        view_batch: Views per point per forward: a forward holds at most
            ``chunk_size * view_batch`` images, so memory stays bounded for any K.
        autocast_bf16: bf16 autocast on CUDA (default fp32, as scoring: see
            :func:`~sslmem.memorization.alignment.scoring_precision`).
        progress: Progress callback (points finished).

    Returns:
        ``{layer: float32 [N, U_layer]}``.
    """
    if views < 1:
        raise ScoringError(f"views must be >= 1, got {views}", "use e.g. --views 8")
    if chunk_size < 1:
        raise ScoringError(f"chunk_size must be >= 1, got {chunk_size}")
    if view_batch < 1:
        raise ScoringError(f"view_batch must be >= 1, got {view_batch}", "use e.g. --view-batch 32")
    if not layers:
        raise ScoringError("no layers requested", "pass at least one layer, e.g. 'backbone'")
    if images.shape[0] == 0:
        raise ScoringError("no points to measure UnitMem on", "check the sets you asked for")
    if keys.shape != (images.shape[0],):
        raise ScoringError(f"keys must have shape [{images.shape[0]}], got {list(keys.shape)}")
    device = device or torch.device("cpu")
    augmenter = BatchAugmenter(augment_spec)
    was_training = encoder.training
    encoder.eval().to(device)
    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    try:
        with torch.inference_mode(), scoring_precision(device, autocast_bf16=autocast_bf16):
            for start in range(0, images.shape[0], chunk_size):
                chunk = images[start : start + chunk_size].to(device)
                chunk_keys = keys[start : start + chunk_size].to(device)
                b = chunk.shape[0]
                sums: dict[str, torch.Tensor] = {}
                for first in range(0, views, view_batch):
                    ids = torch.arange(first, min(first + view_batch, views), device=device)
                    batch = augmenter.views(chunk, chunk_keys, ids, seed)
                    k = batch.shape[1]
                    flat = to_device_layout(batch.reshape(b * k, *batch.shape[2:]), device)
                    outs = capture_layers(encoder, flat, layers)
                    for layer in layers:
                        block = _per_unit(outs[layer]).float().reshape(b, k, -1).sum(dim=1)
                        sums[layer] = block if layer not in sums else sums[layer] + block
                for layer in layers:
                    parts[layer].append((sums[layer] / views).cpu())
                if progress is not None:
                    progress(b)
    finally:
        encoder.train(was_training)
    return {layer: torch.cat(chunks) for layer, chunks in parts.items()}


def unit_activations(
    encoder: nn.Module,
    images: torch.Tensor,
    keys: torch.Tensor,
    *,
    layer: str,
    augment_spec: AugmentationSpec,
    views: int = 8,
    seed: int = 0,
    device: torch.device | None = None,
    chunk_size: int = 64,
    progress: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Mean activation of each unit of one ``layer``: float32 ``[N, U]``.

    See :func:`unit_activations_by_layer` (this is its one-layer case).
    """
    return unit_activations_by_layer(
        encoder,
        images,
        keys,
        layers=[layer],
        augment_spec=augment_spec,
        views=views,
        seed=seed,
        device=device,
        chunk_size=chunk_size,
        progress=progress,
    )[layer]
