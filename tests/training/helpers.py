"""Tiny datasets and configs for training tests (fast on a 2-core CPU)."""

from __future__ import annotations

from typing import Any

import torch

from sslmem.config import ExperimentConfig, load_experiment_config
from sslmem.data import ImageDataset, SplitManifest, make_split

SMALL_CNN = "model.arch_kwargs={widths: [8, 16]}"
TINY_VIT = "model.arch_kwargs={num_layers: 1, hidden_dim: 32, num_heads: 2, mlp_dim: 64}"


def tiny_dataset(n: int = 40, channels: int = 1, size: int = 16, seed: int = 0) -> ImageDataset:
    """Random uint8 images with two classes (smooth blobs, so crops differ from noise)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (n, channels, size // 4, size // 4), generator=gen)
    images = torch.nn.functional.interpolate(coarse.float(), size=(size, size), mode="bilinear")
    return ImageDataset(
        name="bundled",
        images=images.round().clamp(0, 255).to(torch.uint8),
        labels=torch.arange(n) % 2,
        classes=("a", "b"),
    )


def tiny_split(dataset: ImageDataset) -> SplitManifest:
    return make_split(dataset)


def tiny_config(
    method: str = "simclr", arch: str = "small_cnn", *overrides: str, **fields: Any
) -> ExperimentConfig:
    """A config for 16-px images: 2 epochs of batch 8 unless overridden."""
    sets = [
        f"training.method={method}",
        f"model.arch={arch}",
        TINY_VIT if arch == "vit_tiny" else SMALL_CNN,
        "model.head_hidden_dim=16",
        "model.head_output_dim=8",
        "training.epochs=2",
        "training.batch_size=8",
        "augmentation.output_size=16",
        *overrides,
        *(f"{key}={value}" for key, value in fields.items()),
    ]
    return load_experiment_config(None, sets)
