"""The encoder every part of sslmem trains, scores and evaluates.

An :class:`Encoder` is a backbone (images -> features) plus the projection head the SSL loss
acts on. The head is always kept: memorisation shows first in the space the SSL loss acts on
(Wang et al., ICLR 2024; see docs/), so scoring at ``"head"`` must stay possible.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Encoder(nn.Module):
    """Backbone plus projection head.

    Named layers (for representations and LayerMem) are the dotted submodule names under
    ``backbone`` and ``head``; ``"backbone"`` is the backbone's output (``[B, feature_dim]``)
    and ``"head"`` the projection output (``[B, head_dim]``).

    Args:
        backbone: Maps images ``[B, C, H, W]`` (float, normalised) to features ``[B, D]``.
        head: Maps features ``[B, D]`` to projections ``[B, P]``.
        arch: Registered architecture name.
        arch_config: Keyword arguments the builder was called with (JSON-serialisable).
        feature_dim: ``D``.
        head_dim: ``P``.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        arch: str,
        arch_config: dict[str, Any],
        feature_dim: int,
        head_dim: int,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.arch = arch
        self.arch_config = dict(arch_config)
        self.feature_dim = feature_dim
        self.head_dim = head_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Project images: ``[B, C, H, W] -> [B, P]``."""
        return self.head(self.backbone(images))  # type: ignore[no-any-return]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features: ``[B, C, H, W] -> [B, D]``."""
        return self.backbone(images)  # type: ignore[no-any-return]

    def layer_names(self) -> list[str]:
        """All named layers a representation can be taken from, in forward order."""
        names = ["backbone"]
        names += [f"backbone.{n}" for n, _ in self.backbone.named_modules() if n]
        names.append("head")
        names += [f"head.{n}" for n, _ in self.head.named_modules() if n]
        return names
