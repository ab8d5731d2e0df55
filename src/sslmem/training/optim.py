"""Optimizer construction from the training recipe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightly.models.utils import get_weight_decay_parameters
from torch import nn

from sslmem.config import TrainingConfig

ParamGroups = list[dict[str, Any]]
_OPTIMIZERS: dict[str, Callable[[ParamGroups, TrainingConfig], torch.optim.Optimizer]] = {
    "adam": lambda groups, t: torch.optim.Adam(groups, lr=t.lr),
    "adamw": lambda groups, t: torch.optim.AdamW(groups, lr=t.lr),
    "sgd": lambda groups, t: torch.optim.SGD(groups, lr=t.lr, momentum=t.sgd_momentum),
}


def build_optimizer(model: nn.Module, training: TrainingConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD over the trainable parameters of ``model``.

    Normalisation parameters and biases get no weight decay (lightly's
    ``get_weight_decay_parameters``; the convention of MAE, DINO and BYOL's LARS setup).
    Frozen parameters (momentum teachers, MAE's unused head) are left out.

    Args:
        model: The SSL method module.
        training: Optimizer name, learning rate, weight decay, SGD momentum.

    Returns:
        The optimizer, with two parameter groups (decayed, not decayed).

    """
    decay, no_decay = get_weight_decay_parameters([model])
    groups: ParamGroups = [
        {"params": [p for p in decay if p.requires_grad], "weight_decay": training.weight_decay},
        {"params": [p for p in no_decay if p.requires_grad], "weight_decay": 0.0},
    ]
    return _OPTIMIZERS[training.optimizer](groups, training)
