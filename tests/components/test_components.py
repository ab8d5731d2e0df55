"""The components' bodies, called in-process on local artifacts: the full chain, then failures.

KFP runs the same functions in containers (or ``kfp.local`` subprocesses, see
tests/pipelines/test_local_run.py); here they run in this process for speed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import dsl

from sslmem.components import (
    DEFAULT_IMAGE,
    build_components,
    evaluate_encoder,
    finalize_run,
    merge_score_shards,
    plan_score_shards,
    prepare_split,
    register_model,
    resolve_config,
    score_memorization,
    score_shard,
    train_encoder,
)
from sslmem.errors import ScoringError
from sslmem.tracking import get_version_tags
from sslmem.tracking import tags as T
from sslmem.workflow import collect_encoders
from tests.pipelines.conftest import TINY_RUN_CONFIG

MODEL = "comp-encoder"
REFERENCE = "comp-encoder-reference"


def test_components_use_the_given_image() -> None:
    components = build_components("reg.example/team/sslmem:2.0")
    for name in ("resolve_config", "prepare_split", "train_encoder", "evaluate_encoder"):
        spec = getattr(components, name).component_spec
        assert spec.implementation.container.image == "reg.example/team/sslmem:2.0"
        # No packages are installed at runtime: the image carries sslmem and kfp.
        assert "pip install" not in " ".join(spec.implementation.container.command)
    assert DEFAULT_IMAGE.startswith("ghcr.io/sslmem/sslmem:")


@dataclass
class Chain:
    """Artifacts and outputs of one in-process run of the components."""

    root: Path
    config_json: str
    split: dsl.Dataset
    split_sha256: str
    split_uri: str
    models: dict[str, dsl.Model]
    metrics: dict[str, dsl.Metrics]


def _artifact(cls: Any, root: Path, name: str) -> Any:
    return cls(name=name, uri=str(root / name), metadata={})


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """Resolve, split, train and evaluate both roles once; registry tests share it."""
    root = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSLMEM_MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("SSLMEM_STORE_URI", str(root / "store"))
        patch.setenv("SSLMEM_DEVICE", "cpu")
        patch.setenv("SSLMEM_NUM_THREADS", "1")
        raw = yaml.safe_load(TINY_RUN_CONFIG)
        raw.pop("pipeline")
        config_json, split_json, recipe_json, evaluation_json = resolve_config(
            config_yaml=yaml.safe_dump(raw)
        )
        assert json.loads(recipe_json).keys() == {"data", "augmentation", "model", "training"}
        split = _artifact(dsl.Dataset, root, "split")
        split_sha256, split_uri = prepare_split(split_json=split_json, split=split)
        assert split.metadata["manifest_sha256"] == split_sha256
        assert Path(split_uri.removeprefix("file://")).is_file()
        models, metrics = {}, {}
        for role in ("candidate", "reference"):
            models[role] = _artifact(dsl.Model, root, f"{role}-model")
            train_encoder(
                split=split,
                split_sha256=split_sha256,
                recipe_json=recipe_json,
                role=role,
                seed=0.0,  # KFP may hand loop items over as floats
                mlflow_experiment="components",
                model=models[role],
            )
            assert models[role].metadata["role"] == role and models[role].metadata["seed"] == 0
            assert models[role].metadata["mlflow_run_id"]
            metrics[role] = _artifact(dsl.Metrics, root, f"{role}-metrics")
            evaluate_encoder(
                model=models[role], evaluation_json=evaluation_json, metrics=metrics[role]
            )
            assert 0 <= metrics[role].metadata["knn_accuracy"] <= 1
        yield Chain(root, config_json, split, split_sha256, split_uri, models, metrics)


def _register(chain: Chain, run_id: str) -> tuple[str, str]:
    candidate_version, reference_version = register_model(
        candidate_models=[chain.models["candidate"]],
        reference_models=[chain.models["reference"]],
        candidate_metrics=[chain.metrics["candidate"]],
        reference_metrics=[chain.metrics["reference"]],
        split=chain.split,
        split_uri=chain.split_uri,
        config_json=chain.config_json,
        candidate_seeds=[0],
        reference_seeds=[0],
        model_name=MODEL,
        reference_model_name="",
        mlflow_experiment="components",
        pipeline_run_id=run_id,
    )
    return candidate_version, reference_version


def _score(chain: Chain, run_id: str, versions: tuple[str, str], config_json: str) -> Path:
    scores = _artifact(dsl.Artifact, chain.root, f"scores-{run_id}")
    score_memorization(
        candidate_models=[chain.models["candidate"]],
        reference_models=[chain.models["reference"]],
        split=chain.split,
        config_json=config_json,
        alpha=0.01,
        model_name=MODEL,
        candidate_version=versions[0],
        reference_model_name="",
        reference_version=versions[1],
        mlflow_experiment="components",
        pipeline_run_id=run_id,
        scores=scores,
        summary=_artifact(dsl.Metrics, chain.root, f"summary-{run_id}"),
        report=_artifact(dsl.Markdown, chain.root, f"report-{run_id}.md"),
    )
    return Path(scores.path)


def _finalize(run_id: str, state: str, message: str = "") -> None:
    status = dsl.PipelineTaskFinalStatus(
        state=state,
        pipeline_job_resource_name=f"projects/p/jobs/{run_id}",
        pipeline_task_name="exit-handler-1",
        error_code=1 if message else None,
        error_message=message or None,
    )
    finalize_run(model_name=MODEL, reference_model_name="", pipeline_run_id=run_id, status=status)


@pytest.fixture
def tracking(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> Chain:
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", f"sqlite:///{chain.root / 'mlflow.db'}")
    monkeypatch.setenv("SSLMEM_STORE_URI", str(chain.root / "store"))
    monkeypatch.setenv("SSLMEM_DEVICE", "cpu")
    from sslmem.tracking import configure_mlflow

    configure_mlflow(f"sqlite:///{chain.root / 'mlflow.db'}")
    return chain


def test_register_then_score_marks_the_version_scored(tracking: Chain) -> None:
    versions = _register(tracking, "run-ok")
    tags = get_version_tags(MODEL, versions[0])
    assert tags[T.STATUS] == "training"
    assert tags[T.REFERENCE_MODEL] == REFERENCE
    assert tags[T.REFERENCE_VERSION] == versions[1]  # a resolved number, never an alias
    assert tags[T.SPLIT_MANIFEST_SHA256] == tracking.split_sha256
    assert tags[T.SPLIT_MANIFEST_URI] == tracking.split_uri
    assert tags["sslmem.pipeline_run_id"] == "run-ok"
    assert T.KNN_ACCURACY in tags and T.LINEAR_PROBE_ACCURACY in tags

    scores = _score(tracking, "run-ok", versions, tracking.config_json)
    assert (scores / "scores.parquet").is_file() and (scores / "summary.json").is_file()
    tags = get_version_tags(MODEL, versions[0])
    assert tags[T.STATUS] == "scored"
    assert T.sslmem_mean_key("candidate") in tags and tags[T.VERDICT] in ("passed", "failed")
    assert get_version_tags(REFERENCE, versions[1])[T.STATUS] == "scored"

    _finalize("run-ok", "SUCCEEDED")  # nothing left to fail
    assert get_version_tags(MODEL, versions[0])[T.STATUS] == "scored"


def test_failed_scoring_leaves_the_version_failed_with_the_reason(tracking: Chain) -> None:
    versions = _register(tracking, "run-bad-score")
    config = json.loads(tracking.config_json)
    config["scoring"]["layer"] = "no_such_layer"
    with pytest.raises(ScoringError, match="no_such_layer"):
        _score(tracking, "run-bad-score", versions, json.dumps(config))
    tags = get_version_tags(MODEL, versions[0])
    assert tags[T.STATUS] == "failed"
    assert "no_such_layer" in tags[T.FAILURE_REASON]
    _finalize("run-bad-score", "FAILED", "Task score-memorization failed.")
    # The precise reason is kept; the reference is failed too.
    assert "no_such_layer" in get_version_tags(MODEL, versions[0])[T.FAILURE_REASON]
    assert get_version_tags(REFERENCE, versions[1])[T.STATUS] == "failed"


def test_exit_handler_fails_versions_that_were_never_scored(tracking: Chain) -> None:
    versions = _register(tracking, "run-crash")
    _finalize("run-crash", "FAILED", "pod evicted")
    for name, version in ((MODEL, versions[0]), (REFERENCE, versions[1])):
        tags = get_version_tags(name, version)
        assert tags[T.STATUS] == "failed"
        assert "run-crash" in tags[T.FAILURE_REASON] and "pod evicted" in tags[T.FAILURE_REASON]


def test_scoring_refuses_a_version_that_holds_another_checkpoint(tracking: Chain) -> None:
    versions = _register(tracking, "run-mixup")
    wrong = Chain(**{**tracking.__dict__, "models": {**tracking.models}})
    wrong.models["candidate"] = tracking.models["reference"]  # not the registered checkpoint
    with pytest.raises(ScoringError, match="not among the encoders being scored"):
        _score(wrong, "run-mixup", versions, tracking.config_json)
    # Nothing was scored, and this check does not fail someone else's version.
    assert get_version_tags(MODEL, versions[0])[T.STATUS] == "training"


def test_collect_encoders_orders_by_seed_and_pairs_evaluations(chain: Chain) -> None:
    candidate, reference = chain.models["candidate"], chain.models["reference"]
    items = [(reference.path, {"seed": 7.0}), (candidate.path, {"seed": 3.0})]
    evaluations = [chain.metrics["candidate"].path, chain.metrics["reference"].path]
    collected = collect_encoders(items, evaluations, [3, 7])
    assert [a.seed for a in collected] == [3, 7]
    assert collected[0].checkpoint == Path(candidate.path)
    assert collected[0].evaluation is not None
    assert collected[0].evaluation["checkpoint_sha256"] == candidate.metadata["sha256"]
    with pytest.raises(ScoringError, match="expected"):
        collect_encoders(items, evaluations, [3])


def test_sharded_components_give_the_one_pass_report_and_tags(tracking: Chain) -> None:
    """plan-score-shards → score-shard per range → merge-score-shards == score-memorization."""
    import pyarrow.parquet as pq

    plain = _score(tracking, "run-plain", _register(tracking, "run-plain"), tracking.config_json)
    versions = _register(tracking, "run-sharded")
    inputs: dict[str, Any] = dict(
        candidate_models=[tracking.models["candidate"]],
        reference_models=[tracking.models["reference"]],
        split=tracking.split,
        config_json=tracking.config_json,
    )
    ranges = plan_score_shards(
        **inputs,
        shard_size=7,
        model_name=MODEL,
        candidate_version=versions[0],
        reference_model_name="",
        reference_version=versions[1],
    )
    n = pq.read_table(plain / "scores.parquet").num_rows
    assert ranges[0] == "0:7" and ranges[-1].endswith(f":{n}") and len(ranges) == -(-n // 7)
    tables = []
    for shard in ranges:
        tables.append(_artifact(dsl.Artifact, tracking.root, f"shard-{shard.replace(':', '-')}"))
        score_shard(**inputs, shard=shard, table=tables[-1])
    assert get_version_tags(MODEL, versions[0])[T.STATUS] == "training"  # shards never tag
    scores = _artifact(dsl.Artifact, tracking.root, "scores-run-sharded")
    merge_score_shards(
        **inputs,
        shards=tables,
        alpha=0.01,
        model_name=MODEL,
        candidate_version=versions[0],
        reference_model_name="",
        reference_version=versions[1],
        mlflow_experiment="components",
        pipeline_run_id="run-sharded",
        scores=scores,
        summary=_artifact(dsl.Metrics, tracking.root, "summary-run-sharded"),
        report=_artifact(dsl.Markdown, tracking.root, "report-run-sharded.md"),
    )
    merged = Path(scores.path)
    assert pq.read_table(merged / "scores.parquet").equals(pq.read_table(plain / "scores.parquet"))
    assert json.loads((merged / "summary.json").read_text())["shard_size"] == 7
    tags = get_version_tags(MODEL, versions[0])
    assert tags[T.STATUS] == "scored"
    assert tags[T.VERDICT] == get_version_tags(MODEL, str(int(versions[0]) - 1))[T.VERDICT]
