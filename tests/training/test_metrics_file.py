"""metrics.jsonl holds each epoch of the current run exactly once.

A run interrupted before its first resume file used to leave lines that the next run in the
same directory appended to (epochs 0-16, then 0-1); a resumed run repeated the epochs after its
resume file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sslmem.errors import TrainingError
from sslmem.training import JsonlMetricsLogger, train_encoder
from tests.training.helpers import tiny_config, tiny_dataset, tiny_split


class KilledError(Exception):
    """Stands in for the process being killed after an epoch."""


class KillAfter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.epoch:
            raise KilledError


def _lines(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_new_run_starts_a_clean_metrics_file(tmp_path: Path) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    metrics = tmp_path / "metrics.jsonl"
    # An interrupted run: 4 epochs done, no resume file yet (every 10 epochs).
    long = tiny_config("simclr", "small_cnn", "training.epochs=10", "training.checkpoint_every=10")
    with pytest.raises(KilledError):
        train_encoder(
            data, manifest, role="candidate", config=long, out_dir=tmp_path, device="cpu",
            callbacks=[JsonlMetricsLogger(metrics), KillAfter(3)], progress=False,
        )  # fmt: skip
    assert [line["epoch"] for line in _lines(metrics)] == [0, 1, 2, 3]
    assert not (tmp_path / "resume.pt").exists()

    result = train_encoder(
        data, manifest, role="candidate", config=tiny_config(), out_dir=tmp_path, device="cpu",
        callbacks=[JsonlMetricsLogger(metrics)], progress=False,
    )  # fmt: skip
    lines = _lines(metrics)
    assert [line["epoch"] for line in lines] == [0, 1]
    assert [line["loss"] for line in lines] == [h["loss"] for h in result.history]


def test_a_resumed_run_keeps_each_epoch_once(tmp_path: Path) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    metrics = tmp_path / "metrics.jsonl"
    config = tiny_config("simclr", "small_cnn", "training.epochs=4", "training.checkpoint_every=2")
    with pytest.raises(KilledError):  # resume file after epoch 2; epoch 3 logged, then killed
        train_encoder(
            data, manifest, role="candidate", config=config, out_dir=tmp_path, device="cpu",
            callbacks=[JsonlMetricsLogger(metrics), KillAfter(2)], progress=False,
        )  # fmt: skip
    assert [line["epoch"] for line in _lines(metrics)] == [0, 1, 2]
    result = train_encoder(
        data, manifest, role="candidate", config=config, out_dir=tmp_path, device="cpu",
        callbacks=[JsonlMetricsLogger(metrics)], resume=True, progress=False,
    )  # fmt: skip
    assert result.resumed_from_epoch == 2
    lines = _lines(metrics)
    assert [line["epoch"] for line in lines] == [0, 1, 2, 3]
    assert [line["loss"] for line in lines] == [h["loss"] for h in result.history]


def test_a_refused_directory_keeps_its_metrics(tmp_path: Path) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    metrics = tmp_path / "metrics.jsonl"
    train_encoder(
        data, manifest, role="candidate", config=tiny_config(), out_dir=tmp_path, device="cpu",
        callbacks=[JsonlMetricsLogger(metrics)], progress=False,
    )  # fmt: skip
    before = metrics.read_bytes()
    with pytest.raises(TrainingError, match="already holds a training run"):
        train_encoder(
            data, manifest, role="candidate", config=tiny_config(), out_dir=tmp_path,
            device="cpu", callbacks=[JsonlMetricsLogger(metrics)], progress=False,
        )  # fmt: skip
    assert metrics.read_bytes() == before
