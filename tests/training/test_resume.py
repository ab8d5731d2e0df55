from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sslmem.config import ExperimentConfig
from sslmem.data import ImageDataset, SplitManifest
from sslmem.errors import CheckpointError, TrainingError
from sslmem.models import load_checkpoint
from sslmem.training import ENCODER_FILE, RESUME_FILE, TrainResult, train_encoder
from sslmem.training.methods import MethodSpec, StepContext
from sslmem.training.methods import base as methods_base
from sslmem.training.methods.simclr import SimCLR, SimCLROptions
from sslmem.training.resume import load_resume_state
from tests.training.helpers import tiny_config, tiny_dataset, tiny_split


class KilledError(Exception):
    """Stands in for the process being killed after an epoch."""


class KillAfter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.epoch:
            raise KilledError


class NaNFromOptions(SimCLROptions):
    nan_from_step: int = 0


class NaNFromStep(SimCLR):
    """SimCLR whose loss turns NaN from a given optimizer step on."""

    def forward(self, views: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        loss = super().forward(views, ctx)
        if ctx.global_step >= self.options.nan_from_step:  # type: ignore[attr-defined]
            return loss * float("nan")
        return loss


def _train(
    data: ImageDataset, manifest: SplitManifest, config: ExperimentConfig, out: Path, **kw: Any
) -> TrainResult:
    return train_encoder(
        data,
        manifest,
        role="candidate",
        config=config,
        out_dir=out,
        device="cpu",
        progress=False,
        **kw,
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).encoder.state_dict()


@pytest.mark.parametrize(
    ("method", "arch", "every", "kill_after"),
    [("byol", "small_cnn", 1, 1), ("mae", "vit_tiny", 2, 2)],
)
def test_killed_and_resumed_run_ends_with_identical_weights(
    tmp_path: Path, method: str, arch: str, every: int, kill_after: int
) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    config = tiny_config(
        method,
        arch,
        "training.epochs=4",
        "training.deterministic=true",
        "training.warmup_epochs=1",
        f"training.checkpoint_every={every}",
    )
    full = _train(data, manifest, config, tmp_path / "full")

    with pytest.raises(KilledError):
        _train(data, manifest, config, tmp_path / "killed", callbacks=[KillAfter(kill_after)])
    assert not (tmp_path / "killed" / ENCODER_FILE).exists()
    saved = load_resume_state(tmp_path / "killed" / RESUME_FILE)
    assert saved.epoch == (kill_after + 1) // every * every
    resumed = _train(data, manifest, config, tmp_path / "killed", resume=True)

    assert resumed.resumed_from_epoch == saved.epoch
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    expected = _weights(full.checkpoint)
    got = _weights(resumed.checkpoint)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_resuming_a_finished_run_rewrites_the_same_encoder(tmp_path: Path) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    config = tiny_config("simclr", "small_cnn", "training.epochs=1")
    first = _train(data, manifest, config, tmp_path)
    before = _weights(first.checkpoint)
    again = _train(data, manifest, config, tmp_path, resume=True)
    assert again.resumed_from_epoch == 1 and again.final_loss == first.final_loss
    after = _weights(again.checkpoint)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("truncate", "cannot be read"),
        ("garbage", "cannot be read"),
        ("foreign", r"is a pickle .*imports tests\.training\.test_resume\.KilledError.*refused"),
    ],
)
def test_corrupt_resume_file_is_an_error_never_a_restart(
    tmp_path: Path, damage: str, says: str
) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    config = tiny_config("simclr", "small_cnn", "training.epochs=1")
    _train(data, manifest, config, tmp_path)
    resume = tmp_path / RESUME_FILE
    if damage == "truncate":
        resume.write_bytes(resume.read_bytes()[: resume.stat().st_size // 2])
    elif damage == "garbage":
        resume.write_bytes(b"not a checkpoint at all")
    else:  # a pickle that needs arbitrary code: weights_only refuses it
        torch.save({"format": "sslmem.resume", "payload": KilledError()}, resume)
    (tmp_path / ENCODER_FILE).unlink()
    with pytest.raises(CheckpointError, match=says) as info:
        _train(data, manifest, config, tmp_path, resume=True)
    assert info.value.fix
    # torch's own message advises loading with weights_only=False; never pass that on.
    assert "weights_only" not in str(info.value) and "safe_globals" not in str(info.value)
    assert not (tmp_path / ENCODER_FILE).exists()


def test_resume_with_another_recipe_names_the_difference(tmp_path: Path) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    _train(data, manifest, tiny_config("simclr", "small_cnn", "training.epochs=1"), tmp_path)
    changed = tiny_config("simclr", "small_cnn", "training.epochs=1", "training.lr=0.5")
    with pytest.raises(CheckpointError, match=r"belongs to another run.*training"):
        _train(data, manifest, changed, tmp_path, resume=True)


def test_non_finite_loss_stops_training_and_keeps_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = MethodSpec("test_nan_simclr", NaNFromStep, NaNFromOptions, archs=None, paper="test")
    monkeypatch.setattr(methods_base, "_METHODS", methods_base._METHODS.copy())
    methods_base._METHODS.add(spec.name, spec)
    data = tiny_dataset()
    manifest = tiny_split(data)
    # 4 steps per epoch; the loss turns NaN at optimizer step 5 (epoch 1, step 1).
    config = tiny_config(
        "test_nan_simclr",
        "small_cnn",
        "training.epochs=3",
        "training.method_kwargs={nan_from_step: 5}",
    )
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, step 1") as info:
        _train(data, manifest, config, tmp_path)
    assert "after epoch 1" in info.value.problem and info.value.fix
    assert not (tmp_path / ENCODER_FILE).exists()
    state = load_resume_state(tmp_path / RESUME_FILE)
    assert state.epoch == 1
    assert all(torch.isfinite(t).all() for t in state.model.values() if t.is_floating_point())
