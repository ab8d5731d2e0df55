"""SimSiam: Siamese networks with a stop-gradient, no negatives and no momentum encoder.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021 (arXiv 2011.10566).
Each view's projection is predicted from the other's by an MLP (lightly's
:class:`~lightly.models.modules.SimSiamPredictionHead`); the target side is detached. The
LayerMem follow-up of SSLMem (Wang et al., NeurIPS 2024) studies SimSiam encoders.
"""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead
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


class SimSiamOptions(MethodOptions):
    """SimSiam options.

    Attributes:
        predictor_hidden_dim: Bottleneck width of the prediction MLP (paper: 512 for 2048-d).

    """

    predictor_hidden_dim: int = Field(128, ge=1)


@register_method(
    "simsiam",
    options=SimSiamOptions,
    paper="SimSiam, Chen & He, CVPR 2021 (arXiv 2011.10566)",
)
class SimSiam(SSLMethod):
    """SimSiam on the encoder's projection head.

    Shapes:
        ``views [B, 2, C, S, S] -> loss []``; projections and predictions ``[B, P]``.

    """

    num_views = 2

    def __init__(self, encoder: Encoder, training: TrainingConfig, options: SimSiamOptions) -> None:
        super().__init__(encoder, training, options)
        dim = encoder.head_dim
        self.predictor = SimSiamPredictionHead(dim, options.predictor_hidden_dim, dim)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, views: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """``(D(p0, stopgrad(z1)) + D(p1, stopgrad(z0))) / 2`` with ``D`` = negative cosine."""
        z0, z1 = encode_views(self.encoder, views)
        p0, p1 = (self.predictor(z).float() for z in (z0, z1))
        loss: torch.Tensor = 0.5 * (
            self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach())
        )
        return loss
