from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sslmem.augment import AugmentationSpec
from sslmem.errors import CheckpointError
from sslmem.models import (
    Encoder,
    LoadedCheckpoint,
    build_encoder,
    file_sha256,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from sslmem.models.checkpoint import FORMAT_VERSION, HEADER_KEY

METADATA: dict[str, Any] = {
    "role": "candidate",
    "seed": 3,
    "split_manifest_sha256": "ab" * 32,
    "recipe": {"method": "simclr", "epochs": 2, "lr": 1e-3, "temperature": 0.2},
    "layers": ["backbone", "head"],
    "note": None,
}


def _tiny_encoder(arch: str = "small_cnn") -> Encoder:
    torch.manual_seed(0)
    kwargs: dict[str, Any] = {"widths": [4, 8]} if arch == "small_cnn" else {"num_layers": 1}
    encoder = build_encoder(
        arch, in_channels=1, image_size=16, arch_kwargs=kwargs, head_hidden_dim=8, head_output_dim=4
    )
    with torch.no_grad():  # non-trivial weights and batch-norm statistics
        for tensor in encoder.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.1)
    return encoder


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Encoder, Path]:
    encoder = _tiny_encoder()
    path = save_checkpoint(encoder, tmp_path / "enc.safetensors", metadata=METADATA)
    return encoder, path


def _raw_header(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()[HEADER_KEY])  # type: ignore[no-any-return]


def _write_with_header(
    path: Path, tensors: dict[str, torch.Tensor], header: dict[str, Any]
) -> None:
    save_file(tensors, str(path), metadata={HEADER_KEY: json.dumps(header)})


@pytest.mark.parametrize("arch", ["small_cnn", "vit_tiny"])
def test_round_trip_identical_outputs(tmp_path: Path, arch: str) -> None:
    encoder = _tiny_encoder(arch)
    path = save_checkpoint(encoder, tmp_path / "sub" / "enc.safetensors", metadata=METADATA)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, LoadedCheckpoint)
    assert not loaded.encoder.training
    assert loaded.encoder.arch == arch
    assert loaded.encoder.arch_config == encoder.arch_config
    encoder.eval()
    images = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.encoder(images), encoder(images))
        assert torch.equal(loaded.encoder.features(images), encoder.features(images))
    for key, value in encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value)
    assert loaded.encoder.stage_names() == encoder.stage_names()


def test_metadata_and_header_preserved(saved: tuple[Encoder, Path]) -> None:
    encoder, path = saved
    loaded = load_checkpoint(path)
    assert loaded.metadata == METADATA
    assert loaded.sha256 == file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.path == path
    header = read_checkpoint_metadata(path)
    assert header == loaded.header
    assert header.format_version == FORMAT_VERSION
    assert header.arch == "small_cnn"
    assert header.arch_config == encoder.arch_config
    assert header.representation == {
        "feature_dim": 8,
        "head_dim": 4,
        "in_channels": 1,
        "image_size": 16,
    }
    assert _raw_header(path)["format"] == "sslmem.encoder"


def test_pydantic_and_path_metadata_become_json(tmp_path: Path) -> None:
    spec = AugmentationSpec(output_size=16)
    path = save_checkpoint(
        _tiny_encoder(),
        tmp_path / "e.safetensors",
        metadata={"augmentation": spec, "data": tmp_path, "sizes": (1, 2)},
    )
    meta = read_checkpoint_metadata(path).metadata
    assert AugmentationSpec.model_validate(meta["augmentation"]) == spec
    assert meta["data"] == str(tmp_path)
    assert meta["sizes"] == [1, 2]


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": float("nan")}, {"x": {1, 2}}])
def test_non_json_metadata_rejected(tmp_path: Path, bad: dict[str, Any]) -> None:
    path = tmp_path / "e.safetensors"
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(_tiny_encoder(), path, metadata=bad)
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_overwrite_leaves_no_temp_files(saved: tuple[Encoder, Path]) -> None:
    encoder, path = saved
    save_checkpoint(encoder, path, metadata={"role": "reference"})
    assert os.listdir(path.parent) == [path.name]
    assert read_checkpoint_metadata(path).metadata == {"role": "reference"}


def test_encoder_without_arch_config_cannot_be_saved(tmp_path: Path) -> None:
    encoder = Encoder(
        backbone=torch.nn.Flatten(1),
        head=torch.nn.Identity(),
        arch="manual",
        arch_config={},
        feature_dim=1,
        head_dim=1,
    )
    with pytest.raises(CheckpointError, match="arch_config"):
        save_checkpoint(encoder, tmp_path / "e.safetensors", metadata={})


def test_shared_tensors_are_saved(tmp_path: Path) -> None:
    encoder = _tiny_encoder()
    encoder.register_buffer("alias", encoder.head.fc2.weight)  # shares storage with a parameter
    path = save_checkpoint(encoder, tmp_path / "e.safetensors", metadata={})
    with safe_open(str(path), framework="pt") as handle:
        assert torch.equal(handle.get_tensor("alias"), encoder.head.fc2.weight.detach())


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    for fn in (load_checkpoint, read_checkpoint_metadata):
        with pytest.raises(CheckpointError, match="does not exist"):
            fn(path)


