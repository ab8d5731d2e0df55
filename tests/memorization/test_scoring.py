"""score_split refuses what would be mislabelled, and reports replace their directory whole."""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sslmem.augment import AugmentationSpec
from sslmem.config import ModelConfig, ScoringConfig, SplitConfig, TrainingConfig
from sslmem.data import ImageDataset, SplitManifest, load_dataset, make_split
from sslmem.errors import ConfigError, DataError, ScoringError
from sslmem.memorization.scoring import (
    ScoreReport,
    check_layers,
    score_split,
    select_points,
    write_score_outputs,
)
from sslmem.models import build_encoder, save_checkpoint
from sslmem.models.checkpoint import (
    CheckpointHeader,
    LoadedCheckpoint,
    checkpoint_provenance,
    load_checkpoint,
    training_recipe,
)

SCORING = ScoringConfig(views=2, sets=("candidate", "independent", "extra"))
SPEC = AugmentationSpec()
MODEL = ModelConfig(arch="small_cnn", arch_kwargs={"widths": [8, 8, 8]}, head_hidden_dim=16,
                    head_output_dim=8)  # fmt: skip


@pytest.fixture(scope="module")
def data() -> tuple[ImageDataset, SplitManifest, SplitManifest]:
    dataset = load_dataset("bundled")
    split = make_split(dataset, fractions=SplitConfig(pool_size=60, seed=1))
    other = make_split(dataset, fractions=SplitConfig(pool_size=60, seed=2))
    return dataset, split, other


def _metadata(role: str, manifest: SplitManifest, **changes: Any) -> dict[str, Any]:
    """What `sslmem train` records (src/sslmem/training/train.py), with ``changes`` applied."""
    training = TrainingConfig(**changes.pop("training", {})).model_dump(mode="json")
    meta = {
        "role": role,
        "split_manifest_sha256": manifest.manifest_sha256,
        "training": training,
        "model": MODEL.model_dump(mode="json"),
        "recipe": training_recipe(training, MODEL.model_dump(mode="json")),
        "augmentation": SPEC.model_dump(mode="json"),
        "head_trained": True,
        "method": "simclr",
        "seed": training["seed"],
    }
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


def _ckpt(path: Path, seed: int, metadata: dict[str, Any]) -> LoadedCheckpoint:
    torch.manual_seed(seed)
    enc = build_encoder(MODEL, in_channels=1, image_size=28)
    return load_checkpoint(save_checkpoint(enc, path, metadata=metadata))


def _pair(tmp_path: Path, manifest: SplitManifest, **ref_changes: Any) -> tuple[Any, Any]:
    f = _ckpt(tmp_path / "f.safetensors", 0, _metadata("candidate", manifest))
    g = _ckpt(tmp_path / "g.safetensors", 1, _metadata("reference", manifest, **ref_changes))
    return f, g


def _score(data: Any, f: Any, g: Any, **kwargs: Any) -> ScoreReport:
    dataset, split, _ = data
    return score_split(
        [f], [g], dataset, split, scoring=kwargs.pop("scoring", SCORING), augment_spec=SPEC,
        **kwargs,
    )  # fmt: skip


def test_checkpoints_with_matching_provenance_are_scored(data: Any, tmp_path: Path) -> None:
    f, g = _pair(tmp_path, data[1], training={"seed": 5})  # seeds may differ
    summary = _score(data, f, g).summary
    assert [c.role for c in summary.candidates] == ["candidate"]
    assert summary.references[0].role == "reference" and summary.references[0].seed == 5
    assert not summary.allow_cross_split and summary.precision == "fp32"


def test_swapped_candidate_and_reference_are_refused(data: Any, tmp_path: Path) -> None:
    f, g = _pair(tmp_path, data[1])
    with pytest.raises(ScoringError, match="was trained as a reference") as err:
        _score(data, g, f)
    assert "g.safetensors" in err.value.problem
    assert "swapped" in (err.value.fix or "")


