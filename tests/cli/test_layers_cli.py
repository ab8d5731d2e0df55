"""``sslmem score --layers``: per-layer SSLMem, LayerMem and ΔLayerMem."""

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from sslmem.augment import AugmentationSpec
from sslmem.cli import main
from sslmem.config import SplitConfig
from sslmem.data import load_dataset, make_split, save_manifest
from sslmem.models import build_encoder, save_checkpoint

STAGES = ["backbone.blocks.0", "backbone.blocks.1", "backbone.blocks.2", "backbone", "head"]


def _ckpt(
    path: Path, seed: int, role: str, manifest_sha256: str, head_trained: bool = True
) -> Path:
    torch.manual_seed(seed)
    enc = build_encoder(
        "small_cnn", in_channels=1, image_size=28, arch_kwargs={"widths": [8, 8, 8]},
        head_hidden_dim=16, head_output_dim=16,
    )  # fmt: skip
    metadata = {
        "role": role,
        "seed": seed,
        "split_manifest_sha256": manifest_sha256,
        "augmentation": AugmentationSpec().model_dump(mode="json"),
        "head_trained": head_trained,
        # What candidate and reference share (all but seeds), as `sslmem train` records it.
        "recipe": {"method": "simclr", "epochs": 1, "arch": "small_cnn"},
    }
    return save_checkpoint(enc, path, metadata=metadata)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layers")
    manifest = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=40, seed=1))
    sha = manifest.manifest_sha256
    return {
        "manifest": save_manifest(manifest, root / "split.json"),
        "f": _ckpt(root / "f.safetensors", 0, "candidate", sha),
        "g": _ckpt(root / "g.safetensors", 1, "reference", sha),
    }


