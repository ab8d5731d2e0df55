"""Small encoders and data shared by tests (no registry needed)."""

from __future__ import annotations

import torch
from torch import nn

from sslmem.models.encoder import Encoder


def tiny_encoder(
    seed: int = 0, in_channels: int = 1, width: int = 8, head_dim: int = 4, pool: int = 1
) -> Encoder:
    """A small conv encoder; ``pool > 1`` keeps a ``pool x pool`` spatial map in the features,
    which makes it far less invariant to crops than global pooling (``pool=1``)."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(pool),
        nn.Flatten(),
    )
    width = width * pool * pool
    head = nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, head_dim))
    return Encoder(
        backbone=backbone,
        head=head,
        arch="test_tiny",
        arch_config={"in_channels": in_channels, "width": width},
        feature_dim=width,
        head_dim=head_dim,
    )


def random_images(n: int, channels: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
