"""SimCLR: contrastive learning with the NT-Xent loss.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (arXiv 2002.05709). Two views of each image are projected by the
encoder's MLP head; the normalised temperature-scaled cross-entropy (lightly's
:class:`~lightly.loss.NTXentLoss`) pulls the two views of an image together and pushes the other
``2B - 2`` views of the batch away. SSLMem's SimCLR encoders (Wang et al., ICLR 2024) use it.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
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


class SimCLROptions(MethodOptions):
    """SimCLR options (the temperature is ``training.temperature``).

    Attributes:
        gather_distributed: Under DDP, contrast against the negatives of every process (the
            effective batch of the paper), not only the local ones.

    """

    gather_distributed: bool = Field(True)


@register_method(
    "simclr", options=SimCLROptions, paper="SimCLR, Chen et al., ICML 2020 (arXiv 2002.05709)"
)
class SimCLR(SSLMethod):
    """SimCLR on the encoder's projection head.

    Shapes:
        ``views [B, 2, C, S, S] -> loss []``.

    """

    num_views = 2

    def __init__(self, encoder: Encoder, training: TrainingConfig, options: SimCLROptions) -> None:
        super().__init__(encoder, training, options)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.criterion = NTXentLoss(
            temperature=training.temperature,
            gather_distributed=options.gather_distributed and distributed,
        )

    def forward(self, views: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """NT-Xent loss of the two views' projections (``[B, P]`` each, float32)."""
        z0, z1 = encode_views(self.encoder, views)
        loss: torch.Tensor = self.criterion(z0, z1)
        return loss
