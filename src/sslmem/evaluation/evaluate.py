"""Downstream evaluation of an encoder: the one entry point every adapter calls.

SSLMem's paper shows memorisation also drives downstream generalisation (Wang et al., ICLR 2024),
so every model version is scored for memorisation *and* evaluated downstream: a weighted kNN
classifier (InstDisc, Wu et al. 2018) and a linear probe (SimCLR, Chen et al. 2020), both on the
same frozen features, extracted once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sslmem.augment import AugmentationSpec
from sslmem.config import EvaluationConfig
from sslmem.errors import DataError
from sslmem.evaluation.checks import EvaluationError
from sslmem.evaluation.features import extract_features
from sslmem.evaluation.knn import knn_accuracy
from sslmem.evaluation.linear_probe import linear_probe_accuracy
from sslmem.models.encoder import Encoder


class LabelledImages(Protocol):
    """Anything with uint8 ``images [N, C, H, W]`` and integer ``labels [N]``.

    :class:`sslmem.data.ImageDataset` satisfies it; so does any object with those attributes.
    """

    @property
    def images(self) -> torch.Tensor:
        """uint8 ``[N, C, H, W]``."""
        ...

    @property
    def labels(self) -> torch.Tensor:
        """Integer ``[N]``."""
        ...


@dataclass(frozen=True)
class EvaluationResult:
    """Downstream accuracies of one encoder and everything needed to reproduce them.

    Attributes:
        knn_accuracy: Top-1 accuracy of the weighted kNN classifier, in ``[0, 1]``.
        linear_probe_accuracy: Top-1 accuracy of the linear probe, in ``[0, 1]``.
        num_train: Labelled training points (kNN bank, probe training set).
        num_test: Test points.
        num_classes: Classes ``C``.
        feature_dim: Dimension ``D`` of the evaluated features.
        knn_k_used: Neighbours actually used (``config.knn_k`` capped at ``num_train``).
        config: The evaluation hyper-parameters.
        augment_spec: The preprocessing spec (its ``output_size``, ``mean`` and ``std`` apply).

    """

    knn_accuracy: float
    linear_probe_accuracy: float
    num_train: int
    num_test: int
    num_classes: int
    feature_dim: int
    knn_k_used: int
    config: EvaluationConfig
    augment_spec: AugmentationSpec

    def metrics(self) -> dict[str, float]:
        """Return the accuracies, keyed for metric logging."""
        return {
            "knn_accuracy": self.knn_accuracy,
            "linear_probe_accuracy": self.linear_probe_accuracy,
        }

    def to_dict(self) -> dict[str, Any]:
        """Return a flat, JSON-serialisable record of results and hyper-parameters.

        Hyper-parameters keep their :class:`~sslmem.config.EvaluationConfig` field names; the
        preprocessing spec is nested under ``"augmentation"``.
        """
        return {
            **self.metrics(),
            "num_train": self.num_train,
            "num_test": self.num_test,
            "num_classes": self.num_classes,
            "feature_dim": self.feature_dim,
            "knn_k_used": self.knn_k_used,
            **self.config.model_dump(mode="json"),
            "augmentation": self.augment_spec.model_dump(mode="json"),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EvaluationResult:
        """Read back a :meth:`to_dict` record (other keys, e.g. ``sslmem evaluate``'s, ignored).

        Raises:
            EvaluationError: A field is missing or invalid (e.g. an accuracy outside
                ``[0, 1]``); the message names every such field.

        """
        config_fields = EvaluationConfig.model_fields
        missing = [name for name in config_fields if name not in record]
        try:
            numbers = _ResultFields.model_validate(record)
            config = EvaluationConfig.model_validate(
                {name: record[name] for name in config_fields if name in record}
            )
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}"
                for item in exc.errors()
            ]
            raise EvaluationError(f"invalid evaluation record: {'; '.join(problems)}") from None
        if missing:
            raise EvaluationError(
                f"invalid evaluation record: missing {', '.join(missing)} (how it was evaluated)"
            )
        return cls(
            knn_accuracy=numbers.knn_accuracy,
            linear_probe_accuracy=numbers.linear_probe_accuracy,
            num_train=numbers.num_train,
            num_test=numbers.num_test,
            num_classes=numbers.num_classes,
            feature_dim=numbers.feature_dim,
            knn_k_used=numbers.knn_k_used,
            config=config,
            augment_spec=numbers.augmentation,
        )


class _ResultFields(BaseModel):
    """The result fields of a :meth:`EvaluationResult.to_dict` record, validated."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    knn_accuracy: float = Field(ge=0, le=1)
    linear_probe_accuracy: float = Field(ge=0, le=1)
    num_train: int = Field(ge=1)
    num_test: int = Field(ge=1)
    num_classes: int = Field(ge=1)
    feature_dim: int = Field(ge=1)
    knn_k_used: int = Field(ge=1)
    augmentation: AugmentationSpec


@dataclass(frozen=True)
class EvaluationFile:
    """A downstream evaluation read from the JSON ``sslmem evaluate --out`` writes.

    Attributes:
        path: The file.
        result: The evaluation.
        encoder_sha256: SHA-256 of the evaluated checkpoint file (``None``: not recorded, e.g.
            a bare :meth:`EvaluationResult.to_dict` record).

    """

    path: Path
    result: EvaluationResult
    encoder_sha256: str | None


def read_evaluation_file(path: Path | str) -> EvaluationFile:
    """Read and validate an evaluation written by ``sslmem evaluate --out FILE``.

    Raises:
        EvaluationError: The file is missing, not a JSON object, or a field is missing or
            invalid (accuracies must lie in ``[0, 1]``); the message names the file.

    """
    file = Path(path)
    fix = f"write it with `sslmem evaluate --encoder CKPT --out {file}`"
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"evaluation file {file} does not exist", fix) from None
    except IsADirectoryError:
        raise EvaluationError(f"evaluation file {file} is a directory", fix) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"evaluation file {file} is not JSON ({exc})", fix) from None
    if not isinstance(record, dict):
        raise EvaluationError(
            f"evaluation file {file} holds a JSON {type(record).__name__}, not an object", fix
        )
    try:
        result = EvaluationResult.from_dict(record)
    except EvaluationError as exc:
        raise EvaluationError(f"evaluation file {file}: {exc.problem}", fix) from None
    sha = record.get("encoder_sha256")
    return EvaluationFile(file, result, sha if isinstance(sha, str) and sha else None)


