"""Gradient accumulation gives the update of the whole batch.

``training.batch_size`` images make one optimizer step whether they pass in one forward or in
``grad_accum_steps`` micro-batches: each micro-batch's mean loss is scaled by 1/k, so the
accumulated gradient is the mean over the whole batch. That holds exactly (up to float
rounding) only where the loss of a batch is the mean of independent per-image losses, with no
batch norm and no in-batch negatives -- the tiny method below. With plain SGD (no momentum)
a gradient off by the factor k moves the weights k times as far, so a wrong scaling shows.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sslmem.config import TrainingConfig
from sslmem.models import Encoder, build_encoder
from sslmem.training import fit
from sslmem.training.distributed import DistContext
from sslmem.training.methods import MethodOptions, SSLMethod, StepContext
from tests.training.helpers import tiny_config, tiny_dataset


class PerImageLoss(SSLMethod):
    """Mean over images of ``(w . x_view0 - 1)^2 + (w . x_view1 + 1)^2``: images independent."""

    def __init__(self, encoder: Encoder, training: TrainingConfig, options: MethodOptions) -> None:
        super().__init__(encoder, training, options)
        self.linear = nn.Linear(16 * 16, 1)

    def forward(self, views: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        first = self.linear(views[:, 0].flatten(1)).squeeze(1)
        second = self.linear(views[:, 1].flatten(1)).squeeze(1)
        return ((first - 1) ** 2 + (second + 1) ** 2).mean()


def _train(accum: int, batch: int, tmp: Path) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Two epochs of ``batch`` images per step in ``accum`` micro-batches: (initial w, final)."""
    config = tiny_config(
        "simclr",
        "small_cnn",
        "training.epochs=2",
        f"training.batch_size={batch}",
        f"training.grad_accum_steps={accum}",
        "training.optimizer=sgd",
        "training.sgd_momentum=0",
        "training.weight_decay=0",
        "training.lr=0.002",
        "training.lr_schedule=constant",
    )
    data = tiny_dataset(40)
    torch.manual_seed(0)
    encoder = build_encoder(config.model, in_channels=1, image_size=16)
    method = PerImageLoss(encoder, config.training, MethodOptions())
    initial = method.linear.weight.detach().clone()
    fit(
        method,
        data.images,
        torch.arange(len(data)),
        training=config.training,
        augmentation=config.augmentation,
        device=torch.device("cpu"),
        dist_ctx=DistContext(),
        resume_path=tmp / "resume.pt",
        resume_state=None,
        run="{}",
        seed=0,
        progress=False,
    )
    return initial, {k: v.detach().clone() for k, v in method.linear.state_dict().items()}


def test_accumulated_micro_batches_give_the_large_batch_update(tmp_path: Path) -> None:
    start, whole = _train(1, 8, tmp_path)
    start_again, accumulated = _train(4, 8, tmp_path)  # 4 micro-batches of 2 images per step
    assert torch.equal(start, start_again)
    assert (whole["weight"] - start).abs().max() > 1e-3  # the 10 steps did move the weights
    for name, value in whole.items():
        torch.testing.assert_close(accumulated[name], value, rtol=1e-5, atol=1e-6)
    # The control: steps of 2 images are not steps of 8 (the comparison can tell them apart).
    _, small = _train(1, 2, tmp_path)
    assert (small["weight"] - whole["weight"]).abs().max() > 1e-4
