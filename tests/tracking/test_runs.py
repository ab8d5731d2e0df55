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
    get_or_create_experiment,
    log_config,
    log_evaluation,
    log_model_metrics,
    log_score_report,
    log_split_input,
    log_split_manifest,
    nest_run,
    parent_run_id,
    pipeline_run,
    version_metrics,
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
    assert run.info.run_name == "train"
    assert local_mlflow.artifact_root is not None
    assert run.info.artifact_uri.startswith(local_mlflow.artifact_root.as_uri())


def test_steps_are_nested_under_one_parent_run_per_pipeline_run(
    local_mlflow: TrackingTarget,
) -> None:
    train = find_or_create_run("kfp-7", step="train")
    score = find_or_create_run("kfp-7", step="score")
    other = find_or_create_run("kfp-8", step="train")
    parents = client().search_runs(
        [client().get_experiment_by_name("sslmem").experiment_id],
        filter_string="tags.`sslmem.step` = 'pipeline'",
    )
    by_pipeline = {r.data.tags["sslmem.pipeline_run_id"]: r for r in parents}
    assert sorted(by_pipeline) == ["kfp-7", "kfp-8"]  # one parent per pipeline run
    assert by_pipeline["kfp-7"].info.run_name == "kfp-7"
    for child, pipeline in ((train, "kfp-7"), (score, "kfp-7"), (other, "kfp-8")):
        tags = client().get_run(child).data.tags
        assert tags["mlflow.parentRunId"] == by_pipeline[pipeline].info.run_id
    assert "mlflow.parentRunId" not in by_pipeline["kfp-7"].data.tags
    assert parent_run_id("kfp-7") == by_pipeline["kfp-7"].info.run_id


def test_nest_run_keeps_an_existing_parent(local_mlflow: TrackingTarget) -> None:
    first, second = parent_run_id("a"), parent_run_id("b")
    experiment_id = client().get_experiment_by_name("sslmem").experiment_id
    loose = str(client().create_run(experiment_id).info.run_id)
    assert nest_run(loose, first) is True
    assert nest_run(loose, second) is False  # a cached run stays under the run that made it
    assert client().get_run(loose).data.tags["mlflow.parentRunId"] == first


def test_experiment_is_a_model_training_experiment(local_mlflow: TrackingTarget) -> None:
    experiment_id = get_or_create_experiment("fresh")
    kind = client().get_experiment(experiment_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"
    # An existing experiment without a kind gets one; a kind chosen in the UI is kept.
    bare = client().create_experiment("bare")
    get_or_create_experiment("bare")
    assert client().get_experiment(bare).tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )
    client().set_experiment_tag(bare, "mlflow.experimentKind", "finetuning")
    get_or_create_experiment("bare")
    assert client().get_experiment(bare).tags["mlflow.experimentKind"] == "finetuning"


def test_a_retried_step_finds_its_run_after_the_claim_is_gone(
    local_mlflow: TrackingTarget,
) -> None:
    first = find_or_create_run("gc", step="score")
    # `mlflow gc` purges the deleted claim experiments: the existing run is claimed again.
    experiment_id = client().get_experiment_by_name("sslmem").experiment_id
    from sslmem.tracking.connection import current_target

    for step in ("score", "pipeline"):
        claim = client().get_experiment_by_name(f".sslmem-claim/{experiment_id}/gc/{step}")
        assert claim is not None and claim.lifecycle_stage == "deleted"  # hidden from the UI
        _purge_experiment(current_target().tracking_uri, claim.experiment_id)
    assert find_or_create_run("gc", step="score") == first


def _purge_experiment(tracking_uri: str, experiment_id: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(tracking_uri, "/nonexistent")
    store._hard_delete_experiment(experiment_id)


def test_split_is_the_runs_dataset_input(
    local_mlflow: TrackingTarget, scored: tuple[ScoreReport, ImageDataset, SplitManifest]
) -> None:
    _, _, manifest = scored
    uri = "file:///store/splits/x.json"
    run_id = find_or_create_run("ds", step="train")
    log_split_input(manifest, uri, run_id=run_id)
    log_split_input(manifest, uri, run_id=run_id)  # idempotent
    inputs = client().get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "bundled-split"
    assert dataset.digest == manifest.manifest_sha256[:16]
    assert uri in dataset.source
    assert json.loads(dataset.profile)["manifest_sha256"] == manifest.manifest_sha256
    assert json.loads(dataset.profile)["candidate"] == len(manifest.indices.candidate)
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "train"


def test_version_metrics_are_linked_to_the_logged_model(
    local_mlflow: TrackingTarget,
    scored: tuple[ScoreReport, ImageDataset, SplitManifest],
    checkpoint: tuple[Any, Path],
) -> None:
    from sslmem.tracking import register_encoder

    report, _, manifest = scored
    uri = "file:///store/splits/x.json"
    with pipeline_run("lm", step="register-candidate") as run_id:
        log_split_input(manifest, uri, run_id=run_id)
        ref = register_encoder(checkpoint[1], model_name="enc", logged_model_name="cand")
    assert ref.model_id is not None
    evaluation = {"knn_accuracy": 0.5, "linear_probe_accuracy": 0.625, "num_train": 10}
    metrics = version_metrics(report, evaluation)
    log_model_metrics(ref.model_id, metrics, run_id=run_id, manifest=manifest, manifest_uri=uri)
    model = client().get_logged_model(ref.model_id)
    assert model.name == "cand"
    linked = {m.key: m.value for m in model.metrics}
    summary = report.summary
    assert linked["knn_accuracy"] == 0.5 and linked["linear_probe_accuracy"] == 0.625
    assert linked["sslmem_mean/candidate"] == pytest.approx(summary.sets["candidate"].mean)
    assert linked["sslmem_mean/extra"] == pytest.approx(summary.sets["extra"].mean)
    assert not [k for k in linked if "ci95" in k]  # CIs stay on the score run
    assert linked["welch_p/independent"] == pytest.approx(
        summary.welch_tests["independent"].p_value
    )
    assert linked["verdict_passed"] == float(summary.verdict.passed)
    assert "num_train" not in linked
    assert {m.dataset_digest for m in model.metrics} == {manifest.manifest_sha256[:16]}
    # The version's source run holds them too (the registry's *Compare* reads the run).
    assert set(linked) <= set(client().get_run(run_id).data.metrics)
    found = client().search_logged_models(
        experiment_ids=[model.experiment_id], order_by=[{"field_name": "metrics.knn_accuracy"}]
    )
    assert [m.model_id for m in found] == [ref.model_id]


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
