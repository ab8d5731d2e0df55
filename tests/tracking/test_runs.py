import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch

from sslmem.augment import AugmentationSpec
from sslmem.config import EvaluationConfig, ExperimentConfig, ScoringConfig, SplitConfig
from sslmem.data import ImageDataset, SplitManifest, load_dataset, make_split
from sslmem.errors import DataError, ManifestMismatchError, TrackingError
from sslmem.evaluation import EvaluationResult
from sslmem.memorization.scoring import ScoreReport, score_split
from sslmem.models import load_checkpoint, save_checkpoint
from sslmem.tracking import (
    MlflowEpochLogger,
    TrackingTarget,
    find_or_create_run,
    flatten_config,
    log_config,
    log_evaluation,
    log_score_report,
    log_split_manifest,
    pipeline_run,
)
from sslmem.tracking.connection import client
from tests.tracking.conftest import tiny_registry_encoder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scored(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ScoreReport, ImageDataset, SplitManifest]:
    root = tmp_path_factory.mktemp("scored")
    dataset = load_dataset("bundled")
    manifest = make_split(dataset, fractions=SplitConfig(pool_size=80, seed=1))
    f = save_checkpoint(tiny_registry_encoder(0), root / "f.safetensors", metadata={})
    g = save_checkpoint(tiny_registry_encoder(1), root / "g.safetensors", metadata={})
    report = score_split(
        [load_checkpoint(f)],
        [load_checkpoint(g)],
        dataset,
        manifest,
        scoring=ScoringConfig(views=2, sets=("candidate", "independent", "extra")),
        augment_spec=AugmentationSpec(),
        allow_missing_provenance=True,
    )
    return report, dataset, manifest


def _download(run_id: str, path: str, dst: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))


def test_flatten_config_uses_dotted_keys_and_json_values() -> None:
    flat = flatten_config(ExperimentConfig())
    assert flat["training.lr"] == "0.001"
    assert flat["training.method"] == "simclr"
    assert flat["data.root"] == "null"
    assert flat["model.arch_kwargs"] == "{}"
    assert json.loads(flat["augmentation.crop_scale"]) == [0.2, 1.0]
    assert json.loads(flat["scoring.sets"]) == ["candidate", "independent", "extra"]
    assert flatten_config({"a": {"b": {"c": 1}}, "d": True}) == {"a.b.c": "1", "d": "true"}


def test_log_config_logs_every_field_and_the_exact_json(
    local_mlflow: TrackingTarget, tmp_path: Path
) -> None:
    config = ExperimentConfig()
    with pipeline_run("p1", step="train") as run_id:
        params = log_config(config)
        log_config(config)  # a resumed step re-logs identical values: fine
    run = client().get_run(run_id)
    assert run.data.params == params == flatten_config(config)
    assert len(params) > 50
    saved = json.loads(_download(run_id, "config/experiment_config.json", tmp_path).read_text())
    assert ExperimentConfig.model_validate(saved) == config


def test_log_config_refuses_a_changed_value(local_mlflow: TrackingTarget) -> None:
    run_id = find_or_create_run("p1", step="train")
    log_config(ExperimentConfig(), run_id=run_id)
    changed = ExperimentConfig.model_validate({"training": {"lr": 0.5}})
    with pytest.raises(TrackingError, match=r"log config params"):
        log_config(changed, run_id=run_id)


def test_pipeline_run_is_resumed_per_step(local_mlflow: TrackingTarget) -> None:
    with pipeline_run("kfp-123", step="train") as first:
        pass
    with pipeline_run("kfp-123", step="train") as again:
        pass
    with pipeline_run("kfp-123", step="score") as other:
        pass
    assert first == again != other
    run = client().get_run(first)
    assert run.info.status == "FINISHED"
    assert run.data.tags["sslmem.pipeline_run_id"] == "kfp-123"
    assert run.data.tags["sslmem.step"] == "train"
    assert run.info.run_name == "kfp-123/train"
    assert local_mlflow.artifact_root is not None
    assert run.info.artifact_uri.startswith(local_mlflow.artifact_root.as_uri())


def test_pipeline_run_marks_failures(local_mlflow: TrackingTarget) -> None:
    with pytest.raises(RuntimeError), pipeline_run("p2", step="train") as run_id:
        raise RuntimeError("boom")
    assert client().get_run(run_id).info.status == "FAILED"


@pytest.mark.parametrize(("pid", "step"), [("", "train"), ("a'b", "train"), ("p", " ")])
def test_pipeline_run_ids_are_validated(local_mlflow: TrackingTarget, pid: str, step: str) -> None:
    with pytest.raises(TrackingError):
        find_or_create_run(pid, step=step)