def test_encoders_of_another_split_need_the_cross_split_flag(data: Any, tmp_path: Path) -> None:
    _, split, other = data
    f, g = _pair(tmp_path, other)
    with pytest.raises(ScoringError) as err:
        _score(data, f, g)
    # Both hashes are named: the one trained on and the one being scored.
    assert other.manifest_sha256 in err.value.problem
    assert split.manifest_sha256 in err.value.problem
    assert "--allow-cross-split" in (err.value.fix or "")
    summary = _score(data, f, g, allow_cross_split=True).summary
    assert summary.allow_cross_split
    assert json.loads(summary.model_dump_json())["allow_cross_split"] is True
    table = summary.format_table()
    assert "CROSS-SPLIT" in table and other.manifest_sha256 in table


def test_a_different_recipe_is_refused_naming_both_values(data: Any, tmp_path: Path) -> None:
    f, g = _pair(tmp_path, data[1], training={"epochs": 7})
    with pytest.raises(ScoringError, match="different recipes") as err:
        _score(data, f, g)
    assert "training.epochs: 7 vs 20" in err.value.problem


def test_a_different_augmentation_is_refused(data: Any, tmp_path: Path) -> None:
    other = AugmentationSpec(crop_scale=(0.5, 1.0)).model_dump(mode="json")
    f, g = _pair(tmp_path, data[1], augmentation=other)
    with pytest.raises(ScoringError, match="different augmentations") as err:
        _score(data, f, g)
    assert "crop_scale" in err.value.problem


def test_missing_provenance_is_refused_unless_allowed_and_then_recorded(
    data: Any, tmp_path: Path
) -> None:
    f = _ckpt(tmp_path / "f.safetensors", 0, _metadata("candidate", data[1]))
    g = _ckpt(tmp_path / "ext.safetensors", 1, {"seed": 1})  # e.g. trained elsewhere
    with pytest.raises(ScoringError) as err:
        _score(data, f, g)
    assert "ext.safetensors does not record its role, split_manifest_sha256, recipe, " in (
        err.value.problem
    )
    assert "--allow-missing-provenance" in (err.value.fix or "")
    summary = _score(data, f, g, allow_missing_provenance=True).summary
    assert summary.allow_missing_provenance
    assert summary.references[0].missing_provenance == [
        "role", "split_manifest_sha256", "recipe", "augmentation",
    ]  # fmt: skip
    assert summary.candidates[0].missing_provenance == []
    assert "UNCHECKED PROVENANCE" in summary.format_table()


def test_allowing_missing_provenance_still_checks_what_is_recorded(
    data: Any, tmp_path: Path
) -> None:
    f = _ckpt(tmp_path / "f.safetensors", 0, _metadata("candidate", data[1]))
    g = _ckpt(tmp_path / "g.safetensors", 1, {"role": "candidate"})
    with pytest.raises(ScoringError, match="trained as a candidate"):
        _score(data, f, g, allow_missing_provenance=True)


def test_checkpoints_from_before_the_recorded_recipe_get_it_rebuilt(data: Any) -> None:
    meta = _metadata("reference", data[1])
    recipe = meta.pop("recipe")
    provenance = checkpoint_provenance(meta)
    assert provenance.recipe == recipe and provenance.missing == []
    # The seed is not part of the recipe; the epochs are.
    assert "seed" not in recipe["training"] and recipe["training"]["epochs"] == 20


def test_a_set_is_never_selected_twice(data: Any) -> None:
    with pytest.raises(ScoringError, match="more than once: candidate"):
        select_points(data[1], ["candidate", "extra", "candidate"], shared_sample=5, seed=0)
    with pytest.raises(ValueError, match="repeated: extra"):
        ScoringConfig(sets=("extra", "candidate", "extra"))


def _in_memory(encoder: nn.Module, name: str, **metadata: Any) -> LoadedCheckpoint:
    header = CheckpointHeader(1, "small_cnn", {}, {}, metadata)
    return LoadedCheckpoint(encoder=encoder, header=header, sha256="", path=Path(name))  # type: ignore[arg-type]


def test_layers_must_fire_exactly_once_per_forward() -> None:
    enc = build_encoder(MODEL, in_channels=1, image_size=28)
    enc.backbone.add_module("unused", nn.Identity())  # registered, never run
    ckpt = _in_memory(enc, "f.safetensors")
    check_layers([ckpt], ["backbone", "head", "backbone.blocks.1"])
    for bad in ("backbone.unused", "backbone.nope", ""):
        with pytest.raises(ScoringError, match="is not a representation") as err:
            check_layers([ckpt], [bad])
        assert "backbone.blocks.1" in (err.value.fix or "")  # the valid names are listed
        assert "backbone.unused" not in (err.value.fix or "")


