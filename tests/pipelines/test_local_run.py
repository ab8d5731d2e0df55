"""``sslmem run`` end to end: the real pipeline through KFP's local runner on a tiny config.

Three runs share one output directory: the first succeeds; the second injects a failure past
validation (an unknown representation layer, found only when scoring) and must leave no version
that looks scored, while reusing the cached split, encoders and evaluations; the third runs
"other code" (another image digest, so another code version) and must reuse nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sslmem.cli import main
from sslmem.tracking import tags as T
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
    assert "train-encoder: SUCCESS" in printed.err  # one progress line per task

    client = _client(out)
    tags = _version_tags(out, MODEL, "1")
    assert tags[T.STATUS] == "scored"
    assert tags[T.REFERENCE_VERSION] == "1" and tags[T.REFERENCE_MODEL] == REFERENCE
    manifest = out / "store" / "splits" / f"{tags[T.SPLIT_MANIFEST_SHA256]}.json"
    assert manifest.is_file() and tags[T.SPLIT_MANIFEST_URI] == manifest.as_uri()
    assert tags[T.LAYER] == "backbone" and tags[T.SEED] == "0"
    assert T.sslmem_mean_key("candidate") in tags and T.KNN_ACCURACY in tags
    assert _version_tags(out, REFERENCE, "1")[T.STATUS] == "scored"

    score_run = client.get_run(tags["sslmem.score_run_id"])
    assert score_run.data.params["training.epochs"] == "1"
    assert score_run.data.params["scoring.views"] == "2"
    assert "sslmem_mean/candidate" in score_run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(score_run.info.run_id, "scoring")}
    assert {"scoring/scores.parquet", "scoring/summary.json"} <= artifacts
    register_run = client.get_run(tags["sslmem.register_run_id"])
    assert "candidate/knn_accuracy" in register_run.data.metrics
    train_run = client.get_run(tags["sslmem.train_run_id"])
    assert "candidate/loss" in train_run.data.metrics
    assert train_run.data.params["model.arch"] == "small_cnn"

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
    run_id = failed["sslmem.pipeline_run_id"]
    of_failed_run = client.search_model_versions(f"tags.`sslmem.pipeline_run_id` = '{run_id}'")
    assert of_failed_run and all(v.tags[T.STATUS] != "scored" for v in of_failed_run)
    # The earlier version is untouched: re-running is safe.
    assert _version_tags(out, MODEL, "1")[T.STATUS] == "scored"

    # ---- 3. the same inputs under other code: nothing trained by the older code is reused.
    # (Another image digest is another code version, as a change of any source file is:
    # tests/test_provenance.py shows that the source digest changes with one byte.)
    monkeypatch.setenv("SSLMEM_IMAGE_DIGEST", "sha256:" + "c0de" * 16)
    assert main(["run", "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "train-encoder: SUCCESS" in printed.err
    assert ": cached" not in printed.err, printed.err
    assert _version_tags(out, MODEL, "3")[T.STATUS] == "scored"


def test_run_rejects_invalid_config_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--set", "model.arch=no_such_arch"]) == 2
    assert "model.arch" in capsys.readouterr().err
    assert main(["run", "--out", str(out), "--set", "pipeline.candidate_seeds=[1, 1]"]) == 2
    assert "pipeline.candidate_seeds" in capsys.readouterr().err
    assert not (out / "mlflow.db").exists()
