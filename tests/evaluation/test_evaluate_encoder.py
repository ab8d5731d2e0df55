import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from sslmem.augment import AugmentationSpec
from sslmem.config import EvaluationConfig
from sslmem.errors import DataError, SSLMemError
from sslmem.evaluation import (
    EvaluationError,
    EvaluationResult,
    evaluate_encoder,
    extract_features,
)
from sslmem.models.encoder import Encoder

SPEC = AugmentationSpec(output_size=8)
CONFIG = EvaluationConfig(knn_k=5, probe_epochs=5, probe_batch_size=8, feature_batch_size=7)


@dataclass
class Labelled:
    images: torch.Tensor
    labels: torch.Tensor


def _encoder(poison: bool = False) -> Encoder:
    torch.manual_seed(0)
    layers: list[nn.Module] = [
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    if poison:
        layers.append(_Nan())
    return Encoder(
        backbone=nn.Sequential(*layers),
        head=nn.Linear(4, 3),
        arch="tiny_test",
        arch_config={},
        feature_dim=4,
        head_dim=3,
    )


class _Nan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


def _data(n: int, seed: int) -> Labelled:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 10, 10), generator=g, dtype=torch.uint8)
    return Labelled(images, torch.randint(0, 3, (n,), generator=g))


def test_evaluate_encoder_end_to_end_records_hyperparameters() -> None:
    result = evaluate_encoder(
        _encoder(), _data(24, 0), _data(12, 1), config=CONFIG, augment_spec=SPEC, device="cpu"
    )
    assert 0.0 <= result.knn_accuracy <= 1.0
    assert 0.0 <= result.linear_probe_accuracy <= 1.0
    assert (result.num_train, result.num_test, result.feature_dim) == (24, 12, 4)
    assert result.num_classes == 3
    record = result.to_dict()
    json.dumps(record)
    for key, value in CONFIG.model_dump().items():
        assert record[key] == value
    assert record["knn_k_used"] == 5
    assert record["augmentation"]["output_size"] == 8
    assert set(result.metrics()) == {"knn_accuracy", "linear_probe_accuracy"}


def test_a_record_reads_back_as_the_same_result_through_json() -> None:
    result = evaluate_encoder(
        _encoder(), _data(24, 0), _data(12, 1), config=CONFIG, augment_spec=SPEC, device="cpu"
    )
    record = {"encoder": "f.safetensors", **json.loads(json.dumps(result.to_dict()))}
    assert EvaluationResult.from_dict(record) == result  # extra keys (sslmem evaluate's) ignored


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"knn_accuracy": 1.01}, "knn_accuracy: Input should be less than or equal to 1"),
        (
            {"linear_probe_accuracy": float("nan")},
            "linear_probe_accuracy: Input should be a finite",
        ),
        ({"knn_k": 0}, "knn_k: Input should be greater than or equal to 1"),
        ({"augmentation": None}, "augmentation: Field required"),
        ({"probe_lr": None}, "missing probe_lr"),
    ],
)
def test_an_invalid_record_names_the_field(change: dict[str, object], says: str) -> None:
    result = evaluate_encoder(
        _encoder(), _data(24, 0), _data(12, 1), config=CONFIG, augment_spec=SPEC, device="cpu"
    )
    record = result.to_dict()
    for key, value in change.items():
        if value is None:
            del record[key]
        else:
            record[key] = value
    with pytest.raises(EvaluationError, match=says):
        EvaluationResult.from_dict(record)


def test_evaluate_encoder_is_deterministic() -> None:
    train, test = _data(24, 0), _data(12, 1)
    first = evaluate_encoder(_encoder(), train, test, config=CONFIG, augment_spec=SPEC)
    second = evaluate_encoder(_encoder(), train, test, config=CONFIG, augment_spec=SPEC)
    assert first == second


def test_extract_features_layers_modes_and_batching() -> None:
    encoder = _encoder()
    encoder.train()
    encoder.head.eval()  # a mixed-mode module tree must come back exactly as it was
    images = _data(9, 0).images
    feats = extract_features(encoder, images, augment_spec=SPEC, batch_size=2)
    assert feats.shape == (9, 4) and feats.dtype == torch.float32
    assert not feats.is_inference()
    # eval mode: batch norm uses running statistics, dropout is off -> batching changes nothing
    torch.testing.assert_close(
        feats, extract_features(encoder, images, augment_spec=SPEC, batch_size=9)
    )
    assert encoder.training and encoder.backbone.training and not encoder.head.training
    head = extract_features(encoder, images, augment_spec=SPEC, layer="head")
    assert head.shape == (9, 3)
    conv = extract_features(encoder, images, augment_spec=SPEC, layer="backbone.0")
    assert conv.shape == (9, 4 * 8 * 8)
    with pytest.raises(SSLMemError, match=r"backbone\.nope"):
        extract_features(encoder, images, augment_spec=SPEC, layer="backbone.nope")
    with pytest.raises(DataError, match="uint8"):
        extract_features(encoder, images.float(), augment_spec=SPEC)


@pytest.mark.parametrize("case", ["empty_train", "empty_test", "length_mismatch", "float_images"])
def test_bad_datasets_raise_data_error(case: str) -> None:
    train, test = _data(8, 0), _data(4, 1)
    if case == "empty_train":
        train = Labelled(train.images[:0], train.labels[:0])
    elif case == "empty_test":
        test = Labelled(test.images[:0], test.labels[:0])
    elif case == "length_mismatch":
        train = Labelled(train.images, train.labels[:-1])
    else:
        train = Labelled(train.images.float(), train.labels)
    with pytest.raises(DataError) as info:
        evaluate_encoder(_encoder(), train, test, config=CONFIG, augment_spec=SPEC)
    assert info.value.problem and info.value.fix


def test_non_finite_features_raise_evaluation_error() -> None:
    with pytest.raises(EvaluationError) as info:
        evaluate_encoder(
            _encoder(poison=True), _data(8, 0), _data(4, 1), config=CONFIG, augment_spec=SPEC
        )
    assert "NaN" in info.value.problem and info.value.fix
