from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslmem import __version__
from sslmem.errors import CheckpointError, ConfigError, ManifestMismatchError, TrainingError
from sslmem.models import load_checkpoint
from sslmem.training import ENCODER_FILE, RESUME_FILE, plan_steps, train_encoder
from tests.training.helpers import tiny_config, tiny_dataset, tiny_split


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.calls.append((epoch, metrics))


def test_candidate_trains_on_shared_and_candidates_and_records_provenance(tmp_path: Path) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    config = tiny_config("simclr")
    recorder = Recorder()
    result = train_encoder(
        data,
        manifest,
        role="candidate",
        config=config,
        out_dir=tmp_path,
        device="cpu",
        callbacks=[recorder],
        progress=False,
    )
    expected = len(manifest.training_indices("candidate"))
    assert result.num_train == expected == 32
    assert result.steps == 2 * (expected // 8)
    assert result.checkpoint == tmp_path / ENCODER_FILE and result.checkpoint.is_file()
    assert (tmp_path / RESUME_FILE).is_file()
    assert [epoch for epoch, _ in recorder.calls] == [0, 1]
    for _, metrics in recorder.calls:
        assert set(metrics) == {"loss", "lr", "images_per_s"}
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    loaded = load_checkpoint(result.checkpoint)
    meta = loaded.metadata
    assert meta["role"] == "candidate" and meta["method"] == "simclr"
    assert meta["training_sets"] == ["shared", "candidate"]
    assert meta["split_manifest_sha256"] == manifest.manifest_sha256
    assert meta["dataset"]["content_sha256"] == data.content_hash
    assert meta["training"]["epochs"] == 2 and meta["model"]["arch"] == "small_cnn"
    assert meta["augmentation"]["output_size"] == 16
    assert meta["sslmem_version"] == __version__ and meta["seed"] == 0
    assert meta["final_loss"] == pytest.approx(result.final_loss)
    assert meta["head_trained"] is True
    state = loaded.encoder.state_dict()
    for name, tensor in result.encoder.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_reference_uses_same_budget_and_seed_override(tmp_path: Path) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    result = train_encoder(
        data,
        manifest,
        role="reference",
        config=tiny_config("simclr", "small_cnn", "training.epochs=1"),
        out_dir=tmp_path,
        device="cpu",
        seed_override=7,
        progress=False,
    )
    assert result.num_train == len(manifest.training_indices("reference")) == 32
    assert result.metadata["training_sets"] == ["shared", "independent"]
    assert result.seed == 7 and result.metadata["seed"] == 7


def test_manifest_of_other_data_is_refused(tmp_path: Path) -> None:
    manifest = tiny_split(tiny_dataset(seed=0))
    with pytest.raises(ManifestMismatchError):
        train_encoder(
            tiny_dataset(seed=1),
            manifest,
            role="candidate",
            config=tiny_config(),
            out_dir=tmp_path,
            device="cpu",
        )


def test_bad_role_and_incompatible_method_fail_before_training(tmp_path: Path) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    with pytest.raises(ConfigError, match="role"):
        train_encoder(
            data,
            manifest,
            role="extra",
            config=tiny_config(),
            out_dir=tmp_path,  # type: ignore[arg-type]
        )
    with pytest.raises(ConfigError, match="vit_tiny"):
        train_encoder(data, manifest, role="candidate", config=tiny_config("mae"), out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_existing_run_is_not_overwritten_and_resume_needs_a_file(tmp_path: Path) -> None:
    data = tiny_dataset()
    manifest = tiny_split(data)
    with pytest.raises(CheckpointError, match="does not exist"):
        train_encoder(
            data,
            manifest,
            role="candidate",
            config=tiny_config(),
            out_dir=tmp_path,
            resume=True,
            device="cpu",
        )
    (tmp_path / ENCODER_FILE).write_bytes(b"x")
    with pytest.raises(TrainingError, match="already holds a training run"):
        train_encoder(
            data, manifest, role="candidate", config=tiny_config(), out_dir=tmp_path, device="cpu"
        )


def test_batch_layout_errors_name_the_fix() -> None:
    config = tiny_config().training
    plan = plan_steps(33, config, world_size=1)
    assert (plan.steps_per_epoch, plan.micro_batch, plan.accum_steps) == (4, 8, 1)
    with pytest.raises(ConfigError, match="divisible"):
        plan_steps(64, config.model_copy(update={"batch_size": 10}), world_size=4)
    with pytest.raises(ConfigError, match="fewer than 2"):
        plan_steps(64, config.model_copy(update={"grad_accum_steps": 4}), world_size=2)
    with pytest.raises(ConfigError, match=r"fewer than training\.batch_size"):
        plan_steps(5, config, world_size=1)


def test_gradient_accumulation_runs(tmp_path: Path) -> None:
    data = tiny_dataset()
    result = train_encoder(
        data,
        tiny_split(data),
        role="candidate",
        config=tiny_config("byol", "small_cnn", "training.epochs=1", "training.grad_accum_steps=2"),
        out_dir=tmp_path,
        device="cpu",
        progress=False,
    )
    assert result.steps == 4 and torch.isfinite(torch.tensor(result.final_loss))


def test_a_memory_mapped_dataset_trains_exactly_like_the_resident_one(tmp_path: Path) -> None:
    """Batches gathered from a mapping (rows) equal batches of the compacted training set."""
    from sslmem.data import ImageDataset
    from sslmem.data.decoded import load_decoded

    resident = tiny_dataset()
    decoded = load_decoded(
        tmp_path / "decoded",
        "tiny",
        lambda: (
            (image[0].numpy(), int(label))
            for image, label in zip(resident.images, resident.labels, strict=True)
        ),
    )
    mapped = ImageDataset(
        name=resident.name,
        images=decoded.images,
        labels=decoded.labels,
        classes=resident.classes,
        mapped_from=decoded.path,
    )
    manifest = tiny_split(resident)
    config = tiny_config("simclr")
    results = [
        train_encoder(
            data,
            manifest,
            role="candidate",
            config=config,
            out_dir=tmp_path / name,
            device="cpu",
            progress=False,
        )
        for name, data in (("resident", resident), ("mapped", mapped))
    ]
    assert results[0].num_train == results[1].num_train == 32
    mapped_state = results[1].encoder.state_dict()
    for name, tensor in results[0].encoder.state_dict().items():
        assert torch.equal(tensor, mapped_state[name]), name
    assert results[0].final_loss == results[1].final_loss
