"""The momentum (EMA) teacher of BYOL and DINO moves towards the student by 1 - m.

BYOL (Grill et al. 2020, Sec. 3.1): ``xi <- tau * xi + (1 - tau) * theta``; DINO (Caron et al.
2021, Sec. 3.1) likewise. With m = 0.99 one update moves the teacher 1 % of the way: a teacher
at 0 and a student at 1 give 0.01 (swapping m and 1 - m would give 0.99).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslmem.models import build_encoder
from sslmem.training.methods import StepContext, build_method
from sslmem.training.methods.momentum import ema_update
from tests.training.helpers import tiny_config


def _ctx(step: int, total: int = 100) -> StepContext:
    return StepContext(
        epoch=0,
        global_step=step,
        total_steps=total,
        steps_per_epoch=total,
        generator=torch.Generator().manual_seed(0),
    )


def _fill(module: nn.Module, value: float) -> None:
    with torch.no_grad():
        for param in module.parameters():
            param.fill_(value)


def _values(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_ema_update_moves_the_teacher_one_minus_m_of_the_way() -> None:
    teacher, student = nn.Linear(3, 2), nn.Linear(3, 2)
    _fill(teacher, 2.0)
    _fill(student, 12.0)
    ema_update(student, teacher, 0.99)
    # 0.99 * 2 + 0.01 * 12 = 2.1
    torch.testing.assert_close(_values(teacher), torch.full((8,), 2.1))
    assert bool((_values(student) == 12.0).all())  # the student is not touched


@pytest.mark.parametrize(
    ("method", "pairs", "extra"),
    [
        ("byol", [("encoder", "teacher")], "training.method_kwargs={momentum_start: 0.99}"),
        (
            "dino",
            [("encoder", "teacher_encoder"), ("prototypes", "teacher_prototypes")],
            "training.method_kwargs={momentum_start: 0.99, num_prototypes: 16}",
        ),
    ],
)
def test_one_step_with_m_099_moves_the_teacher_one_percent(
    method: str, pairs: list[tuple[str, str]], extra: str
) -> None:
    config = tiny_config(method, "small_cnn", extra)
    ssl = build_method(build_encoder(config.model, in_channels=1, image_size=16), config.training)
    for student, teacher in pairs:
        assert not any(p.requires_grad for p in ssl.get_submodule(teacher).parameters())
        _fill(ssl.get_submodule(student), 1.0)
        _fill(ssl.get_submodule(teacher), 0.0)
    ssl.after_optimizer_step(_ctx(0))  # step 0 of the cosine schedule: m = momentum_start
    for student, teacher in pairs:
        moved = _values(ssl.get_submodule(teacher))
        torch.testing.assert_close(moved, torch.full_like(moved, 0.01))
        assert bool((_values(ssl.get_submodule(student)) == 1.0).all())
    # The schedule raises m towards 1 (BYOL Sec. 3.2): a later step moves the teacher less
    # than 1 % of the remaining 0.99.
    ssl.after_optimizer_step(_ctx(50))
    second = _values(ssl.get_submodule(pairs[0][1])) - 0.01
    assert bool((second > 0).all()) and bool((second < 0.01 * 0.99).all())