def test_a_module_run_twice_per_forward_is_refused() -> None:
    # A torchvision BasicBlock calls its one `relu` twice: its hook would fire twice.
    enc = build_encoder("resnet18_cifar", in_channels=1, image_size=16)
    with pytest.raises(ScoringError, match="more than once"):
        check_layers([_in_memory(enc, "r.safetensors")], ["backbone.layer1.0.relu"])


def test_an_untrained_head_is_never_scored() -> None:
    enc = build_encoder(MODEL, in_channels=1, image_size=28)
    mae = _in_memory(enc, "mae.safetensors", head_trained=False, method="mae")
    check_layers([mae], ["backbone"])
    for layer in ("head", "head.fc2"):
        with pytest.raises(ScoringError, match="was not trained") as err:
            check_layers([mae], [layer])
        assert "--layer backbone" in (err.value.fix or "")


def test_thread_count_changes_at_most_the_last_digits_never_the_conclusion(
    data: Any, tmp_path: Path
) -> None:
    """What holds across machines: the same verdict and overlapping 95% CIs per set.

    Bit-identical scores are only promised for the same machine and thread count; a different
    number of threads reorders float32 sums, like another CPU does.
    """
    f, g = _pair(tmp_path, data[1])
    scoring = ScoringConfig(views=3, sets=("candidate", "independent", "extra", "shared"))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _score(data, f, g, scoring=scoring).summary
        torch.set_num_threads(2)
        two = _score(data, f, g, scoring=scoring).summary
    finally:
        torch.set_num_threads(threads)
    assert one.verdict.outcome == two.verdict.outcome
    for name, a in one.sets.items():
        b = two.sets[name]
        assert a.ci95_low <= b.ci95_high and b.ci95_low <= a.ci95_high, name


# ------------------------------------------------------------------------------------------
# Report directories


@pytest.fixture(scope="module")
def report(data: Any, tmp_path_factory: pytest.TempPathFactory) -> ScoreReport:
    f, g = _pair(tmp_path_factory.mktemp("ckpt"), data[1])
    return _score(data, f, g)


def test_a_report_replaces_an_older_run_as_a_whole(
    report: ScoreReport, data: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_score_outputs(report, out, fmt="csv", images=data[0].images, plots=True, grid_k=2)
    assert sorted(p.name for p in out.iterdir()) == [
        "memorised_grid.png", "scores.csv", "sslmem_histogram.png", "summary.json",
    ]  # fmt: skip
    written = write_score_outputs(report, out, fmt="parquet")
    assert sorted(p.name for p in out.iterdir()) == ["scores.parquet", "summary.json"]
    assert written == [out / "scores.parquet", out / "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


def test_a_run_that_fails_while_writing_leaves_the_older_run_untouched(
    report: ScoreReport, data: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_score_outputs(report, out, fmt="csv")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    wrong = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)  # too few images for the grid
    with pytest.raises((DataError, IndexError)):
        write_score_outputs(report, out, images=wrong, plots=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_directory_of_other_files_is_never_replaced(report: ScoreReport, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not part of a report") as err:
        write_score_outputs(report, tmp_path)
    assert "notes.txt" in err.value.problem
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_regular_file_as_output_is_refused(report: ScoreReport, tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        write_score_outputs(report, file)
    with pytest.raises(ConfigError, match="not a directory"):
        write_score_outputs(report, file / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories")
def test_a_read_only_parent_is_refused(report: ScoreReport, tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            write_score_outputs(report, tmp_path / "out")
    finally:
        tmp_path.chmod(0o755)


def test_summary_json_holds_the_three_state_verdict(report: ScoreReport, tmp_path: Path) -> None:
    write_score_outputs(report, tmp_path / "o")
    verdict = json.loads((tmp_path / "o" / "summary.json").read_text())["verdict"]
    assert verdict["outcome"] in ("passed", "failed", "inconclusive")
    assert np.isfinite(verdict["alpha"])
