"""Device selection and the precision/layout choices that go with it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from sslmem.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a device, checking it exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"unknown device {name!r}", "use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available", "use 'cpu'")
    return device


@contextlib.contextmanager
def autocast_for(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA (fast and range-safe); plain float32 elsewhere."""
    if device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def to_device_layout(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Use channels_last for 4-D batches on CUDA, where convolutions run faster in it."""
    if device.type == "cuda" and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