def _check_set(data: LabelledImages, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = data.images, data.labels
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(
            f"{name} images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}",
            "pass the dataset's raw uint8 images; preprocessing happens in evaluation",
        )
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{name} set has {images.shape[0]} images but labels of shape {tuple(labels.shape)}",
            "pass exactly one label per image",
        )
    if images.shape[0] == 0:
        raise DataError(f"{name} set is empty", f"pass at least one labelled {name} image")
    return images, labels


def _num_classes(
    train: LabelledImages, train_labels: torch.Tensor, test_labels: torch.Tensor
) -> int:
    top = max(int(train_labels.max()), int(test_labels.max())) + 1
    classes = getattr(train, "classes", None)
    return max(top, len(classes)) if isinstance(classes, (tuple, list)) else top


def evaluate_encoder(
    encoder: Encoder,
    train: LabelledImages,
    test: LabelledImages,
    *,
    config: EvaluationConfig,
    augment_spec: AugmentationSpec,
    device: torch.device | str | None = None,
) -> EvaluationResult:
    """Evaluate an encoder downstream: weighted kNN and linear probe on frozen features.

    Features of both sets are extracted once (clean images, ``config.layer``) and shared by
    both evaluators. The encoder is moved to ``device`` and its train/eval modes are restored.

    Args:
        encoder: The encoder to evaluate.
        train: Labelled training images (kNN bank and probe training set).
        test: Labelled test images.
        config: Evaluation hyper-parameters.
        augment_spec: The spec the encoder was trained with (preprocessing only).
        device: Compute device; ``None`` uses the encoder's.

    Returns:
        Accuracies, set sizes and the hyper-parameters used.

    Raises:
        DataError: A set is empty, not uint8 ``[N, C, H, W]``, or has mismatched labels.
        EvaluationError: Features are NaN or infinite, or the probe diverged.
        ScoringError: ``config.layer`` is not a layer of the encoder.

    """
    train_images, train_labels = _check_set(train, "train")
    test_images, test_labels = _check_set(test, "test")

    def features(images: torch.Tensor) -> torch.Tensor:
        return extract_features(
            encoder,
            images,
            augment_spec=augment_spec,
            layer=config.layer,
            batch_size=config.feature_batch_size,
            device=device,
            autocast_bf16=config.autocast_bf16,
        )

    train_features = features(train_images)
    test_features = features(test_images)
    train_labels = train_labels.to(train_features.device)
    test_labels = test_labels.to(train_features.device)
    num_classes = _num_classes(train, train_labels, test_labels)
    knn = knn_accuracy(
        train_features,
        train_labels,
        test_features,
        test_labels,
        k=config.knn_k,
        temperature=config.knn_temperature,
        num_classes=num_classes,
        batch_size=config.knn_batch_size,
    )
    probe = linear_probe_accuracy(
        train_features,
        train_labels,
        test_features,
        test_labels,
        epochs=config.probe_epochs,
        lr=config.probe_lr,
        weight_decay=config.probe_weight_decay,
        batch_size=config.probe_batch_size,
        seed=config.probe_seed,
        num_classes=num_classes,
    )
    return EvaluationResult(
        knn_accuracy=knn,
        linear_probe_accuracy=probe,
        num_train=int(train_features.shape[0]),
        num_test=int(test_features.shape[0]),
        num_classes=num_classes,
        feature_dim=int(train_features.shape[1]),
        knn_k_used=min(config.knn_k, int(train_features.shape[0])),
        config=config,
        augment_spec=augment_spec,
    )
