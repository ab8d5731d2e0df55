"""Weighted k-nearest-neighbour classification on frozen features.

The kNN monitor of InstDisc (Wu et al., "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination", CVPR 2018, Sec. 3.4), as used across SSL benchmarks (e.g. lightly's
``knn_predict``): features are l2-normalised, the ``k`` training points with the highest cosine
similarity vote for their class with weight ``exp(sim / temperature)``, and the class with the
largest total weight is predicted.

Why not call ``lightly.utils.benchmarking.knn_predict``: it computes exactly this (a parity test
in ``tests/evaluation`` checks it), but importing ``lightly.utils.benchmarking`` pulls in
PyTorch Lightning, which adds about 10 s to every CLI call and worker start. The function below
is the same dozen lines with batching over test points added.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslmem.errors import ConfigError
from sslmem.evaluation.checks import check_num_classes, check_pair


def knn_class_scores(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    *,
    num_classes: int,
    k: int,
    temperature: float,
) -> torch.Tensor:
    """Weighted kNN class scores for one batch of queries (no batching, no validation).

    Args:
        query: l2-normalised ``[B, D]``.
        bank: l2-normalised training features ``[N, D]``.
        bank_labels: int64 ``[N]`` in ``[0, num_classes)``.
        num_classes: ``C``.
        k: Neighbours, ``1 <= k <= N``.
        temperature: Vote weight is ``exp(sim / temperature)``.

    Returns:
        Float ``[B, C]``: the summed vote weight ``exp(sim / temperature)`` of each class among
        the ``k`` nearest neighbours (cosine similarity) of each query, scaled per query by
        ``exp(-max_sim / temperature)`` (so the nearest neighbour weighs 1).

    """
    sim = query @ bank.T  # [B, N]
    top_sim, top_idx = sim.topk(k, dim=1)  # [B, k], sorted descending
    # exp((sim - max_sim) / t): the per-query factor exp(-max_sim / t) changes no prediction and
    # keeps small temperatures from overflowing float32.
    weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
    scores = torch.zeros(query.shape[0], num_classes, device=query.device, dtype=weights.dtype)
    return scores.scatter_add_(1, bank_labels[top_idx], weights)


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    *,
    num_classes: int,
    k: int,
    temperature: float,
    batch_size: int = 256,
) -> torch.Tensor:
    """Predict classes of query points by a weighted vote of their ``k`` nearest neighbours.

    Features are l2-normalised here (cosine similarity). Memory is ``O(B * (N + k))`` for
    ``B = batch_size`` queries at a time. Ties between classes go to the lowest class index.

    Args:
        train_features: ``[N, D]`` (any scale).
        train_labels: Integer ``[N]`` in ``[0, num_classes)``.
        query_features: ``[M, D]`` on the same device.
        num_classes: ``C``.
        k: Neighbours; capped at ``N``.
        temperature: Vote weight is ``exp(sim / temperature)``; InstDisc uses 0.07, lightly 0.1.
        batch_size: Queries per batch.

    Returns:
        int64 ``[M]`` predicted classes.

    Raises:
        ConfigError: ``k``, ``temperature`` or ``batch_size`` is out of range.

    """
    if k < 1 or temperature <= 0 or batch_size < 1:
        raise ConfigError(
            f"kNN needs k >= 1, temperature > 0 and batch_size >= 1; got k={k}, "
            f"temperature={temperature}, batch_size={batch_size}",
            "set evaluation.knn_k, evaluation.knn_temperature, evaluation.knn_batch_size",
        )
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(device=bank.device, dtype=torch.int64)
    k = min(k, bank.shape[0])
    preds = []
    for start in range(0, query_features.shape[0], batch_size):
        query = F.normalize(query_features[start : start + batch_size].float(), dim=1)
        scores = knn_class_scores(
            query, bank, labels, num_classes=num_classes, k=k, temperature=temperature
        )
        preds.append(scores.argmax(dim=1))
    if not preds:
        return torch.empty(0, dtype=torch.int64, device=bank.device)
    return torch.cat(preds)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    k: int,
    temperature: float,
    num_classes: int,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier (InstDisc, Wu et al. 2018).

    Args:
        train_features: ``[N, D]`` (the feature bank).
        train_labels: Integer ``[N]``.
        test_features: ``[M, D]``.
        test_labels: Integer ``[M]``.
        k: Neighbours; capped at ``N``.
        temperature: Vote weight is ``exp(sim / temperature)``.
        num_classes: ``C``; every label must be below it.
        batch_size: Test points per batch (bounds memory).

    Returns:
        Fraction of test points whose predicted class equals their label, in ``[0, 1]``.

    Raises:
        DataError: A set is empty, shapes or dims disagree, or labels are out of range.
        EvaluationError: A feature is NaN or infinite.
        ConfigError: ``k``, ``temperature`` or ``batch_size`` is out of range.

    """
    check_pair(train_features, train_labels, test_features, test_labels)
    check_num_classes(num_classes, train_labels, test_labels)
    preds = knn_predict(
        train_features,
        train_labels,
        test_features.to(train_features.device),
        num_classes=num_classes,
        k=k,
        temperature=temperature,
        batch_size=batch_size,
    )
    correct = (preds == test_labels.to(preds.device)).sum()
    return float(correct) / test_labels.shape[0]
