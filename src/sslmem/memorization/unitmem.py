"""UnitMem: how strongly single units (neurons, conv channels) memorise single points.

Wang et al., "Localizing Memorization in SSL Vision Encoders" (NeurIPS 2024, arXiv 2409.19069):
``UnitMem(u) = (mu_max - mu_-max) / (mu_max + mu_-max)``, where ``mu_{i,u}`` is unit u's
activation on point i averaged over K augmentations (and over space for a conv channel),
``mu_max`` its maximum over points and ``mu_-max`` the mean (paper) or median (authors' code)
over the other points. Needs only the candidate encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.device import autocast_for, to_device_layout
from sslmem.errors import ScoringError
from sslmem.memorization.representation import capture_layers

Reduction = Literal["mean", "median"]


def unitmem_from_activations(mu: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """UnitMem per unit from mean activations: ``[N, U] -> [U]``.

    Args:
        mu: ``mu[i, u]``, unit u's activation on point i averaged over augmentations (N >= 2;
            non-negative, e.g. after a ReLU, for the score to lie in [0, 1]).
        reduction: "mean" (paper) or "median" (authors' code) over the points other than the
            arg-max point.

    Returns:
        ``[U]`` UnitMem; 0 where a unit is silent (``mu_max + mu_-max == 0``).
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
    return torch.where(denom != 0, (mu_max - mu_rest) / safe, torch.zeros_like(denom)).float()


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
    """Mean activation of each unit of ``layer`` on each point over K augmented views.

    Args:
        encoder: The candidate encoder.
        images: uint8 ``[N, C, H, W]``.
        keys: int64 ``[N]`` stable point ids that seed the views.
        layer: Named layer whose units are measured.
        augment_spec: The augmentation distribution.
        views: K.
        seed: View seed.
        device: Compute device.
        chunk_size: Points per forward.
        progress: Progress callback (points finished).

    Returns:
        float32 ``[N, U]``.
    """
    if views < 1:
        raise ScoringError(f"views must be >= 1, got {views}")
    device = device or torch.device("cpu")
    augmenter = BatchAugmenter(augment_spec)
    was_training = encoder.training
    encoder.eval().to(device)
    parts = []
    try:
        with torch.inference_mode():
            for start in range(0, images.shape[0], chunk_size):
                chunk = images[start : start + chunk_size].to(device)
                ids = torch.arange(views, device=device)
                batch = augmenter.views(
                    chunk, keys[start : start + chunk_size].to(device), ids, seed
                )
                b, k = batch.shape[:2]
                flat = to_device_layout(batch.reshape(b * k, *batch.shape[2:]), device)
                with autocast_for(device):
                    out = capture_layers(encoder, flat, [layer])[layer]
                units = _per_unit(out)
                parts.append(units.reshape(b, k, -1).mean(dim=1).cpu())
                if progress is not None:
                    progress(b)
    finally:
        encoder.train(was_training)
    if not parts:
        raise ScoringError("no points to measure UnitMem on")
    return torch.cat(parts)
