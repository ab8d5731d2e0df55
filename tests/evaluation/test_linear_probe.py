import pytest
import torch

from sslmem.errors import ConfigError, DataError
from sslmem.evaluation import EvaluationError, linear_probe_accuracy


def _separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    centres = 4.0 * torch.eye(3, 8)
    return centres[labels] + torch.randn(n, 8, generator=g), labels


def test_linearly_separable_features_reach_full_accuracy() -> None:
    train, train_y = _separable(150, seed=0)
    test, test_y = _separable(60, seed=1)
    acc = linear_probe_accuracy(
        train, train_y, test, test_y, epochs=10, lr=0.05, batch_size=50, seed=0
    )
    assert acc >= 0.98


def test_random_labels_stay_near_chance() -> None:
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    train_y = torch.randint(0, 4, (200,), generator=g)
    test_y = torch.randint(0, 4, (200,), generator=g)
    acc = linear_probe_accuracy(train, train_y, test, test_y, epochs=15, lr=0.05, batch_size=100)
    assert acc < 0.4


def test_same_seed_is_deterministic_and_full_batch_works() -> None:
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(100, 8, generator=g), torch.randn(50, 8, generator=g)
    train_y = (train[:, 0] + 0.8 * torch.randn(100, generator=g) > 0).long()
    test_y = (test[:, 0] > 0).long()
    kwargs = {"epochs": 3, "lr": 0.05, "batch_size": 16, "seed": 3}
    first = linear_probe_accuracy(train, train_y, test, test_y, **kwargs)  # type: ignore[arg-type]
    second = linear_probe_accuracy(train, train_y, test, test_y, **kwargs)  # type: ignore[arg-type]
    assert first == second
    full = linear_probe_accuracy(train, train_y, test, test_y, epochs=5, lr=0.1, batch_size=1000)
    assert 0.0 <= full <= 1.0


def test_trains_inside_a_callers_inference_mode() -> None:
    train, train_y = _separable(60, seed=0)
    with torch.inference_mode():
        acc = linear_probe_accuracy(train * 1.0, train_y, train * 1.0, train_y, epochs=10, lr=0.1)
    assert acc >= 0.9


def test_bad_input_raises_clear_error() -> None:
    train, train_y = _separable(20, seed=0)
    bad = train.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(EvaluationError, match="NaN or inf"):
        linear_probe_accuracy(bad, train_y, train, train_y, epochs=1, lr=0.1)
    with pytest.raises(DataError, match="empty"):
        linear_probe_accuracy(train[:0], train_y[:0], train, train_y, epochs=1, lr=0.1)
    with pytest.raises(DataError, match="labels"):
        linear_probe_accuracy(train, train_y[:5], train, train_y, epochs=1, lr=0.1)
    with pytest.raises(ConfigError):
        linear_probe_accuracy(train, train_y, train, train_y, epochs=0, lr=0.1)
