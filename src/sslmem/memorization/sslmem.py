r"""SSLMem per point.

Wang et al., "Memorization in Self-Supervised Learning Improves Downstream Generalization",
ICLR 2024, Eq. 2::

    SSLMem(x) = E_{g ~ A(S \ {x})} L_align(g, x) - E_{f ~ A(S)} L_align(f, x)

Positive when the candidate f (trained on x) keeps the views of x closer together than
references g (never saw x).
Raw scores are always returned; normalisations are separate named steps
(:mod:`sslmem.memorization.normalize`).
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
class SSLMemResult:
    """Per-point SSLMem and the alignment losses it came from.

    Attributes:
        raw: ``[N]`` raw SSLMem (mean reference loss minus mean candidate loss).
        candidate_alignment: ``[m, N]`` alignment loss of each candidate encoder.
        reference_alignment: ``[n, N]`` alignment loss of each reference encoder.
    """

    raw: torch.Tensor
    candidate_alignment: torch.Tensor
    reference_alignment: torch.Tensor


def sslmem_from_alignment(
    candidate_alignment: torch.Tensor, reference_alignment: torch.Tensor
) -> torch.Tensor:
    """Combine alignment losses into SSLMem: ``[m, N], [n, N] -> [N]``.

    The expectations over encoders (training randomness) are means over the m candidates and
    the n references.
    """
    if candidate_alignment.dim() != 2 or reference_alignment.dim() != 2:
        raise ScoringError("alignment losses must be [encoders, points] matrices")
    if candidate_alignment.shape[1] != reference_alignment.shape[1]:
        raise ScoringError(
            f"candidate and reference losses cover different points: "
            f"{candidate_alignment.shape[1]} vs {reference_alignment.shape[1]}"
        )
    return reference_alignment.mean(dim=0) - candidate_alignment.mean(dim=0)


def compute_sslmem(
    candidates: Sequence[nn.Module],
    references: Sequence[nn.Module],
    images: torch.Tensor,
    keys: torch.Tensor,
    *,
    augment_spec: AugmentationSpec,
    estimator: AlignmentEstimator,
    layer: str = "backbone",
    device: torch.device | None = None,
    chunk_size: int = 64,
    view_batch: int = 32,
    autocast_bf16: bool = False,
    progress: Callable[[int], object] | None = None,
) -> SSLMemResult:
    """SSLMem of every point for m candidate and n reference encoders.

    Args:
        candidates: m >= 1 encoders trained on data containing the points (f).
        references: n >= 1 encoders trained without them (g).
        images: uint8 ``[N, C, H, W]``.
        keys: int64 ``[N]`` stable point ids (dataset indices) that seed each point's views.
        augment_spec: The augmentation distribution.
        estimator: K, mode ("pair" = paper, "anchor" = authors' script), distance and seed.
        layer: Named layer whose output is the representation.
        device: Compute device (default CPU).
        chunk_size: Points per forward.
        view_batch: Views per point per forward; with ``chunk_size`` bounds memory for any N
            and K.
        autocast_bf16: bf16 autocast on CUDA (default: fp32, TF32 off).
        progress: Called with the number of points finished after each chunk.

    Returns:
        The raw scores and the alignment losses behind them.
    """
    if not candidates or not references:
        raise ScoringError(
            f"need at least one candidate and one reference encoder, got "
            f"{len(candidates)} and {len(references)}",
            "pass --candidate CKPT and --reference CKPT",
        )
    losses = alignment_losses(
        [*candidates, *references],
        images,
        keys,
        augmenter=BatchAugmenter(augment_spec),
        estimator=estimator,
        layers=[layer],
        device=device or torch.device("cpu"),
        chunk_size=chunk_size,
        view_batch=view_batch,
        autocast_bf16=autocast_bf16,
        progress=progress,
    )[:, 0]
    cand, ref = losses[: len(candidates)], losses[len(candidates) :]
    return SSLMemResult(
        raw=sslmem_from_alignment(cand, ref), candidate_alignment=cand, reference_alignment=ref
    )
