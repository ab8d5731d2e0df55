"""``sslmem run`` end to end: the real pipeline through KFP's local runner on a tiny config.

Three runs share one output directory: the first succeeds; the second injects a failure past
validation (an unknown representation layer, found only when scoring) and must leave no version
that looks scored, while reusing the cached split, encoders and evaluations; the third runs
"other code" (another image digest, so another code version) and must reuse nothing. What the
MLflow UI shows is asserted through MLflow's API: a model-training experiment, steps nested
under one parent run per pipeline run, the split as dataset input, metrics linked to each
version's logged model, short version tags plus a parseable provenance JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sslmem.augment import AugmentationSpec
from sslmem.cli import main
from sslmem.errors import TrackingError
from sslmem.tracking import tags as T
from sslmem.workflow import read_run_result
from tests.pipelines.conftest import TINY_RUN_CONFIG

pytestmark = pytest.mark.slow

MODEL = "tiny-encoder"
REFERENCE = "tiny-encoder-reference"


def _client(out: Path) -> Any:
    from sslmem.tracking import configure_mlflow
    from sslmem.tracking.connection import client

    configure_mlflow(f"sqlite:///{out / 'mlflow.db'}")
    return client()


def _version_tags(out: Path, name: str, version: str) -> dict[str, str]:
    return dict(_client(out).get_model_version(name, version).tags)


def test_run_end_to_end_then_a_failing_run_then_other_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_RUN_CONFIG)
    out = tmp_path / "out"

    # ---- 1. a successful run
    assert main(["run", "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    text = printed.out
    assert f"registered model version: models:/{MODEL}/1 (status scored)" in text
    assert f"reference model version:  models:/{REFERENCE}/1" in text
    for expected in ("95% CI", "candidate", "independent", "extra", "verdict:", "kNN"):
        assert expected in text, expected
    assert f"mlflow ui --backend-store-uri sqlite:///{out.resolve()}/mlflow.db" in text
    # The printed link opens the experiment in MLflow's *Model training* view, not GenAI.
    experiment_id = _client(out).get_experiment_by_name("tiny").experiment_id
    assert f"#/experiments/{experiment_id}/runs?workflowType=machine_learning" in text
    assert "train-encoder: SUCCESS" in printed.err  # one progress line per task

    client = _client(out)
    tags = _version_tags(out, MODEL, "1")
    assert tags[T.STATUS] == "scored"
    assert tags[T.REFERENCE_VERSION] == "1" and tags[T.REFERENCE_MODEL] == REFERENCE
    manifest = out / "store" / "splits" / f"{tags[T.SPLIT_MANIFEST_SHA256]}.json"
    assert manifest.is_file() and tags[T.SPLIT_MANIFEST_URI] == manifest.as_uri()
    assert T.sslmem_mean_key("candidate") in tags and T.KNN_ACCURACY in tags
    assert _version_tags(out, REFERENCE, "1")[T.STATUS] == "scored"
    # Short readable tags only; everything else in one JSON tag.
    assert set(tags) <= set(T.VERSION_TAGS), sorted(set(tags) - set(T.VERSION_TAGS))
    assert len(tags) <= 16  # 13 + the judgement's three (sslmem run judges its version)
    provenance = T.parse_provenance(tags)
    assert provenance["layer"] == "backbone" and provenance["seed"] == 0
    assert AugmentationSpec.model_validate(provenance["augmentation"]).output_size == 16
    assert provenance["candidate_seeds"] == [0] and provenance["reference_seeds"] == [0]
    assert provenance["pipeline_run_id"] == tags[T.PIPELINE_RUN]
    assert not [key for key in provenance if key.startswith("sslmem.")]
    assert T.missing_provenance(tags) == []

    score_run = client.get_run(provenance["score_run_id"])
    assert score_run.data.params["training.epochs"] == "1"
    assert score_run.data.params["scoring.views"] == "2"
    assert "sslmem_mean/candidate" in score_run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(score_run.info.run_id, "scoring")}
    assert {"scoring/scores.parquet", "scoring/summary.json"} <= artifacts
    register_run = client.get_run(provenance["register_run_id"])
    assert register_run.data.metrics["knn_accuracy"] == pytest.approx(float(tags[T.KNN_ACCURACY]))
    assert not [k for k in register_run.data.metrics if k.startswith("candidate/")]
    train_run = client.get_run(provenance["train_run_id"])
    assert (
        "candidate/loss" in train_run.data.metrics and "eval/knn_accuracy" in train_run.data.metrics
    )
    assert train_run.data.params["model.arch"] == "small_cnn"
    # Each compute step records the device it ran on (this run: --device cpu).
    import torch

    for run in (train_run, score_run):
        assert run.data.tags[f"{T.COMPUTE_PREFIX}device"] == "cpu"
        assert run.data.tags[f"{T.COMPUTE_PREFIX}torch"] == torch.__version__
    _assert_ui_model(client, tags, provenance)
    first_run_id = tags[T.PIPELINE_RUN]

    # ---- 2. a failure injected past validation: scoring cannot find the layer
    args = ["run", "--config", str(config), "--out", str(out), "--set", "scoring.layer=nope"]
    assert main(args) == 1
    printed = capsys.readouterr()
    assert "FAILED" in printed.out and "score-memorization" in printed.out
    assert f"models:/{MODEL}/2 (status failed)" in printed.out
    for task in ("prepare-split", "train-encoder", "evaluate-encoder"):
        assert f"{task}: cached" in printed.err, task  # reused: same inputs, same code
    failed = _version_tags(out, MODEL, "2")
    assert failed[T.STATUS] == "failed" and "nope" in failed[T.FAILURE_REASON]
    assert T.VERDICT not in failed and T.sslmem_mean_key("candidate") not in failed
    assert _version_tags(out, REFERENCE, "2")[T.STATUS] == "failed"
    run_id = failed[T.PIPELINE_RUN]
    of_failed_run = client.search_model_versions(f"tags.`sslmem.pipeline_run_id` = '{run_id}'")
    assert of_failed_run and all(v.tags[T.STATUS] != "scored" for v in of_failed_run)
    failed_parent = T.parse_provenance(failed)["parent_run_id"]
    assert client.get_run(failed_parent).info.status == "FAILED"  # ended by the exit handler
    # The earlier version is untouched: re-running is safe.
    assert _version_tags(out, MODEL, "1")[T.STATUS] == "scored"
    # The result of a pipeline run is that run's version, not the newest one.
    older = read_run_result(MODEL, pipeline_run_id=first_run_id)
    assert older.candidate.version == "1" and older.pipeline_run_id == first_run_id
    assert older.score is not None and older.reference is not None
    assert older.reference.version == "1"
    newer = read_run_result(MODEL, pipeline_run_id=run_id)
    assert newer.candidate.version == "2" and newer.score is None
    with pytest.raises(TrackingError, match="registered no version"):
        read_run_result(MODEL, pipeline_run_id="no-such-run")

    # ---- 3. the same inputs under other code: nothing trained by the older code is reused.
    # (Another image digest is another code version, as a change of any source file is:
    # tests/test_provenance.py shows that the source digest changes with one byte.)
    monkeypatch.setenv("SSLMEM_IMAGE_DIGEST", "sha256:" + "c0de" * 16)
    assert main(["run", "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "train-encoder: SUCCESS" in printed.err
    assert ": cached" not in printed.err, printed.err
    assert _version_tags(out, MODEL, "3")[T.STATUS] == "scored"


def _assert_ui_model(client: Any, tags: dict[str, str], provenance: dict[str, Any]) -> None:
    """What the MLflow UI shows, through MLflow's API."""
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    eid = experiment.experiment_id

    # One parent run per pipeline run; every step nested under it.
    parent = client.get_run(provenance["parent_run_id"])
    assert parent.data.tags[T.STEP] == "pipeline"
    assert parent.info.run_name == tags[T.PIPELINE_RUN]
    assert parent.info.status == "FINISHED"  # ended by the exit handler
    children = client.search_runs(
        [eid], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    steps = sorted(r.data.tags[T.STEP] for r in children)
    assert steps == [
        "register-candidate",
        "register-reference",
        "score",
        "train-candidate",
        "train-reference",
    ]
    parents = client.search_runs([eid], filter_string=f"tags.`{T.STEP}` = 'pipeline'")
    assert [r.info.run_id for r in parents] == [parent.info.run_id]

    # The split is every run's dataset input: name, digest = manifest hash, source = its URI.
    digest = tags[T.SPLIT_MANIFEST_SHA256][:16]
    for run in (parent, *children):
        inputs = run.inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [
            ("bundled-split", digest)
        ], run.info.run_name
        assert tags[T.SPLIT_MANIFEST_URI] in inputs[0].dataset.source

    # Metrics are linked to each version's logged model; models are named by role.
    version = client.get_model_version(MODEL, "1")
    model = client.get_logged_model(_model_id(version))
    assert model.name == "candidate-encoder"
    metrics = {m.key: m.value for m in model.metrics}
    expected = {
        "knn_accuracy",
        "linear_probe_accuracy",
        "sslmem_mean/candidate",
        "sslmem_mean/independent",
        "sslmem_mean/extra",
        "welch_p/independent",
        "welch_p/extra",
        "verdict_passed",
    }
    assert expected <= set(metrics), sorted(expected - set(metrics))
    assert not [k for k in metrics if k.startswith(("candidate/", "reference/"))]
    assert metrics["sslmem_mean/candidate"] == pytest.approx(
        float(tags[T.sslmem_mean_key("candidate")]), rel=1e-9
    )
    assert metrics["knn_accuracy"] == pytest.approx(float(tags[T.KNN_ACCURACY]), rel=1e-9)
    assert all(m.dataset_digest == digest for m in model.metrics)
    # The version's source run holds them too: *Compare* on versions shows memorisation.
    source_run = client.get_run(version.run_id)
    assert expected <= set(source_run.data.metrics)
    reference = client.get_logged_model(_model_id(client.get_model_version(REFERENCE, "1")))
    assert reference.name == "reference-encoder"
    assert {"knn_accuracy", "linear_probe_accuracy"} <= {m.key for m in reference.metrics}
    listed = client.search_logged_models(experiment_ids=[eid])
    assert {m.name for m in listed} == {"candidate-encoder", "reference-encoder"}


def test_run_rejects_invalid_config_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--set", "model.arch=no_such_arch"]) == 2
    assert "model.arch" in capsys.readouterr().err
    assert main(["run", "--out", str(out), "--set", "pipeline.candidate_seeds=[1, 1]"]) == 2
    assert "pipeline.candidate_seeds" in capsys.readouterr().err
    assert not (out / "mlflow.db").exists()


def _model_id(version: Any) -> str:
    """The logged model a version was registered from (its source is ``models:/<model id>``)."""
    assert version.source.startswith("models:/m-")
    return str(version.source.removeprefix("models:/"))
