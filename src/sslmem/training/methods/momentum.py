"""Momentum (EMA) teachers shared by BYOL and DINO."""

from __future__ import annotations

import copy
from typing import TypeVar

from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def make_teacher(student: ModuleT) -> ModuleT:
    """A frozen deep copy of ``student`` to be updated only by :func:`ema_update`.

    Its parameters have ``requires_grad=False``: no optimizer or DDP reducer touches them.
    """
    teacher = copy.deepcopy(student)
    deactivate_requires_grad(teacher)
    return teacher


def ema_update(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """``teacher <- m * teacher + (1 - m) * student`` over parameters (lightly's update)."""
    update_momentum(student, teacher, m=momentum)