def test_epoch_logger_logs_one_step_per_epoch(local_mlflow: TrackingTarget) -> None:
    with pipeline_run("p3", step="train") as run_id:
        callback = MlflowEpochLogger("candidate")
        for epoch in range(3):
            callback.on_epoch_end(
                epoch, {"loss": 1.0 / (epoch + 1), "lr": 0.1, "bad": float("nan")}
            )
    history = client().get_metric_history(run_id, "candidate/loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert "candidate/bad" not in client().get_run(run_id).data.metrics


def test_epoch_logger_needs_a_run(local_mlflow: TrackingTarget) -> None:
    with pytest.raises(TrackingError, match="no MLflow run is active"):
        MlflowEpochLogger("train")


def test_epoch_logger_can_tolerate_tracking_failures(
    local_mlflow: TrackingTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = find_or_create_run("p4", step="train")
    lenient = MlflowEpochLogger("train", run_id=run_id, strict=False)
    strict = MlflowEpochLogger("train", run_id=run_id)

    def fail(*_: Any, **__: Any) -> None:
        raise TrackingError("down")

    monkeypatch.setattr("sslmem.tracking.runs.log_metrics", fail)
    lenient.on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(TrackingError):
        strict.on_epoch_end(0, {"loss": 1.0})


def test_log_evaluation(local_mlflow: TrackingTarget, tmp_path: Path) -> None:
    result = EvaluationResult(
        knn_accuracy=0.75,
        linear_probe_accuracy=0.8,
        num_train=100,
        num_test=50,
        num_classes=10,
        feature_dim=8,
        knn_k_used=20,
        config=EvaluationConfig(),
        augment_spec=AugmentationSpec(),
    )
    run_id = find_or_create_run("p5", step="eval")
    log_evaluation(result, "candidate", run_id=run_id)
    metrics = client().get_run(run_id).data.metrics
    assert metrics["candidate/knn_accuracy"] == 0.75
    assert metrics["candidate/linear_probe_accuracy"] == 0.8
    assert metrics["candidate/num_test"] == 50
    record = json.loads(_download(run_id, "evaluation/candidate.json", tmp_path).read_text())
    assert record == result.to_dict()


def test_log_score_report_writes_metrics_table_manifest_and_plots(
    local_mlflow: TrackingTarget,
    scored: tuple[ScoreReport, ImageDataset, SplitManifest],
    tmp_path: Path,
) -> None:
    report, dataset, manifest = scored
    with pipeline_run("p6", step="score") as run_id:
        paths = log_score_report(report, dataset.images, manifest=manifest, grid_k=4)
    assert set(paths) == {"scores", "summary", "split_manifest", "histogram", "grid"}
    run = client().get_run(run_id)
    metrics, summary = run.data.metrics, report.summary
    for name, stats in summary.sets.items():
        assert metrics[f"sslmem_mean/{name}"] == pytest.approx(stats.mean)
        assert metrics[f"sslmem_std/{name}"] == pytest.approx(stats.std)
        assert metrics[f"sslmem_ci95_low/{name}"] == pytest.approx(stats.ci95_low)
        assert metrics[f"sslmem_ci95_high/{name}"] == pytest.approx(stats.ci95_high)
        assert metrics[f"sslmem_n/{name}"] == stats.n
    for control, test in summary.welch_tests.items():
        assert metrics[f"welch_p/{control}"] == pytest.approx(test.p_value)
    assert metrics["verdict_passed"] == float(summary.verdict.passed)
    assert run.data.tags["sslmem.split_manifest_sha256"] == manifest.manifest_sha256
    assert run.data.tags["sslmem.candidate_sha256"] == summary.candidates[0].sha256

    folder = _download(run_id, "scoring", tmp_path)
    table = pq.read_table(folder / "scores.parquet").to_pydict()
    assert table["sample_index"] == report.columns["sample_index"].tolist()
    assert table["sslmem_raw"] == pytest.approx(report.columns["sslmem_raw"].tolist())
    assert json.loads((folder / "summary.json").read_text())["manifest_sha256"] == (
        manifest.manifest_sha256
    )
    assert SplitManifest.from_json((folder / "split_manifest.json").read_bytes()) == manifest
    for png in ("sslmem_histogram.png", "memorised_grid.png"):
        assert (folder / png).read_bytes()[:8] == PNG_MAGIC


def test_log_score_report_without_images_skips_the_grid(
    local_mlflow: TrackingTarget, scored: tuple[ScoreReport, ImageDataset, SplitManifest]
) -> None:
    report, _, _ = scored
    run_id = find_or_create_run("p7", step="score")
    paths = log_score_report(report, run_id=run_id)
    assert "grid" not in paths and "split_manifest" not in paths
    listed = {a.path for a in client().list_artifacts(run_id, "scoring")}
    assert "scoring/memorised_grid.png" not in listed and "scoring/scores.parquet" in listed


def test_log_score_report_refuses_another_manifest(
    local_mlflow: TrackingTarget, scored: tuple[ScoreReport, ImageDataset, SplitManifest]
) -> None:
    report, dataset, _ = scored
    other = make_split(dataset, fractions=SplitConfig(pool_size=80, seed=2))
    run_id = find_or_create_run("p8", step="score")
    with pytest.raises(ManifestMismatchError):
        log_score_report(report, manifest=other, run_id=run_id)


def test_log_split_manifest(
    local_mlflow: TrackingTarget,
    scored: tuple[ScoreReport, ImageDataset, SplitManifest],
    tmp_path: Path,
) -> None:
    _, _, manifest = scored
    run_id = find_or_create_run("p9", step="split")
    path = log_split_manifest(manifest, run_id=run_id)
    assert _download(run_id, path, tmp_path).read_bytes() == manifest.to_json()


def test_grid_images_must_be_the_dataset(
    local_mlflow: TrackingTarget, scored: tuple[ScoreReport, ImageDataset, SplitManifest]
) -> None:
    report, _, _ = scored
    run_id = find_or_create_run("p10", step="score")
    with pytest.raises(DataError):
        log_score_report(report, torch.zeros(3, 1, 28, 28, dtype=torch.uint8), run_id=run_id)
    run = client().get_run(run_id)  # nothing was logged
    assert not run.data.metrics and not client().list_artifacts(run_id)
