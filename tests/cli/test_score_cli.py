import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from sslmem.cli import main
from sslmem.config import SplitConfig
from sslmem.data import load_dataset, make_split, save_manifest
from sslmem.models import build_encoder, save_checkpoint
from tests.servers import free_port


def _ckpt(path: Path, seed: int, head_dim: int = 16) -> Path:
    torch.manual_seed(seed)
    enc = build_encoder(
        "small_cnn",
        in_channels=1,
        image_size=28,
        arch_kwargs={"widths": [8, 8, 8]},
        head_hidden_dim=16,
        head_output_dim=head_dim,
    )
    return save_checkpoint(enc, path, metadata={"role": "test", "seed": seed})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("score")
    manifest = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=80, seed=1))
    return {
        "root": root,
        "manifest": save_manifest(manifest, root / "split.json"),
        "f": _ckpt(root / "f.safetensors", 0),
        "g": _ckpt(root / "g.safetensors", 1),
    }


def _score(setup: dict[str, Path], out: Path, *extra: str) -> int:
    return main(
        [
            "score",
            "--candidate", str(setup["f"]),
            "--reference", str(setup["g"]),
            "--split", str(setup["manifest"]),
            "--views", "2",
            "--no-progress",
            "--out", str(out),
            *extra,
        ]
    )  # fmt: skip


def test_split_command_writes_a_reproducible_manifest(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["split", "--pool-size", "100", "--seed", "3", "--out", str(a)]) == 0
    assert main(["split", "--pool-size", "100", "--seed", "3", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(a.read_bytes())["pool_size"] == 100


def test_score_writes_per_point_table_and_summary_with_provenance(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _score(setup, out, "--sets", "candidate,independent,extra,shared") == 0
    table = pq.read_table(out / "scores.parquet").to_pydict()
    assert set(table["set"]) == {"candidate", "independent", "extra", "shared"}
    assert len(table["sample_index"]) == 80
    summary = json.loads((out / "summary.json").read_text())
    assert summary["candidates"][0]["sha256"] and summary["references"][0]["arch"] == "small_cnn"
    assert summary["scoring"]["views"] == 2
    assert (
        summary["manifest_sha256"] == json.loads(setup["manifest"].read_text())["manifest_sha256"]
    )
    assert set(summary["welch_tests"]) == {"independent", "extra", "shared"}
    assert "verdict" in capsys.readouterr().out
    assert not list(out.glob(".staging-*"))


def test_score_writes_the_histogram_and_the_candidate_grid(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert _score(setup, out, "--grid-k", "3") == 0
    for name in ("sslmem_histogram.png", "memorised_grid.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list(out.glob(".*.png"))  # no temporary file left behind


def test_no_plots_writes_only_the_table_and_summary(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _score(setup, out, "--no-plots") == 0
    assert sorted(p.name for p in out.iterdir()) == ["scores.parquet", "summary.json"]


def test_bad_grid_size_fails_before_scoring(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _fails(_score(setup, out, "--grid-k", "0"), capsys, "--grid-k")
    assert not out.exists()


def test_same_seed_gives_identical_scores_csv(setup: dict[str, Path], tmp_path: Path) -> None:
    assert _score(setup, tmp_path / "a", "--format", "csv", "--seed", "4") == 0
    assert _score(setup, tmp_path / "b", "--format", "csv", "--seed", "4") == 0
    assert (tmp_path / "a/scores.csv").read_text() == (tmp_path / "b/scores.csv").read_text()


def _fails(code: int, capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err
    assert code != 0
    for needle in needles:
        assert needle in err, err


def test_bad_views_is_a_config_error(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    _fails(_score(setup, out, "--views", "0"), capsys, "scoring.views")
    assert not (out / "summary.json").exists()


def test_mismatched_representation_specs_refused(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _ckpt(tmp_path / "g8.safetensors", 2, head_dim=8)
    code = main(
        ["score", "--candidate", str(setup["f"]), "--reference", str(other), "--split",
         str(setup["manifest"]), "--out", str(tmp_path / "o"), "--no-progress"]
    )  # fmt: skip
    _fails(code, capsys, "representation spec")
    assert not (tmp_path / "o" / "summary.json").exists()


def test_tampered_manifest_refused(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(setup["manifest"].read_text())
    data["indices"]["candidate"][0] = data["indices"]["shared"][0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code = _score({**setup, "manifest": bad}, tmp_path / "o")
    _fails(code, capsys, "error")


def test_manifest_for_other_data_refused(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sslmem.data import ImageDataset

    test_part = load_dataset("bundled", split="test")
    # Other pixels under the same name and split: a valid manifest, but not of this data.
    other = ImageDataset(
        name="bundled", images=test_part.images, labels=test_part.labels,
        classes=test_part.classes, split="train",
    )  # fmt: skip
    forged = make_split(other, fractions=SplitConfig(pool_size=40))
    path = tmp_path / "other.json"
    path.write_bytes(forged.to_json())
    _fails(_score({**setup, "manifest": path}, tmp_path / "o"), capsys, "sha256")


def test_corrupt_checkpoint_refused(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(setup["f"].read_bytes()[:200])
    _fails(_score({**setup, "f": bad}, tmp_path / "o"), capsys, "bad.safetensors")


def test_nan_encoder_refused_without_output(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sslmem.models import load_checkpoint

    enc = load_checkpoint(setup["f"]).encoder
    with torch.no_grad():
        for p in enc.parameters():
            p.fill_(float("nan"))
    nan = save_checkpoint(enc, tmp_path / "nan.safetensors", metadata={})
    out = tmp_path / "o"
    _fails(_score({**setup, "f": nan}, out), capsys, "NaN")
    assert not (out / "summary.json").exists()


def test_unreachable_object_store_is_a_clear_error(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSLMEM_S3_ENDPOINT", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("SSLMEM_S3_SECURE", "false")
    monkeypatch.setenv("SSLMEM_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("SSLMEM_S3_SECRET_KEY", "test-secret")
    monkeypatch.setenv("SSLMEM_STORE_RETRIES", "0")
    code = _score({**setup, "manifest": "s3://bucket/split.json"}, tmp_path / "o")  # type: ignore[dict-item]
    _fails(code, capsys, "127.0.0.1")
