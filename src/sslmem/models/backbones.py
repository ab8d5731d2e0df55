"""Built-in backbones: a small CNN, ResNets (ImageNet and CIFAR stems) and a small ViT.

All are built with random weights (``weights=None``); pretrained weights are never downloaded.
Each maps float images ``[B, C, H, W]`` to features ``[B, D]``.

* ``small_cnn``: 3 blocks of conv3x3-BN-ReLU (widths 32/64/128), max-pool between blocks,
  global average pool; the CPU-friendly encoder of the feasibility runs (``D = widths[-1]``).
* ``resnet18`` / ``resnet50``: torchvision ResNets (He et al., CVPR 2016), ``fc`` removed
  (``D = 512`` / ``2048``).
* ``resnet18_cifar`` / ``resnet50_cifar``: the same with the CIFAR stem (conv1 3x3 stride 1, no
  max-pool) used for 32-px inputs by SimCLR (Chen et al., 2020) and SSLMem (Wang et al., ICLR
  2024; ResNet-50 for SimCLR).
* ``vit_tiny``: a torchvision ``VisionTransformer`` (Dosovitskiy et al., ICLR 2021) with
  ViT-Tiny widths (hidden 192, 3 heads, MLP 768), patch 4 by default for 32-px inputs; returns
  the class token ``[B, 192]``. Kept a plain torchvision model so MAE training can wrap it in
  lightly's ``MaskedVisionTransformerTorchvision`` (SSLMem's MAE uses ViT-Tiny, patch 2, 32 px).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models import resnet50 as tv_resnet50
from torchvision.models.resnet import ResNet
from torchvision.models.vision_transformer import VisionTransformer

from sslmem.errors import ConfigError
from sslmem.models.registry import register_backbone

_RESNET_STAGES = ["layer1", "layer2", "layer3", "layer4"]


class SmallCNN(nn.Module):
    """Small convolutional backbone.

    Block ``i`` is ``[pool] -> conv -> bn -> relu`` where ``pool`` (2x2 max-pool) exists for
    ``i > 0``; the features are the global average pool of the last block.

    Args:
        in_channels: Input channels ``C``.
        widths: Output channels of each block; ``D = widths[-1]``.

    Shapes:
        ``[B, C, H, W] -> [B, widths[-1]]``; ``H, W >= 2 ** (len(widths) - 1)``.

    """

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            if index > 0:
                layers["pool"] = nn.MaxPool2d(2)
            layers["conv"] = nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False)
            layers["bn"] = nn.BatchNorm2d(width)
            layers["relu"] = nn.ReLU()
            blocks.append(nn.Sequential(layers))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features: ``[B, C, H, W] -> [B, D]``."""
        return self.flatten(self.pool(self.blocks(images)))  # type: ignore[no-any-return]


def _small_cnn_stages(backbone: nn.Module) -> list[str]:
    blocks = backbone.get_submodule("blocks")
    return [f"blocks.{name}" for name, _ in blocks.named_children()]


def _vit_stages(backbone: nn.Module) -> list[str]:
    layers = backbone.get_submodule("encoder.layers")
    return [f"encoder.layers.{name}" for name, _ in layers.named_children()]


@register_backbone("small_cnn", stages=_small_cnn_stages)
def small_cnn(
    *, in_channels: int, image_size: int, widths: tuple[int, ...] = (32, 64, 128)
) -> tuple[nn.Module, int]:
    """Small CNN (see :class:`SmallCNN`); ``[B, C, H, W] -> [B, widths[-1]]``."""
    if not widths or any(w < 1 for w in widths):
        raise ConfigError(
            f"small_cnn: widths must be a non-empty list of positive integers, got {widths!r}"
        )
    min_size = 2 ** (len(widths) - 1)
    if image_size < min_size:
        raise ConfigError(
            f"small_cnn: image_size {image_size} is too small for {len(widths)} blocks",
            f"use image_size >= {min_size} or fewer widths",
        )
    return SmallCNN(in_channels, tuple(widths)), widths[-1]


