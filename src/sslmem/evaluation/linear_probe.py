"""Linear probe on frozen, pre-extracted features.

The standard linear evaluation protocol (SimCLR, Chen et al. 2020): the encoder is frozen and a
single linear layer is trained on its features with cross-entropy. Features are extracted once
(see :mod:`sslmem.evaluation.features`), so each epoch is a pass over an ``[N, D]`` matrix, not
over the encoder. Features are standardised with the training set's mean and std; the layer
starts at zero (the problem is convex, so the start does not matter), and the only randomness is
the seeded mini-batch order, so results are reproducible on a given device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslmem.errors import ConfigError
from sslmem.evaluation.checks import EvaluationError, check_num_classes, check_pair

_STD_EPS = 1e-6


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    num_classes: int | None = None,
) -> float:
    """Train a linear classifier on frozen training features and report test accuracy.

    Adam on cross-entropy, ``epochs`` passes over the training set in seeded random mini-batches
    (full batch when ``batch_size >= N``). Runs on the features' device.

    Args:
        train_features: ``[N, D]``.
        train_labels: Integer ``[N]``.
        test_features: ``[M, D]``.
        test_labels: Integer ``[M]``.
        epochs: Passes over the training set.
        lr: Adam learning rate.
        weight_decay: L2 penalty (Adam's ``weight_decay``).
        batch_size: Mini-batch size.
        seed: Seeds the mini-batch order; nothing else is random.
        num_classes: ``C``; defaults to the largest label + 1.

    Returns:
        Top-1 test accuracy in ``[0, 1]``.

    Raises:
        DataError: A set is empty, shapes or dims disagree, or labels are out of range.
        EvaluationError: A feature is NaN or infinite, or training diverged.
        ConfigError: ``epochs``, ``lr``, ``weight_decay`` or ``batch_size`` is out of range.

    """
    if epochs < 1 or lr <= 0 or weight_decay < 0 or batch_size < 1:
        raise ConfigError(
            f"linear probe needs epochs >= 1, lr > 0, weight_decay >= 0, batch_size >= 1; got "
            f"epochs={epochs}, lr={lr}, weight_decay={weight_decay}, batch_size={batch_size}",
            "set evaluation.probe_epochs / probe_lr / probe_weight_decay / probe_batch_size",
        )
    check_pair(train_features, train_labels, test_features, test_labels)
    if num_classes is None:
        num_classes = int(max(int(train_labels.max()), int(test_labels.max()))) + 1
    check_num_classes(num_classes, train_labels, test_labels)

    device = train_features.device
    # Outside inference mode with grad on, whatever the caller's context: the probe trains.
    with torch.inference_mode(False), torch.enable_grad():
        x_train = train_features.detach().float().clone()
        x_test = test_features.detach().to(device).float().clone()
        y_train = train_labels.to(device=device, dtype=torch.int64).clone()
        y_test = test_labels.to(device=device, dtype=torch.int64).clone()
        mean = x_train.mean(dim=0, keepdim=True)
        std = x_train.std(dim=0, keepdim=True, unbiased=False).clamp_min(_STD_EPS)
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std

        n, dim = x_train.shape
        probe = nn.Linear(dim, num_classes).to(device)
        nn.init.zeros_(probe.weight)
        nn.init.zeros_(probe.bias)
        optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
        generator = torch.Generator().manual_seed(seed)
        step = min(batch_size, n)
        loss = torch.zeros((), device=device)
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, step):
                idx = order[start : start + step]
                loss = F.cross_entropy(probe(x_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)
                optimizer.step()
        if not torch.isfinite(loss):
            raise EvaluationError(
                f"linear probe loss is {float(loss)} after {epochs} epochs (lr={lr})",
                "lower evaluation.probe_lr",
            )
        with torch.no_grad():
            preds = probe(x_test).argmax(dim=1)
    return float((preds == y_test).sum()) / y_test.shape[0]