def _score(setup: dict[str, Path], out: Path, *extra: str) -> int:
    return main(
        [
            "score",
            "--candidate", str(setup["f"]),
            "--reference", str(setup["g"]),
            "--split", str(setup["manifest"]),
            "--views", "2",
            "--sets", "candidate,independent",
            "--no-progress",
            "--out", str(out),
            *extra,
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def layered(setup: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layered") / "out"
    assert _score(setup, out, "--layers", "stages", "--layer", "head") == 0
    return out


def test_layers_writes_table_points_summary_and_figure(layered: Path) -> None:
    table = pq.read_table(layered / "layers.parquet").to_pydict()
    assert table["layer"] == STAGES * 2  # per set, in forward order
    assert table["set"] == ["candidate"] * 5 + ["independent"] * 5
    points = pq.read_table(layered / "layer_scores.parquet").to_pydict()
    assert len(points["sslmem_raw"]) == 5 * (table["n"][0] + table["n"][5])
    assert (layered / "layermem.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The usual outputs are still there.
    assert {"scores.parquet", "summary.json", "layers.json"} <= {p.name for p in layered.iterdir()}


def test_layer_scores_at_the_head_equal_sslmem_score_at_the_head(layered: Path) -> None:
    # `--layer head` scores through score_split/compute_sslmem; the layer pass through
    # compute_layermem with every stage hooked at once. Same views, so the same numbers.
    usual = pq.read_table(layered / "scores.parquet").to_pandas()
    points = pq.read_table(layered / "layer_scores.parquet").to_pandas()
    head = points[points["layer"] == "head"].reset_index(drop=True)
    assert head["sample_index"].tolist() == usual["sample_index"].tolist()
    np.testing.assert_allclose(head["sslmem_raw"], usual["sslmem_raw"], atol=1e-6)
    np.testing.assert_allclose(head["candidate_alignment"], usual["candidate_alignment"], atol=1e-6)
    # The other layers give other scores (the hooks really were on different layers).
    backbone = points[points["layer"] == "backbone"]["sslmem_raw"].to_numpy()
    assert not np.allclose(backbone, usual["sslmem_raw"].to_numpy())


def test_layermem_table_matches_a_plain_recomputation_from_the_points(layered: Path) -> None:
    table = pq.read_table(layered / "layers.parquet").to_pandas()
    points = pq.read_table(layered / "layer_scores.parquet").to_pandas()
    for name in ("candidate", "independent"):
        raw = np.array([[r for r in points[(points.layer == layer) & (points.set == name)]
                         ["sslmem_raw"]] for layer in STAGES])  # fmt: skip
        low, high = raw.min(), raw.max()
        expected = [float(np.mean((row - low) / (high - low))) for row in raw]
        got = table[table.set == name]
        np.testing.assert_allclose(got["layermem"], expected, atol=1e-9)
        np.testing.assert_allclose(got["sslmem_mean"], raw.mean(axis=1), atol=1e-9)
        steps = [expected[0]] + [b - a for a, b in itertools.pairwise(expected)]
        np.testing.assert_allclose(got["delta_layermem"], steps, atol=1e-9)
        assert got["n"].tolist() == [raw.shape[1]] * 5


def test_layers_summary_has_the_provenance_of_summary_json(layered: Path) -> None:
    usual = json.loads((layered / "summary.json").read_text())
    layers = json.loads((layered / "layers.json").read_text())
    for key in ("candidates", "references", "manifest_sha256", "augmentation", "dataset"):
        assert layers[key] == usual[key], key
    for key in ("views", "mode", "distance", "seed", "sets"):
        assert layers["scoring"][key] == usual["scoring"][key], key
    assert layers["sslmem_version"] == usual["sslmem_version"]
    assert layers["torch_version"] == usual["torch_version"]
    assert layers["layers"] == STAGES and layers["selection"] == "stages"


def _fails(code: int, capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize(
    ("layers", "needles"),
    [
        ("backbone.nope", ["'backbone.nope' is not a layer that fires exactly once", "fix:",
                           "backbone.blocks.2.relu"]),
        ("", ["--layers '' has an empty name"]),
        (",,", ["--layers ',,' has an empty name"]),
        ("head,head", ["--layers names head more than once"]),
    ],
)  # fmt: skip
def test_bad_layers_fail_before_scoring_with_a_clear_message(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    layers: str,
    needles: list[str],
) -> None:
    out = tmp_path / "out"
    _fails(_score(setup, out, "--layers", layers), capsys, *needles)
    assert not out.exists()  # refused before any work or output


def test_stages_leave_out_a_head_that_was_never_trained(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    sha = json.loads(setup["manifest"].read_text())["manifest_sha256"]
    f = _ckpt(tmp_path / "f.safetensors", 0, "candidate", sha, head_trained=False)  # e.g. MAE
    g = _ckpt(tmp_path / "g.safetensors", 1, "reference", sha, head_trained=False)
    out = tmp_path / "out"
    assert _score({**setup, "f": f, "g": g}, out, "--layers", "stages", "--no-plots") == 0
    summary = json.loads((out / "layers.json").read_text())
    assert summary["layers"] == STAGES[:-1] and summary["head_trained"] is False


def test_layermem_figure_is_deterministic_and_refuses_nan(tmp_path: Path) -> None:
    from sslmem.errors import DataError
    from sslmem.reporting import layermem_figure

    table = {
        "layer": ["a", "b", "a", "b"],
        "layer_index": [0, 1, 0, 1],
        "set": ["candidate", "candidate", "independent", "independent"],
        "n": [3, 3, 3, 3],
        "sslmem_mean": [0.01, 0.05, 0.0, -0.04],
        "layermem": [0.2, 0.7, 0.6, 0.3],
        "delta_layermem": [0.2, 0.5, 0.6, -0.3],
    }
    first = layermem_figure(table, tmp_path / "a.png").read_bytes()
    assert first == layermem_figure(table, tmp_path / "b.png").read_bytes()
    with pytest.raises(DataError, match="NaN"):
        layermem_figure({**table, "layermem": [0.2, float("nan"), 0.6, 0.3]}, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
