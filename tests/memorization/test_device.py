"""CPU and CUDA give the same SSLMem (run on a machine with a GPU; skipped elsewhere)."""

import copy

import pytest
import torch

from sslmem.augment import AugmentationSpec
from sslmem.memorization import AlignmentEstimator, compute_sslmem
from tests.helpers import random_images, tiny_encoder

#: Largest accepted |SSLMem_cpu - SSLMem_cuda| per point for fp32 scoring. Both run true fp32
#: (TF32 off); what remains is float32 rounding in differently ordered sums (~1e-6 on losses of
#: order 0.1-1), far below the effects the protocol measures (|S_C| ~ 0.05).
FP32_TOLERANCE = 1e-4

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="no CUDA device: CPU/CUDA score agreement is checked on GPU machines only",
    ),
]


def _scores(device: torch.device, **kwargs: bool) -> torch.Tensor:
    # Fresh copies: scoring moves the encoders to the device.
    f, g = copy.deepcopy(tiny_encoder(0, pool=4)), copy.deepcopy(tiny_encoder(1, pool=4))
    return compute_sslmem(
        [f],
        [g],
        random_images(48, size=32),
        torch.arange(48),
        augment_spec=AugmentationSpec(output_size=24),
        estimator=AlignmentEstimator(views=4, seed=3, estimator="pairs"),
        layer="head",
        device=device,
        chunk_size=16,
        **kwargs,
    ).raw


def test_cpu_and_cuda_fp32_scores_agree_within_the_stated_tolerance() -> None:
    cpu = _scores(torch.device("cpu"))
    cuda = _scores(torch.device("cuda"))
    assert cpu.abs().max() > 10 * FP32_TOLERANCE  # the scores are not trivially zero
    assert (cpu - cuda).abs().max().item() <= FP32_TOLERANCE


def test_bf16_scoring_is_opt_in_and_stays_finite() -> None:
    bf16 = _scores(torch.device("cuda"), autocast_bf16=True)
    assert torch.isfinite(bf16).all()
