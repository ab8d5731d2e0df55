from __future__ import annotations

import itertools
import math

import pytest
import torch

from sslmem.training.schedule import build_scheduler, cosine_momentum, lr_factor


def test_linear_warmup_then_cosine() -> None:
    factors = [lr_factor(s, total_steps=10, warmup_steps=4) for s in range(10)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # Cosine over the remaining 6 steps: (1 + cos(pi k / 6)) / 2.
    expected = [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    assert factors[4:] == pytest.approx(expected)
    assert factors[-1] > 0  # the last step still trains
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))


def test_no_warmup_and_constant_schedule() -> None:
    assert lr_factor(0, total_steps=5, warmup_steps=0) == 1.0
    assert lr_factor(0, total_steps=1, warmup_steps=0) == 1.0
    assert [lr_factor(s, total_steps=5, warmup_steps=2, schedule="constant") for s in range(5)] == [
        0.5,
        1.0,
        1.0,
        1.0,
        1.0,
    ]
    # Past the end (LambdaLR's final call) counts as the last step.
    assert lr_factor(7, total_steps=5, warmup_steps=0) == lr_factor(
        4, total_steps=5, warmup_steps=0
    )
    with pytest.raises(ValueError):
        lr_factor(0, total_steps=4, warmup_steps=5)


def test_scheduler_applies_factors_per_step_and_round_trips() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = build_scheduler(optimizer, total_steps=6, warmup_steps=2)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx(
        [0.1 * lr_factor(s, total_steps=6, warmup_steps=2) for s in range(6)]
    )
    state = scheduler.state_dict()
    assert all(fn is None for fn in state["lr_lambdas"])  # nothing to unpickle


def test_cosine_momentum_goes_to_one() -> None:
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(99, 100, 0.99) == pytest.approx(1.0)
    assert 0.99 < cosine_momentum(50, 100, 0.99) < 1.0
