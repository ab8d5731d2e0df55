"""Input validation shared by the evaluators; every failure says what was wrong and how to fix."""

from __future__ import annotations

import torch

from sslmem.errors import DataError, SSLMemError


class EvaluationError(SSLMemError):
    """Downstream evaluation cannot proceed (non-finite features, inconsistent inputs, ...)."""


def check_labelled_features(features: torch.Tensor, labels: torch.Tensor, *, name: str) -> None:
    """Check one labelled feature set before kNN or the linear probe.

    Args:
        features: Float ``[N, D]``.
        labels: Integer ``[N]``, non-negative.
        name: What the set is called in messages (``"train"``, ``"test"``).

    Raises:
        DataError: The set is empty, shapes disagree or labels are not non-negative integers.
        EvaluationError: A feature is NaN or infinite.

    """
    if features.dim() != 2:
        raise DataError(
            f"{name} features must be [N, D], got shape {tuple(features.shape)}",
            "pass one feature vector per row (flatten or pool spatial outputs first)",
        )
    if not features.is_floating_point():
        raise DataError(
            f"{name} features must be floating point, got {features.dtype}",
            "extract them with sslmem.evaluation.extract_features",
        )
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise DataError(
            f"{name} labels must be an integer [N] tensor, got {labels.dtype} "
            f"{tuple(labels.shape)}",
            "pass class indices as int64",
        )
    if features.shape[0] != labels.shape[0]:
        raise DataError(
            f"{name} set has {features.shape[0]} feature rows but {labels.shape[0]} labels",
            "pass exactly one label per point",
        )
    if features.shape[0] == 0:
        raise DataError(f"{name} set is empty", f"pass at least one labelled {name} point")
    if int(labels.min()) < 0:
        raise DataError(
            f"{name} labels contain negative class indices (min {int(labels.min())})",
            "map classes to 0..num_classes-1",
        )
    bad = int((~torch.isfinite(features)).any(dim=1).sum())
    if bad:
        raise EvaluationError(
            f"{bad} of {features.shape[0]} {name} feature vectors contain NaN or inf",
            "check the checkpoint (training may have diverged) or disable bf16 autocast",
        )


def check_pair(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
) -> None:
    """Check a train/test pair: each set as in :func:`check_labelled_features`, same ``D``.

    Raises:
        DataError: As in :func:`check_labelled_features`, or the feature dims differ.
        EvaluationError: A feature is NaN or infinite.

    """
    check_labelled_features(train_features, train_labels, name="train")
    check_labelled_features(test_features, test_labels, name="test")
    if train_features.shape[1] != test_features.shape[1]:
        raise DataError(
            f"train features have dim {train_features.shape[1]} but test features "
            f"{test_features.shape[1]}",
            "extract both sets with the same encoder and layer",
        )


def check_num_classes(num_classes: int, *labels: torch.Tensor) -> None:
    """Check every label is below ``num_classes``.

    Raises:
        DataError: ``num_classes < 1`` or a label is ``>= num_classes``.

    """
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}")
    top = max(int(t.max()) for t in labels if t.numel())
    if top >= num_classes:
        raise DataError(
            f"label {top} is out of range for num_classes={num_classes}",
            "pass num_classes = largest label + 1 (or more)",
        )
