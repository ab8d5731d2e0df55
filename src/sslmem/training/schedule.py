"""Per-step learning-rate schedules: linear warm-up, then cosine decay (or constant).

Cosine decay without restarts (SGDR, Loshchilov & Hutter, ICLR 2017) after a linear warm-up
(Goyal et al. 2017) is the schedule of SimCLR (Chen et al. 2020), BYOL (Grill et al. 2020),
MAE (He et al. 2022) and DINO (Caron et al. 2021). It is applied per optimizer step, so the
schedule does not depend on how many steps an epoch has.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from lightly.utils.scheduler import cosine_schedule
from torch.optim.lr_scheduler import LambdaLR

ScheduleName = Literal["cosine", "constant"]


def lr_factor(
    step: int, *, total_steps: int, warmup_steps: int, schedule: ScheduleName = "cosine"
) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based).

    Warm-up: ``(step + 1) / warmup_steps`` for ``step < warmup_steps``, so the first step
    already moves (a zero learning rate would waste it) and step ``warmup_steps - 1`` reaches 1.
    Then ``"cosine"`` decays as ``(1 + cos(pi k / D)) / 2`` with ``k = step - warmup_steps``
    and ``D = total_steps - warmup_steps``: 1 right after the warm-up, approaching 0 at the
    end (the last step still moves); ``"constant"`` stays at 1.

    Args:
        step: Optimizer step, ``0 <= step``; steps past the run count as its last step.
        total_steps: Optimizer steps in the whole run.
        warmup_steps: Linear warm-up steps (``0 <= warmup_steps <= total_steps``).
        schedule: Shape after the warm-up.

    Returns:
        The factor in ``[0, 1]``.

    Raises:
        ValueError: Negative step, or warm-up longer than the run.

    """
    if step < 0 or total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"invalid schedule position: step={step}, total_steps={total_steps}, "
            f"warmup_steps={warmup_steps}"
        )
    # LambdaLR evaluates one step past the end after the last optimizer step; clamp it.
    step = min(step, total_steps - 1)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    # k / D in [0, 1): the last step keeps a small positive rate instead of wasting a step at 0.
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int,
    schedule: ScheduleName = "cosine",
) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor`; call ``.step()`` after every optimizer step.

    Its ``state_dict`` holds only numbers (the lambda is not serialised), so it round-trips
    through ``torch.load(weights_only=True)``.
    """
    return LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step, total_steps=total_steps, warmup_steps=warmup_steps, schedule=schedule
        ),
    )


def cosine_momentum(step: int, total_steps: int, start: float, end: float = 1.0) -> float:
    """EMA momentum for a teacher at ``step``: cosine from ``start`` to ``end``.

    BYOL (Grill et al. 2020, Sec. 3.2): ``tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2``;
    DINO (Caron et al. 2021) uses the same schedule for its teacher.
    """
    if total_steps <= 1:
        return end
    return float(
        cosine_schedule(min(step, total_steps), total_steps, start_value=start, end_value=end)
    )
