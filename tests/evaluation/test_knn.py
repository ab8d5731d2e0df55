import math

import pytest
import torch

from sslmem.errors import ConfigError, DataError, SSLMemError
from sslmem.evaluation import EvaluationError, knn_accuracy, knn_class_scores, knn_predict


def _clusters(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[5.0, 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 0.0]])
    labels = torch.arange(2).repeat_interleave(n_per_class)
    feats = centres[labels] + 0.5 * torch.randn(2 * n_per_class, 4, generator=g)
    return feats, labels


def test_separated_clusters_are_classified_perfectly() -> None:
    train, train_y = _clusters(50, seed=0)
    test, test_y = _clusters(30, seed=1)
    acc = knn_accuracy(train, train_y, test, test_y, k=5, temperature=0.1, num_classes=2)
    assert acc == 1.0


def test_shuffled_train_labels_give_chance_accuracy() -> None:
    train, train_y = _clusters(200, seed=0)
    test, test_y = _clusters(200, seed=1)
    shuffled = train_y[torch.randperm(train_y.numel(), generator=torch.Generator().manual_seed(2))]
    acc = knn_accuracy(train, shuffled, test, test_y, k=20, temperature=0.1, num_classes=2)
    assert 0.35 < acc < 0.65


def _hand_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Cosine similarities to the query [1, 0]: 1.0 (class 0), 0.8 and 0.6 (class 1), -1 (class 0).
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[2.0, 0.0]])  # knn_predict normalises; scale must not matter
    return bank, labels, query


def test_hand_computed_votes_and_weights() -> None:
    bank, labels, query = _hand_case()
    # T = 0.5, k = 3: class 0 weighs e^2 = 7.39, class 1 weighs e^1.6 + e^1.2 = 8.27 -> class 1.
    scores = knn_class_scores(
        torch.nn.functional.normalize(query, dim=1),
        bank,
        labels,
        num_classes=3,
        k=3,
        temperature=0.5,
    )
    expected = torch.tensor([[math.exp(2.0), math.exp(1.6) + math.exp(1.2), 0.0]])
    torch.testing.assert_close(scores, expected / math.exp(2.0))  # scaled so the nearest weighs 1
    pred = knn_predict(bank, labels, query, num_classes=3, k=3, temperature=0.5)
    assert pred.tolist() == [1]
    # T = 0.1: e^10 = 22026 beats e^8 + e^6 = 3384 -> the nearest neighbour's class wins.
    pred = knn_predict(bank, labels, query, num_classes=3, k=3, temperature=0.1)
    assert pred.tolist() == [0]
    # k = 1 is the nearest neighbour; k = 4 adds class 0's far point with weight e^-2 -> class 1.
    assert knn_predict(bank, labels, query, num_classes=3, k=1, temperature=0.5).tolist() == [0]
    assert knn_predict(bank, labels, query, num_classes=3, k=4, temperature=0.5).tolist() == [1]


def test_k_is_capped_at_train_size_and_batching_does_not_matter() -> None:
    train, train_y = _clusters(3, seed=0)
    test, _ = _clusters(40, seed=1)
    full = knn_predict(train, train_y, test, num_classes=2, k=100, temperature=0.1)
    small = knn_predict(train, train_y, test, num_classes=2, k=6, temperature=0.1, batch_size=7)
    assert torch.equal(full, small)


def test_small_temperature_does_not_overflow() -> None:
    bank, labels, query = _hand_case()
    pred = knn_predict(bank, labels, query, num_classes=2, k=3, temperature=1e-4)
    assert pred.tolist() == [0]


@pytest.mark.slow
def test_matches_lightly_knn_predict() -> None:
    from lightly.utils.benchmarking import knn_predict as lightly_knn_predict

    g = torch.Generator().manual_seed(0)
    train = torch.randn(300, 16, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    test = torch.randn(100, 16, generator=g)
    ours = knn_predict(train, labels, test, num_classes=5, k=20, temperature=0.1, batch_size=32)
    bank = torch.nn.functional.normalize(train, dim=1).T
    theirs = lightly_knn_predict(
        torch.nn.functional.normalize(test, dim=1), bank, labels, 5, knn_k=20, knn_t=0.1
    )[:, 0]
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("empty_train", DataError),
        ("length_mismatch", DataError),
        ("dim_mismatch", DataError),
        ("label_out_of_range", DataError),
        ("nan_feature", EvaluationError),
        ("inf_test_feature", EvaluationError),
        ("k_zero", ConfigError),
    ],
)
def test_bad_input_raises_clear_error(case: str, error: type[SSLMemError]) -> None:
    train, train_y = _clusters(5, seed=0)
    test, test_y = _clusters(5, seed=1)
    k, num_classes = 3, 2
    if case == "empty_train":
        train, train_y = train[:0], train_y[:0]
    elif case == "length_mismatch":
        train_y = train_y[:-1]
    elif case == "dim_mismatch":
        test = test[:, :3]
    elif case == "label_out_of_range":
        num_classes = 1
    elif case == "nan_feature":
        train[2, 1] = float("nan")
    elif case == "inf_test_feature":
        test[0, 0] = float("inf")
    elif case == "k_zero":
        k = 0
    with pytest.raises(error) as info:
        knn_accuracy(train, train_y, test, test_y, k=k, temperature=0.1, num_classes=num_classes)
    assert info.value.problem
    if case != "k_zero":
        assert info.value.fix