@pytest.mark.parametrize("keep", [0, 4, 8, 20, -10, -1])
def test_truncated_file(saved: tuple[Encoder, Path], keep: int) -> None:
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    for fn in (load_checkpoint, read_checkpoint_metadata):
        with pytest.raises(CheckpointError) as info:
            fn(path)
        assert str(path) in str(info.value)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.safetensors"
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    for fn in (load_checkpoint, read_checkpoint_metadata):
        with pytest.raises(CheckpointError, match="not a valid safetensors file"):
            fn(path)


def test_small_header_length_with_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes((6).to_bytes(8, "little") + b"\xff\xfe{]xx")
    with pytest.raises(CheckpointError, match="not JSON"):
        load_checkpoint(path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_pickle_renamed_is_rejected_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"state": _Exploit(marker)}))
    for fn in (load_checkpoint, read_checkpoint_metadata):
        with pytest.raises(CheckpointError):
            fn(path)
    torch_path = tmp_path / "torch.safetensors"
    torch.save(_tiny_encoder().state_dict(), torch_path)
    with pytest.raises(CheckpointError):
        load_checkpoint(torch_path)
    assert not marker.exists()


def test_foreign_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError, match="not an sslmem checkpoint"):
        load_checkpoint(path)
    save_file({"weight": torch.zeros(2, 2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not an sslmem checkpoint"):
        read_checkpoint_metadata(path)
    save_file({"weight": torch.zeros(2, 2)}, str(path), metadata={HEADER_KEY: '{"format": "x"}'})
    with pytest.raises(CheckpointError, match="not an sslmem checkpoint"):
        load_checkpoint(path)


def test_unknown_arch_in_header(saved: tuple[Encoder, Path]) -> None:
    encoder, path = saved
    header = _raw_header(path)
    header["arch"] = header["arch_config"]["arch"] = "mystery_net"
    _write_with_header(path, dict(encoder.state_dict()), header)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "mystery_net" in str(info.value) and "small_cnn" in str(info.value)
    assert read_checkpoint_metadata(path).arch == "mystery_net"  # the header alone still reads


def test_newer_format_version(saved: tuple[Encoder, Path]) -> None:
    encoder, path = saved
    header = _raw_header(path)
    header["format_version"] = FORMAT_VERSION + 1
    _write_with_header(path, dict(encoder.state_dict()), header)
    with pytest.raises(CheckpointError, match="upgrade"):
        read_checkpoint_metadata(path)


def test_state_dict_mismatch(saved: tuple[Encoder, Path]) -> None:
    encoder, path = saved
    header = _raw_header(path)
    tensors = dict(encoder.state_dict())
    tensors.pop("head.fc2.bias")
    tensors["extra.weight"] = torch.zeros(1)
    _write_with_header(path, tensors, header)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "head.fc2.bias" in str(info.value) and "extra.weight" in str(info.value)


def test_shape_mismatch(saved: tuple[Encoder, Path]) -> None:
    encoder, path = saved
    header = _raw_header(path)
    header["arch_config"]["arch_kwargs"]["widths"] = [4, 6]
    _write_with_header(path, dict(encoder.state_dict()), header)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_map_location(saved: tuple[Encoder, Path]) -> None:
    _, path = saved
    loaded = load_checkpoint(path, map_location=torch.device("cpu"))
    assert all(p.device.type == "cpu" for p in loaded.encoder.parameters())


def test_provenance_reads_what_training_records(saved: tuple[Encoder, Path]) -> None:
    provenance = load_checkpoint(saved[1]).provenance
    assert provenance.role == "candidate" and provenance.seed == 3
    assert provenance.split_manifest_sha256 == "ab" * 32
    assert provenance.recipe == METADATA["recipe"]
    assert provenance.missing == ["augmentation"]  # METADATA records no augmentation


def test_provenance_values_of_the_wrong_type_count_as_not_recorded() -> None:
    from sslmem.models.checkpoint import checkpoint_provenance

    provenance = checkpoint_provenance(
        {"role": 1, "split_manifest_sha256": ["x"], "recipe": "r", "seed": True,
         "head_trained": "no", "augmentation": {}}
    )  # fmt: skip
    assert provenance.missing == ["role", "split_manifest_sha256", "recipe"]
    assert provenance.seed is None and provenance.head_trained is None


def test_training_recipe_leaves_out_only_the_seed_and_settings_that_change_nothing() -> None:
    from sslmem.models.checkpoint import training_recipe

    training = {"method": "simclr", "epochs": 5, "seed": 1, "checkpoint_every": 2,
                "compile": True, "deterministic": False, "lr": 0.1}  # fmt: skip
    assert training_recipe(training, {"arch": "small_cnn"}) == {
        "training": {"method": "simclr", "epochs": 5, "lr": 0.1},
        "model": {"arch": "small_cnn"},
    }
