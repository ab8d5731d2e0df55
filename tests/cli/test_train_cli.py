from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sslmem.cli import main
from sslmem.config import SplitConfig
from sslmem.data import ImageDataset, load_dataset, make_split, save_manifest
from sslmem.models import load_checkpoint

FAST = [
    "--set", "model.arch_kwargs={widths: [8, 16]}",
    "--set", "model.head_hidden_dim=16",
    "--set", "augmentation.output_size=16",
    "--no-progress",
    "--device", "cpu",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    split = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=40, seed=2))
    return save_manifest(split, tmp_path_factory.mktemp("split") / "split.json")


def _train(manifest: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "train",
            "--split", str(manifest),
            "--role", "candidate",
            "--method", "simclr",
            "--arch", "small_cnn",
            "--epochs", "1",
            "--batch-size", "8",
            "--seed", "3",
            "--out", str(out),
            *FAST,
            *extra,
        ]
    )  # fmt: skip


@pytest.mark.slow
def test_train_resume_and_evaluate_round_trip(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "f"
    assert _train(manifest, out, "--lr", "0.002", "--checkpoint-every", "1") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["role"] == "candidate" and summary["steps"] == 32 // 8
    assert summary["resumed_from_epoch"] is None
    checkpoint = Path(summary["checkpoint"])
    meta = load_checkpoint(checkpoint).metadata
    assert meta["training"]["lr"] == 0.002 and meta["seed"] == 3
    assert meta["dataset"]["name"] == "bundled"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0]

    assert _train(manifest, out, "--lr", "0.002", "--resume") == 0
    assert json.loads(capsys.readouterr().out)["resumed_from_epoch"] == 1

    result_file = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--encoder", str(checkpoint),
            "--set", "evaluation.probe_epochs=2",
            "--device", "cpu",
            "--out", str(result_file),
        ]
    )  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(result_file.read_text())
    assert printed["dataset"] == "bundled" and printed["augmentation_source"] == "checkpoint"
    assert 0.0 <= printed["knn_accuracy"] <= 1.0
    assert 0.0 <= printed["linear_probe_accuracy"] <= 1.0
    assert printed["probe_epochs"] == 2 and printed["augmentation"]["output_size"] == 16
    assert printed["encoder_sha256"] == load_checkpoint(checkpoint).sha256


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--method", "swav"], "simclr"),
        (["--arch", "resnet7"], "small_cnn"),
        (["--method", "mae"], "vit_tiny"),
    ],
)
def test_unknown_or_incompatible_names_list_valid_ones(
    manifest: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    expected: str,
) -> None:
    assert _train(manifest, tmp_path / "x", *flags) == 2
    err = capsys.readouterr().err
    assert "error:" in err and expected in err
    assert not (tmp_path / "x").exists()


def test_missing_dataset_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = ImageDataset(
        name="fashion-mnist",
        images=torch.zeros(8, 1, 28, 28, dtype=torch.uint8),
        labels=torch.arange(8) % 2,
        classes=("a", "b"),
    )
    path = save_manifest(make_split(fake), tmp_path / "split.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _train(path, tmp_path / "run", "--data-root", str(empty)) == 2
    err = capsys.readouterr().err
    assert "fashion-mnist" in err and "apt-get install dataset-fashion-mnist" in err
    code = main(["evaluate", "--encoder", str(tmp_path / "nope.safetensors")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
