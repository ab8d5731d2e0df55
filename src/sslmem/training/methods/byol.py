"""BYOL: an online network predicts a momentum target network's projection of another view.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS
2020 (arXiv 2006.07733). The online network is the encoder (backbone + projection head) followed
by a prediction MLP (lightly's :class:`~lightly.models.modules.BYOLPredictionHead`); the target
is an exponential moving average of the encoder whose momentum follows a cosine schedule from
``momentum_start`` to 1. The loss is the symmetrised negative cosine similarity (lightly's
:class:`~lightly.loss.NegativeCosineSimilarity`), equivalent to BYOL's normalised l2 loss up to
an affine map. No negatives are needed.
"""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead
from pydantic import Field

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


class BYOLOptions(MethodOptions):
    """BYOL options.

    Attributes:
        predictor_hidden_dim: Hidden width of the prediction MLP (4096 in the paper).
        momentum_start: Target EMA momentum at step 0 (paper: 0.996; lightly's example: 0.99),
            increased to 1 by a cosine schedule.

    """

    predictor_hidden_dim: int = Field(512, ge=1)
    momentum_start: float = Field(0.99, ge=0, le=1)


@register_method(
    "byol", options=BYOLOptions, paper="BYOL, Grill et al., NeurIPS 2020 (arXiv 2006.07733)"
)
class BYOL(SSLMethod):
    """BYOL with the encoder as online backbone + projector.

    Shapes:
        ``views [B, 2, C, S, S] -> loss []``; projections and predictions ``[B, P]``.

    """

    num_views = 2

    def __init__(self, encoder: Encoder, training: TrainingConfig, options: BYOLOptions) -> None:
        super().__init__(encoder, training, options)
        self.byol_options = options
        dim = encoder.head_dim
        self.predictor = BYOLPredictionHead(dim, options.predictor_hidden_dim, dim)
        self.teacher = make_teacher(encoder)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, views: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Symmetrised negative cosine similarity of predictions and target projections."""
        z0, z1 = encode_views(self.encoder, views)
        p0, p1 = (self.predictor(z).float() for z in (z0, z1))
        with torch.no_grad():
            t0, t1 = encode_views(self.teacher, views)
        loss: torch.Tensor = 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))
        return loss

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Move the target towards the online encoder (cosine momentum schedule)."""
        momentum = cosine_momentum(
            ctx.global_step, ctx.total_steps, start=self.byol_options.momentum_start
        )
        ema_update(self.encoder, self.teacher, momentum)
