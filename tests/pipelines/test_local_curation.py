"""The curation pipeline through KFP's local runner: a tiny study end to end (issue 18).

A scored candidate is made as a user of ``sslmem train``/``score`` has one; ``sslmem curate
--local-pipeline`` then runs the compiled pipeline's tasks (plan, one retrain task per
retrain, the study) in subprocesses, and a rerun comes from the cache.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sslmem.cli import main
from sslmem.config import SplitConfig
from sslmem.data import load_dataset, make_split, save_manifest

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


def _scored(root: Path) -> dict[str, Path]:
    split = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=80, seed=4))
    manifest = save_manifest(split, root / "split.json")
    for role in ("candidate", "reference"):
        assert main(["train", "--split", str(manifest), "--role", role, "--out",
                     str(root / role), "--no-progress", *FAST]) == 0  # fmt: skip
    assert main(["score", "--split", str(manifest),
                 "--candidate", str(root / "candidate" / "encoder.safetensors"),
                 "--reference", str(root / "reference" / "encoder.safetensors"),
                 "--out", str(root / "score"), "--no-progress", "--no-plots",
                 *FAST]) == 0  # fmt: skip
    return {
        "split": manifest,
        "scores": root / "score",
        "reference": root / "reference" / "encoder.safetensors",
    }


@pytest.mark.slow
def test_a_tiny_study_through_the_local_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sslmem.curation.plan import study_plan
    from sslmem.curation.study import retrain_names

    scored = _scored(tmp_path)
    out = tmp_path / "out"
    args = ["curate", "--local-pipeline", "--scores", str(scored["scores"]),
            "--split", str(scored["split"]), "--reference", str(scored["reference"]),
            "--out", str(out), "--fractions", "0.25", "--strategies", "top,random",
            "--seeds", "0", "--random-draws", "1", "--experiment", "curation", *FAST]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr()
    plan = study_plan(fractions=(0.25,), strategies=("top", "random"), seeds=(0,), random_draws=1)
    names = retrain_names(scored["scores"], plan)
    assert len(names) == 1 * (1 + 1 * (1 + 1))  # seeds x (1 + fractions x (top + draws))
    assert printed.err.count("curation-retrain: SUCCESS") == len(names), printed.err
    assert "curation-study: SUCCESS" in printed.err
    (study,) = [Path(line.split(": ", 1)[1]) for line in printed.out.splitlines()
                if line.startswith("study: ")]  # fmt: skip
    assert (study / "report.md").stat().st_size > 0
    with (study / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["name"] for row in rows) == sorted(names)
    assert sorted(p.name for p in (study / "retrains").iterdir()) == sorted(names)
    # Logged to the local MLflow store: one parent run, a nested run per retrain.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("curation")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 + len(names)

    # Same inputs, same code: every retrain comes from the cache; the study runs again.
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("curation-retrain: cached") == len(names), err
    assert "curation-study: SUCCESS" in err


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"--scores": "missing"}, "--scores"),
        ({"--adopt": "retrains"}, "--adopt does not apply"),
        ({"--seeds": "0,0"}, "must not repeat"),
    ],
)
def test_bad_local_pipeline_runs_are_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, str], needle: str
) -> None:
    for name in ("score", "retrains"):
        (tmp_path / name).mkdir()
    (tmp_path / "split.json").write_text("{}")
    (tmp_path / "ref.safetensors").write_bytes(b"")
    flags = {"--scores": "score", "--split": "split.json", "--reference": "ref.safetensors",
             "--seeds": "0", **change}  # fmt: skip
    args = ["curate", "--local-pipeline", "--out", str(tmp_path / "out")]
    for flag, value in flags.items():
        args += [flag, value if flag == "--seeds" else str(tmp_path / value)]
    assert main(args) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
