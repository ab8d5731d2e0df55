import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from sslmem.cli import main
from sslmem.config import SplitConfig
from sslmem.data import load_dataset, make_split, save_manifest
from sslmem.models import build_encoder, save_checkpoint
from tests.servers import free_port

TINY_MODEL = [
    "--set", "model.arch_kwargs={widths: [8, 8, 8]}",
    "--set", "model.head_hidden_dim=16",
    "--set", "model.head_output_dim=16",
]  # fmt: skip


def _ckpt(
    path: Path, seed: int, head_dim: int = 16, metadata: dict[str, object] | None = None
) -> Path:
    torch.manual_seed(seed)
    enc = build_encoder(
        "small_cnn",
        in_channels=1,
        image_size=28,
        arch_kwargs={"widths": [8, 8, 8]},
        head_hidden_dim=16,
        head_output_dim=head_dim,
    )
    return save_checkpoint(enc, path, metadata=metadata or {"seed": seed})


def _train(manifest: Path, role: str, out: Path) -> Path:
    """A real `sslmem train` run (1 epoch): its checkpoint records role, split and recipe."""
    code = main(
        ["train", "--split", str(manifest), "--role", role, "--epochs", "1",
         "--batch-size", "16", *TINY_MODEL, "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    return out / "encoder.safetensors"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("score")
    manifest = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=80, seed=1))
    path = save_manifest(manifest, root / "split.json")
    return {
        "root": root,
        "manifest": path,
        "f": _train(path, "candidate", root / "f"),
        "g": _train(path, "reference", root / "g"),
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
    # What `sslmem train` recorded is what was checked and is reported.
    manifest_sha = json.loads(setup["manifest"].read_text())["manifest_sha256"]
    assert summary["candidates"][0]["role"] == "candidate"
    assert summary["references"][0]["role"] == "reference"
    assert summary["references"][0]["split_manifest_sha256"] == manifest_sha
    assert summary["precision"] == "fp32" and summary["allow_cross_split"] is False
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
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_view_batch_bounds_memory_without_changing_the_scores(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    common = ("--views", "5", "--sets", "candidate,extra", "--no-plots", "--format", "csv")
    assert _score(setup, tmp_path / "a", *common, "--view-batch", "2") == 0
    assert _score(setup, tmp_path / "b", *common) == 0
    a = json.loads((tmp_path / "a/summary.json").read_text())
    b = json.loads((tmp_path / "b/summary.json").read_text())
    assert a["scoring"]["view_batch"] == 2 and b["scoring"]["view_batch"] == 32
    for name in ("candidate", "extra"):
        assert a["sets"][name]["mean"] == pytest.approx(b["sets"][name]["mean"], abs=1e-6)


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

    loaded = load_checkpoint(setup["f"])
    enc = loaded.encoder
    with torch.no_grad():
        for p in enc.parameters():
            p.fill_(float("nan"))
    nan = save_checkpoint(enc, tmp_path / "nan.safetensors", metadata=loaded.metadata)
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


def test_swapped_candidate_and_reference_fail_with_the_reason(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    code = _score({**setup, "f": setup["g"], "g": setup["f"]}, out)
    _fails(code, capsys, "g/encoder.safetensors was trained as a reference (on S_S ∪ S_I) but "
           "is passed as a candidate", "fix: pass it with --reference")  # fmt: skip
    assert not out.exists()


def test_encoders_of_another_split_need_allow_cross_split(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=80, seed=9))
    path = save_manifest(other, tmp_path / "other.json")
    _fails(
        _score({**setup, "manifest": path}, tmp_path / "o"),
        capsys,
        f"but the split being scored is {other.manifest_sha256}",
        "--allow-cross-split",
    )
    assert _score({**setup, "manifest": path}, tmp_path / "o", "--allow-cross-split") == 0
    assert "CROSS-SPLIT (allowed)" in capsys.readouterr().out
    assert json.loads((tmp_path / "o/summary.json").read_text())["allow_cross_split"] is True


def test_checkpoints_without_provenance_need_the_explicit_flag(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    external = _ckpt(tmp_path / "ext.safetensors", 3)
    _fails(
        _score({**setup, "g": external}, tmp_path / "o"),
        capsys,
        "ext.safetensors does not record its role, split_manifest_sha256, recipe, augmentation",
        "--allow-missing-provenance",
    )
    code = _score({**setup, "g": external}, tmp_path / "o", "--allow-missing-provenance")
    assert code == 0
    assert "UNCHECKED PROVENANCE (allowed)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ("candidate,candidate,independent", "each set may be scored once; repeated: candidate"),
        ("", "--sets '' names an empty set"),
        (",,", "--sets ',,' names an empty set"),
        ("candidate,,extra", "names an empty set"),
        ("candidate,bogus", "scoring.sets.1"),
    ],
)
def test_bad_sets_are_refused_clearly(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sets: str,
    message: str,
) -> None:
    out = tmp_path / "o"
    _fails(_score(setup, out, "--sets", sets), capsys, message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("layer", "messages"),
    [
        ("", ["scoring.layer: String should have at least 1 character"]),
        (
            "backbone.nope",
            [
                "layer 'backbone.nope' is not a representation of",
                "fix: choose one of: backbone.blocks.0.conv,",
            ],
        ),
    ],
)
def test_bad_layers_are_refused_listing_the_valid_ones(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    layer: str,
    messages: list[str],
) -> None:
    out = tmp_path / "o"
    _fails(_score(setup, out, "--layer", layer), capsys, *messages)
    assert not out.exists()


def test_an_unusable_out_is_refused_before_scoring(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    # A missing split would fail later; the output is checked first.
    code = _score({**setup, "manifest": tmp_path / "missing.json"}, file)
    _fails(code, capsys, f"output directory {file} is a file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    _fails(_score(setup, tmp_path / "mine"), capsys, "not part of a report (notes.txt)")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_scoring_into_an_older_run_leaves_no_stale_file(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert _score(setup, out, "--format", "csv", "--grid-k", "2") == 0
    assert (out / "memorised_grid.png").exists()
    assert _score(setup, out, "--no-plots") == 0
    assert sorted(p.name for p in out.iterdir()) == ["scores.parquet", "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_candidate_alone_is_inconclusive_and_exit_status_follows_fail_on(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _score(setup, tmp_path / "a", "--sets", "candidate", "--no-plots") == 0
    out = capsys.readouterr().out
    assert "verdict: INCONCLUSIVE" in out and "no control set was scored" in out
    summary = json.loads((tmp_path / "a/summary.json").read_text())
    assert summary["verdict"]["outcome"] == "inconclusive"
    assert summary["verdict"]["passed"] is False
    args = ("--sets", "candidate", "--no-plots")
    assert _score(setup, tmp_path / "b", *args, "--fail-on", "failed") == 0
    assert _score(setup, tmp_path / "c", *args, "--fail-on", "inconclusive") == 1
    assert (tmp_path / "c/summary.json").exists()  # the report is written either way


def test_sharded_cli_run_merges_to_the_unsharded_report(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--shard` twice (a range not a multiple of anything) and `--merge` == one plain run."""
    plain, shards, merged = tmp_path / "plain", tmp_path / "shards", tmp_path / "merged"
    assert _score(setup, plain, "--no-plots") == 0
    n = pq.read_table(plain / "scores.parquet").num_rows  # default sets: S_C, S_I, S_E
    for part in ("0:7", f"7:{n}"):
        assert _score(setup, shards, "--shard", part) == 0
    assert _score(setup, merged, "--no-plots", "--merge", str(shards)) == 0
    assert pq.read_table(merged / "scores.parquet").equals(pq.read_table(plain / "scores.parquet"))
    a, b = (json.loads((d / "summary.json").read_text()) for d in (plain, merged))
    timing = ("seconds", "points_per_second", "shard_size")
    assert {k: v for k, v in a.items() if k not in timing} == {
        k: v for k, v in b.items() if k not in timing
    }
    assert (a["shard_size"], b["shard_size"]) == (None, n - 7)
    capsys.readouterr()
    # A missing range: exit 2, the range named, nothing written.
    (shards / f"shard-{0:012d}-{7:012d}.parquet").unlink()
    _fails(_score(setup, tmp_path / "gap", "--merge", str(shards)), capsys, "missing [0, 7)")
    assert not (tmp_path / "gap").exists()
    _fails(_score(setup, shards, "--shard", "9:3"), capsys, "START:STOP")


BUNDLED_RECIPE = Path(__file__).resolve().parents[2] / "src/sslmem/recipes/bundled-cpu.yaml"


def test_mode_anchor_overrides_a_recipe_estimator_that_cannot_serve_it(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The bundled recipe pins ustat, which has no anchor mode: --mode anchor gets pairs, says so
    # (sslmem.config's log) and records it; an estimator chosen on the same command line is kept
    # (and refused here).
    assert "estimator: ustat" in BUNDLED_RECIPE.read_text()
    recipe = ["--config", str(BUNDLED_RECIPE), "--set", "scoring.shared_sample=4"]
    with caplog.at_level(logging.WARNING, logger="sslmem.config"):
        assert _score(setup, tmp_path / "anchor", *recipe, "--mode", "anchor") == 0
    assert "estimator 'ustat' does not serve it; scoring with 'pairs'" in caplog.text
    scoring = json.loads((tmp_path / "anchor" / "summary.json").read_text())["scoring"]
    assert (scoring["mode"], scoring["estimator"]) == ("anchor", "pairs")
    chosen = ["--mode", "anchor", "--estimator", "ustat"]
    assert _score(setup, tmp_path / "refused", *recipe, *chosen) == 2
    assert "estimator 'ustat' compares views with each other" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_estimator_flag_picks_the_estimator(setup: dict[str, Path], tmp_path: Path) -> None:
    for name in ("pairs", "ustat"):
        assert _score(setup, tmp_path / name, "--estimator", name, "--no-plots") == 0
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["scoring"]["estimator"] == name
    # The same points, views and seed: different estimators, different (but close) numbers.
    a = pq.read_table(tmp_path / "pairs" / "scores.parquet").to_pydict()
    b = pq.read_table(tmp_path / "ustat" / "scores.parquet").to_pydict()
    assert a["sample_index"] == b["sample_index"] and a["sslmem_raw"] != b["sslmem_raw"]