def _adapt_resnet(model: ResNet, *, in_channels: int, cifar_stem: bool) -> ResNet:
    """Replace ``conv1`` for ``in_channels`` (and the CIFAR stem) and drop ``fc``."""
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.fc = nn.Identity()
    return model


@register_backbone("resnet18", stages=lambda m: list(_RESNET_STAGES))
def resnet18(
    *, in_channels: int, image_size: int, zero_init_residual: bool = False
) -> tuple[nn.Module, int]:
    """Torchvision ResNet-18 (ImageNet stem), ``fc`` removed: ``[B, C, H, W] -> [B, 512]``."""
    model = tv_resnet18(weights=None, zero_init_residual=zero_init_residual)
    return _adapt_resnet(model, in_channels=in_channels, cifar_stem=False), 512


@register_backbone("resnet18_cifar", stages=lambda m: list(_RESNET_STAGES))
def resnet18_cifar(
    *, in_channels: int, image_size: int, zero_init_residual: bool = False
) -> tuple[nn.Module, int]:
    """ResNet-18 with the CIFAR stem (conv1 3x3 stride 1, no max-pool): ``-> [B, 512]``."""
    model = tv_resnet18(weights=None, zero_init_residual=zero_init_residual)
    return _adapt_resnet(model, in_channels=in_channels, cifar_stem=True), 512


@register_backbone("resnet50", stages=lambda m: list(_RESNET_STAGES))
def resnet50(
    *, in_channels: int, image_size: int, zero_init_residual: bool = False
) -> tuple[nn.Module, int]:
    """Torchvision ResNet-50 (ImageNet stem), ``fc`` removed: ``[B, C, H, W] -> [B, 2048]``."""
    model = tv_resnet50(weights=None, zero_init_residual=zero_init_residual)
    return _adapt_resnet(model, in_channels=in_channels, cifar_stem=False), 2048


@register_backbone("resnet50_cifar", stages=lambda m: list(_RESNET_STAGES))
def resnet50_cifar(
    *, in_channels: int, image_size: int, zero_init_residual: bool = False
) -> tuple[nn.Module, int]:
    """ResNet-50 with the CIFAR stem (SSLMem's SimCLR encoder): ``-> [B, 2048]``."""
    model = tv_resnet50(weights=None, zero_init_residual=zero_init_residual)
    return _adapt_resnet(model, in_channels=in_channels, cifar_stem=True), 2048


@register_backbone("vit_tiny", stages=_vit_stages)
def vit_tiny(
    *,
    in_channels: int,
    image_size: int,
    patch_size: int = 4,
    num_layers: int = 12,
    num_heads: int = 3,
    hidden_dim: int = 192,
    mlp_dim: int = 768,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
) -> tuple[nn.Module, int]:
    """ViT-Tiny as a torchvision ``VisionTransformer``: ``[B, C, H, W] -> [B, hidden_dim]``.

    The output is the final-layer-normed class token (``heads`` is ``Identity``). Inputs must
    be exactly ``image_size`` square.
    """
    if patch_size < 1 or image_size % patch_size != 0:
        raise ConfigError(
            f"vit_tiny: patch_size {patch_size} does not divide image_size {image_size}",
            "choose a patch_size that divides image_size (e.g. 2 or 4 for 32 px)",
        )
    for what, value in (
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("hidden_dim", hidden_dim),
        ("mlp_dim", mlp_dim),
    ):
        if value < 1:
            raise ConfigError(f"vit_tiny: {what} must be positive, got {value}")
    if hidden_dim % num_heads != 0:
        raise ConfigError(
            f"vit_tiny: hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}",
            "choose num_heads dividing hidden_dim",
        )
    for what, rate in (("dropout", dropout), ("attention_dropout", attention_dropout)):
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"vit_tiny: {what} must be in [0, 1), got {rate}")
    model = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        dropout=dropout,
        attention_dropout=attention_dropout,
    )
    if in_channels != 3:
        model.conv_proj = nn.Conv2d(
            in_channels, hidden_dim, kernel_size=patch_size, stride=patch_size
        )
        fan_in = in_channels * patch_size * patch_size
        nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(model.conv_proj.bias)
    model.heads = nn.Identity()
    return model, hidden_dim
