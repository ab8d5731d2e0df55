"""Named normalisations of raw SSLMem scores; raw scores are always kept beside them.

A normalised score depends on which other points were scored with it, so only raw scores on a
fixed candidate set are comparable across model versions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sslmem.errors import ConfigError


def _value_range(raw: torch.Tensor) -> torch.Tensor:
    if raw.numel() == 0:
        return torch.tensor(1.0)
    span = raw.max() - raw.min()
    # A constant score set has no range; dividing by 1 keeps it unchanged instead of NaN.
    return torch.where(span > 0, span, torch.ones_like(span))


def range_normalize(raw: torch.Tensor) -> torch.Tensor:
    """``raw / (max - min)``, as in the authors' script: ``[N] -> [N]``."""
    return raw / _value_range(raw)


def minmax_normalize(raw: torch.Tensor) -> torch.Tensor:
    """``(raw - min) / (max - min)`` into ``[0, 1]``: ``[N] -> [N]``."""
    if raw.numel() == 0:
        return raw.clone()
    return (raw - raw.min()) / _value_range(raw)


NORMALIZATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "range": range_normalize,
    "minmax": minmax_normalize,
}


def normalize(raw: torch.Tensor, name: str) -> torch.Tensor:
    """Apply the normalisation registered as ``name``."""
    try:
        return NORMALIZATIONS[name](raw)
    except KeyError:
        raise ConfigError(
            f"unknown normalisation {name!r}", f"use one of {sorted(NORMALIZATIONS)}"
        ) from None
