"""``sslmem unitmem``: UnitMem per unit of an encoder's layers."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from sslmem.augment import AugmentationSpec
from sslmem.cli import main
from sslmem.config import SplitConfig
from sslmem.data import load_dataset, load_manifest, make_split, save_manifest
from sslmem.models import build_encoder, file_sha256, save_checkpoint

UNIT_LAYERS = ["backbone.blocks.0", "backbone.blocks.1", "backbone.blocks.2"]


def _ckpt(path: Path, manifest_sha256: str) -> Path:
    torch.manual_seed(0)
    enc = build_encoder(
        "small_cnn", in_channels=1, image_size=28, arch_kwargs={"widths": [4, 6, 8]},
        head_hidden_dim=16, head_output_dim=16,
    )  # fmt: skip
    metadata = {
        "role": "candidate",
        "split_manifest_sha256": manifest_sha256,
        "augmentation": AugmentationSpec().model_dump(mode="json"),
    }
    return save_checkpoint(enc, path, metadata=metadata)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unitmem")
    manifest = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=40, seed=1))
    return {
        "manifest": save_manifest(manifest, root / "split.json"),
        "f": _ckpt(root / "f.safetensors", manifest.manifest_sha256),
    }


def _unitmem(setup: dict[str, Path], out: Path, *extra: str) -> int:
    return main(
        ["unitmem", "--encoder", str(setup["f"]), "--split", str(setup["manifest"]),
         "--views", "2", "--no-progress", "--out", str(out), *extra]
    )  # fmt: skip


def test_unitmem_writes_units_summary_and_figure(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _unitmem(setup, out) == 0
    table = pq.read_table(out / "unitmem.parquet").to_pydict()
    # Default: the backbone's stages; one row per unit (channels 4, 6, 8).
    widths = {"backbone.blocks.0": 4, "backbone.blocks.1": 6, "backbone.blocks.2": 8}
    expected = [(layer, u) for layer in UNIT_LAYERS for u in range(widths[layer])]
    assert list(zip(table["layer"], table["unit"], strict=True)) == expected
    assert all(0.0 <= s <= 1.0 for s in table["unitmem"])
    candidates = set(load_manifest(setup["manifest"]).set_indices("candidate").tolist())
    assert set(table["argmax_sample_index"]) <= candidates
    assert set(table["argmax_set"]) == {"candidate"}
    # The paper's formula on the table's own parts.
    for score, top, rest in zip(table["unitmem"], table["mu_max"], table["mu_rest"], strict=True):
        assert score == pytest.approx((top - rest) / (top + rest) if top + rest else 0.0, 1e-5)
    summary = json.loads((out / "unitmem.json").read_text())
    assert summary["encoder"]["sha256"] == file_sha256(setup["f"])
    assert summary["manifest_sha256"] == load_manifest(setup["manifest"]).manifest_sha256
    assert summary["role"] == "candidate" and summary["reduction"] == "mean"
    assert summary["views"] == 2 and summary["sets"] == ["candidate"]
    assert [s["layer"] for s in summary["layers"]] == UNIT_LAYERS
    assert summary["points"] == len(candidates)
    assert (out / "unitmem.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unitmem_one_layer_csv_pooled_sets(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = _unitmem(
        setup, out, "--layer", "backbone.blocks.1.relu", "--sets", "candidate,extra",
        "--format", "csv", "--reduction", "median", "--no-plots",
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["unitmem.csv", "unitmem.json"]
    summary = json.loads((out / "unitmem.json").read_text())
    assert summary["sets"] == ["candidate", "extra"] and summary["reduction"] == "median"
    assert [s["layer"] for s in summary["layers"]] == ["backbone.blocks.1.relu"]


def _fails(code: int, capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--layer", "backbone.nope"],
         ["'backbone.nope' is not a layer that fires exactly once", "backbone.blocks.0.conv"]),
        (["--layers", ""], ["--layers '' has an empty name"]),
        (["--layer", ""], ["--layer '' has an empty name"]),
        (["--layer", "backbone,head"], ["--layer takes one name"]),
        (["--sets", "candidate,candidate"], ["--sets names candidate more than once"]),
        (["--sets", ",,"], ["--sets ',,' has an empty name"]),
        # The head's output is a signed linear projection, not an activation.
        (["--layer", "head"],
         ["'head' (min", "negative mean activations", "backbone.blocks.0.relu"]),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error_and_writes_nothing(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needles: list[str],
) -> None:
    out = tmp_path / "out"
    _fails(_unitmem(setup, out, *extra), capsys, *needles)
    assert not out.exists()


def test_encoder_of_another_split_is_refused(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _ckpt(tmp_path / "other.safetensors", "0" * 64)
    out = tmp_path / "out"
    code = _unitmem({**setup, "f": other}, out)
    sha = load_manifest(setup["manifest"]).manifest_sha256
    _fails(code, capsys, f"trained on split {'0' * 64}", sha, "--split")
    assert not out.exists()


def test_unitmem_figure_is_deterministic_and_refuses_an_empty_table(tmp_path: Path) -> None:
    from sslmem.errors import DataError
    from sslmem.reporting import unitmem_figure

    table = {"layer": ["a"] * 5 + ["b"] * 3, "unitmem": [0.1, 0.2, 0.3, 0.4, 0.5, 0.0, 0.9, 1.0]}
    first = unitmem_figure(table, tmp_path / "a.png").read_bytes()
    assert first == unitmem_figure(table, tmp_path / "b.png").read_bytes()
    with pytest.raises(DataError, match="no units"):
        unitmem_figure({"layer": [], "unitmem": []}, tmp_path / "c.png")
