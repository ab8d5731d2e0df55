"""DINO: self-distillation with no labels.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021
(arXiv 2104.14294). A student matches the centred, sharpened output distribution of a momentum
teacher on another view (lightly's :class:`~lightly.loss.DINOLoss`: cross-entropy over
``num_prototypes`` dimensions, teacher centring and a teacher-temperature warm-up).

The DINO head is "a 3-layer MLP ... followed by l2 normalization and a weight normalized fully
connected layer with K dimensions". Here the encoder's own projection head plays the MLP (its
output ``[B, P]`` is DINO's bottleneck), so the space the loss shapes is the encoder's ``head``
layer that SSLMem scores; :class:`DINOPrototypes` adds the l2 normalisation and the
weight-normalised ``P -> K`` layer, as in lightly's
:class:`~lightly.models.modules.DINOProjectionHead`. The authors of SSLMem train DINO encoders
too. Two global views per image (no multi-crop local views).
"""

from __future__ import annotations

import torch
from lightly.loss import DINOLoss
from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from sslmem.config import TrainingConfig
from sslmem.models.encoder import Encoder
from sslmem.training.methods.base import (
    MethodOptions,
    SSLMethod,
    StepContext,
    encode_views,
    register_method,
)
from sslmem.training.methods.momentum import ema_update, make_teacher
from sslmem.training.schedule import cosine_momentum


class DINOOptions(MethodOptions):
    """DINO options (paper defaults unless noted).

    Attributes:
        num_prototypes: Output dimension ``K`` of the last layer (paper: 65536; smaller suits
            small data).
        teacher_temp: Teacher temperature after the warm-up.
        warmup_teacher_temp: Teacher temperature at epoch 0.
        warmup_teacher_temp_epochs: Epochs of the linear teacher-temperature warm-up.
        student_temp: Student temperature.
        center_momentum: EMA momentum of the teacher centre.
        momentum_start: Teacher EMA momentum at step 0, cosine to 1.
        norm_last_layer: Freeze the weight-norm gain of the last layer at 1.
        freeze_last_layer_epochs: Epochs during which the last layer gets no updates.

    """

    num_prototypes: int = Field(1024, ge=2)
    teacher_temp: float = Field(0.04, gt=0)
    warmup_teacher_temp: float = Field(0.04, gt=0)
    warmup_teacher_temp_epochs: int = Field(0, ge=0)
    student_temp: float = Field(0.1, gt=0)
    center_momentum: float = Field(0.9, ge=0, lt=1)
    momentum_start: float = Field(0.996, ge=0, le=1)
    norm_last_layer: bool = True
    freeze_last_layer_epochs: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _check(self) -> DINOOptions:
        if self.warmup_teacher_temp_epochs == 0 and self.warmup_teacher_temp != self.teacher_temp:
            raise ValueError("warmup_teacher_temp needs warmup_teacher_temp_epochs > 0")
        return self


class DINOPrototypes(nn.Module):
    """l2 normalisation and a weight-normalised linear layer (DINO's last head layer).

    Args:
        input_dim: Bottleneck dimension ``P``.
        num_prototypes: Output dimension ``K``.
        norm_last_layer: Fix the weight-norm gain at 1 (not trained).

    Shapes:
        ``[B, P] -> [B, K]``.

    """

    def __init__(self, input_dim: int, num_prototypes: int, norm_last_layer: bool) -> None:
        super().__init__()
        layer = nn.Linear(input_dim, num_prototypes, bias=False)
        nn.init.trunc_normal_(layer.weight, std=0.02, a=-2.0, b=2.0)
        self.layer = weight_norm(layer)
        gain = self.layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prototype scores ``[B, K]`` of bottleneck features ``[B, P]``."""
        out: torch.Tensor = self.layer(nn.functional.normalize(x, dim=-1, p=2))
        return out


@register_method(
    "dino", options=DINOOptions, paper="DINO, Caron et al., ICCV 2021 (arXiv 2104.14294)"
)
class DINO(SSLMethod):
    """DINO with two global views; the teacher is an EMA of encoder and prototypes.

    Shapes:
        ``views [B, 2, C, S, S] -> loss []``; prototype scores ``[B, K]``.

    """

    num_views = 2

    def __init__(self, encoder: Encoder, training: TrainingConfig, options: DINOOptions) -> None:
        super().__init__(encoder, training, options)
        self.dino_options = options
        self.prototypes = DINOPrototypes(
            encoder.head_dim, options.num_prototypes, options.norm_last_layer
        )
        self.teacher_encoder = make_teacher(encoder)
        self.teacher_prototypes = make_teacher(self.prototypes)
        self.criterion = DINOLoss(
            output_dim=options.num_prototypes,
            warmup_teacher_temp=options.warmup_teacher_temp,
            teacher_temp=options.teacher_temp,
            warmup_teacher_temp_epochs=max(options.warmup_teacher_temp_epochs, 1),
            student_temp=options.student_temp,
            center_momentum=options.center_momentum,
        )

    def _teacher_temp(self, epoch: int) -> float:
        opts = self.dino_options
        if epoch >= opts.warmup_teacher_temp_epochs:
            return opts.teacher_temp
        frac = epoch / opts.warmup_teacher_temp_epochs
        return opts.warmup_teacher_temp + frac * (opts.teacher_temp - opts.warmup_teacher_temp)

    def forward(self, views: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Cross-entropy between teacher and student distributions over different views."""
        student = [self.prototypes(z).float() for z in encode_views(self.encoder, views)]
        with torch.no_grad():
            teacher = [
                self.teacher_prototypes(z).float()
                for z in encode_views(self.teacher_encoder, views)
            ]
        loss: torch.Tensor = self.criterion(
            teacher, student, teacher_temp=self._teacher_temp(ctx.epoch)
        )
        return loss

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Keep the last layer fixed during the first epochs (stabilises early training)."""
        if ctx.epoch < self.dino_options.freeze_last_layer_epochs:
            for param in self.prototypes.parameters():
                param.grad = None

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Move the teacher towards the student (cosine momentum schedule)."""
        momentum = cosine_momentum(
            ctx.global_step, ctx.total_steps, start=self.dino_options.momentum_start
        )
        ema_update(self.encoder, self.teacher_encoder, momentum)
        ema_update(self.prototypes, self.teacher_prototypes, momentum)
