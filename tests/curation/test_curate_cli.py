"""A tiny curation study end to end through ``sslmem curate`` (issue 18)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient

from sslmem.cli import main
from sslmem.config import SplitConfig
from sslmem.data import load_dataset, make_split, save_manifest
from sslmem.data.splits import load_manifest
from tests.servers import start_mlflow_server

FAST = [
    "--set", "model.arch_kwargs={widths: [8, 16]}",
    "--set", "model.head_hidden_dim=16",
    "--set", "augmentation.output_size=16",
    "--set", "training.batch_size=8",
    "--set", "training.epochs=1",
    "--set", "evaluation.probe_epochs=2",
    "--set", "scoring.views=2",
    "--device", "cpu",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("curate")
    split = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=80, seed=4))
    manifest = save_manifest(split, root / "split.json")
    for role in ("candidate", "reference"):
        assert main(["train", "--split", str(manifest), "--role", role, "--out",
                     str(root / role), "--no-progress", *FAST]) == 0  # fmt: skip
    score = ["score", "--split", str(manifest),
             "--candidate", str(root / "candidate" / "encoder.safetensors"),
             "--reference", str(root / "reference" / "encoder.safetensors"),
             "--out", str(root / "score"), "--no-progress", "--no-plots"]  # fmt: skip
    assert main([*score, *FAST]) == 0
    return {
        "split": manifest,
        "scores": root / "score",
        "reference": root / "reference" / "encoder.safetensors",
        "candidate": root / "candidate" / "encoder.safetensors",
    }


def _curate(scored: dict[str, Path], out: Path, *extra: str, **paths: Path) -> int:
    use = {**scored, **paths}
    return main(
        ["curate", "--scores", str(use["scores"]), "--split", str(use["split"]),
         "--reference", str(use["reference"]), "--out", str(out),
         "--fractions", "0.25", "--strategies", "top,random", "--seeds", "0,1",
         "--random-draws", "1", *FAST, *extra]
    )  # fmt: skip


@pytest.fixture
def mlflow_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with start_mlflow_server(tmp_path / "mlflow", str(tmp_path / "artifacts")) as server:
        monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", server.url)
        yield server.url


def _study_runs(url: str) -> list[Any]:
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("curation")
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id]))


@pytest.mark.slow
def test_a_tiny_study_removes_the_right_points_reports_logs_and_resumes(
    scored: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], mlflow_url: str
) -> None:
    out = tmp_path / "study"
    assert _curate(scored, out, "--experiment", "curation") == 0
    # The top-k by the report's own candidate scores, computed here from the table.
    table = pq.read_table(scored["scores"] / "scores.parquet").to_pydict()
    candidates = [
        (score, index)
        for index, name, score in zip(
            table["sample_index"], table["set"], table["sslmem_raw"], strict=True
        )
        if name == "candidate"
    ]
    k = round(0.25 * len(candidates))
    expected_top = sorted(index for _, index in sorted(candidates, key=lambda p: (-p[0], p[1]))[:k])
    parent = load_manifest(scored["split"])
    for seed in (0, 1):
        derived = load_manifest(out / "retrains" / f"top-k{k}-s{seed}" / "split.json")
        assert derived.derivation is not None
        assert list(derived.derivation.removed) == expected_top
        assert derived.derivation.parent_manifest_sha256 == parent.manifest_sha256
        assert set(derived.indices.candidate) == set(parent.indices.candidate) - set(expected_top)
        random = load_manifest(out / "retrains" / f"random-k{k}-d0-s{seed}" / "split.json")
        assert random.derivation is not None and len(random.derivation.removed) == k
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["name"] for r in rows) == sorted(
        ["full-s0", "full-s1", f"top-k{k}-s0", f"top-k{k}-s1", f"random-k{k}-d0-s0",
         f"random-k{k}-d0-s1"]
    )  # fmt: skip
    for row in rows:
        assert 0.0 <= float(row["knn_accuracy"]) <= 1.0
        removed = int(row["k"])
        assert int(row["num_train"]) == len(parent.training_indices("candidate")) - removed
    summary = json.loads((out / "study.json").read_text())
    assert {d["control"] for d in summary["analysis"]["drops"]} == {"random"}
    report = ("report.md", "accuracy_vs_k.png", "onion_shift.png", "sslmem_vs_atypicality.png",
              "memorised_vs_typical.png", "atypicality.csv")  # fmt: skip
    for name in report:
        assert (out / name).stat().st_size > 0, name
    # MLflow: one parent run, a nested run per retrain, accuracy against k as metric steps.
    runs = _study_runs(mlflow_url)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 7
    parent = parents[0].info.run_id
    children = {r.info.run_name: r for r in runs if r.info.run_id != parent}
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent}
    top = children[f"top-k{k}-s1"]
    assert top.data.tags["sslmem.curation.strategy"] == "top"
    assert top.data.tags["sslmem.curation.k"] == str(k)
    by_name = {row["name"]: row for row in rows}
    assert top.data.metrics["knn_accuracy"] == pytest.approx(
        float(by_name[f"top-k{k}-s1"]["knn_accuracy"])
    )
    client = MlflowClient(tracking_uri=mlflow_url)
    history = client.get_metric_history(parent, "knn_accuracy/top")
    assert sorted(m.step for m in history) == [0, k]
    report_files = {Path(f.path).name for f in client.list_artifacts(parent, "report")}
    assert {"report.md", "accuracy_vs_k.png", "results.csv"} <= report_files
    capsys.readouterr()
    # Resuming a finished study trains nothing, logs nothing again, rewrites the same table.
    before = (out / "results.csv").read_bytes()
    assert _curate(scored, out, "--experiment", "curation") == 0
    assert "0 retrains run now, 6 found done" in capsys.readouterr().out
    assert len(_study_runs(mlflow_url)) == 7
    assert (out / "results.csv").read_bytes() == before
    # Another plan into the same directory is refused, and nothing there changes.
    assert _curate(scored, out, "--draw-seed", "5") == 2
    assert "holds a curation study of other inputs" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == before
    # A study with one more seed reuses these retrains and trains only the new seed's.
    adopt = [str(d) for d in sorted((out / "retrains").iterdir())]
    assert _curate(scored, tmp_path / "more", "--seeds", "0,1,2", "--adopt", *adopt) == 0
    assert "3 retrains run now, 6 found done" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "paths", "needle"),
    [
        (["--fractions", "0.99"], {}, "removes all"),
        (["--set", "training.batch_size=64"], {}, "fewer than one batch"),
        ([], {"reference": "candidate"}, "is not the one the score report was scored against"),
        ([], {"split": "other-split"}, "is of split"),
        (["--seeds", "0,0"], {}, "must not repeat"),
    ],
)
def test_bad_studies_are_refused_before_any_training(
    scored: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    paths: dict[str, str],
    needle: str,
) -> None:
    use: dict[str, Path] = {}
    for key, value in paths.items():
        if value == "other-split":
            other = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=80, seed=9))
            use[key] = save_manifest(other, tmp_path / "other.json")
        else:
            use[key] = scored[value]
    out = tmp_path / "study"
    assert _curate(scored, out, *extra, **use) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert not (out / "retrains").exists()


@pytest.mark.slow
def test_retrains_run_apart_are_adopted_by_the_study_without_training(
    scored: dict[str, Path], tmp_path: Path
) -> None:
    from sslmem.config import load_experiment_config
    from sslmem.curation.plan import study_plan
    from sslmem.curation.selection import read_candidate_scores
    from sslmem.curation.study import retrain_names, run_one_retrain, run_study
    from sslmem.errors import ConfigError

    overrides = [FAST[i + 1] for i in range(0, len(FAST) - 2, 2)]
    config = load_experiment_config(None, overrides)
    plan = study_plan(fractions=(0.25,), strategies=("top",), seeds=(0,))
    names = retrain_names(scored["scores"], plan)
    assert len(names) == 2
    scores = read_candidate_scores(scored["scores"])
    parent = load_manifest(scored["split"])
    apart = []
    for name in names:  # as the pipeline's parallel steps do, each into its own directory
        row = run_one_retrain(
            name,
            scores=scores,
            manifest=parent,
            reference_path=scored["reference"],
            config=config,
            plan=plan,
            row_dir=tmp_path / "apart" / name,
        )
        assert row.name == name
        apart.append(tmp_path / "apart" / name)
    result = run_study(
        report_dir=scored["scores"],
        manifest_path=scored["split"],
        reference_path=scored["reference"],
        config=config,
        plan=plan,
        out_dir=tmp_path / "study",
        done_dirs=apart,
    )
    assert result.trained == 0
    assert {r.name for r in result.rows} == set(names)
    # A retrain computed with another recipe is refused, not silently reused.
    other_recipe = load_experiment_config(None, [*overrides, "training.lr=0.01"])
    with pytest.raises(ConfigError, match="computed from another recipe"):
        run_study(
            report_dir=scored["scores"],
            manifest_path=scored["split"],
            reference_path=scored["reference"],
            config=other_recipe,
            plan=plan,
            out_dir=tmp_path / "other-recipe",
            done_dirs=apart,
        )
    # A larger plan adopts what it contains and trains only the rest.
    larger = study_plan(fractions=(0.25,), strategies=("top",), seeds=(0, 1))
    grown = run_study(
        report_dir=scored["scores"],
        manifest_path=scored["split"],
        reference_path=scored["reference"],
        config=config,
        plan=larger,
        out_dir=tmp_path / "larger",
        done_dirs=apart,
    )
    assert grown.trained == 2 and len(grown.rows) == 4
    with pytest.raises(ConfigError, match="not a retrain of the study plan"):
        run_one_retrain(
            "top-k99-s0",
            scores=scores,
            manifest=parent,
            reference_path=scored["reference"],
            config=config,
            plan=plan,
            row_dir=tmp_path / "bad",
        )
