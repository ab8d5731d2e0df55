"""The tracking helpers the pipeline steps use, each in the module of its job.

``step_run`` (a new run per execution) lives with the runs (:mod:`sslmem.tracking.runs`);
``find_versions_by_tag`` and ``set_tags_status_last`` with the model versions' tags
(:mod:`sslmem.tracking.registry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sslmem.errors import TrackingError
from sslmem.tracking import TrackingTarget
from sslmem.tracking import registry as R
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.tracking.runs import step_run


def test_each_execution_of_a_step_gets_its_own_run(local_mlflow: TrackingTarget) -> None:
    ids = []
    for _ in range(2):
        with step_run("exp", step="train", run_name="train-candidate", tags={"k": "v"}) as run_id:
            ids.append(run_id)
    assert ids[0] != ids[1]
    run = client().get_run(ids[0])
    assert run.info.status == "FINISHED"
    assert run.data.tags[T.STEP] == "train" and run.data.tags["k"] == "v"
    with pytest.raises(RuntimeError), step_run("exp", step="train", run_name="t") as failed:
        raise RuntimeError("boom")
    assert client().get_run(failed).info.status == "FAILED"


def _versions(name: str, runs: list[str], tmp_path: Path) -> None:
    client().create_registered_model(name)
    for run in runs:
        client().create_model_version(name, str(tmp_path), tags={T.PIPELINE_RUN: run})


def test_versions_of_one_pipeline_run_are_found_in_order(
    local_mlflow: TrackingTarget, tmp_path: Path
) -> None:
    _versions("enc", ["a", "b", "a"], tmp_path)
    found = R.find_versions_by_tag("enc", T.PIPELINE_RUN, "a")
    assert [version for version, _ in found] == ["1", "3"]
    assert found[0][1][T.PIPELINE_RUN] == "a"
    assert R.find_versions_by_tag("enc", T.PIPELINE_RUN, "c") == []
    assert R.find_versions_by_tag("no-such-model", T.PIPELINE_RUN, "a") == []
    with pytest.raises(TrackingError, match="tag value must not contain quotes"):
        R.find_versions_by_tag("enc", T.PIPELINE_RUN, "a' or '1'='1")


def test_status_is_written_after_every_other_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def record(name: str, version: str | int, tags: dict[str, Any]) -> dict[str, str]:
        calls.append(dict(tags))
        return {k: str(v) for k, v in tags.items()}

    monkeypatch.setattr(R, "set_version_tags", record)
    written = R.set_tags_status_last("enc", 1, {T.STATUS: "scored", "sslmem.x": 1, "sslmem.y": 2})
    assert calls == [{"sslmem.x": 1, "sslmem.y": 2}, {T.STATUS: "scored"}]
    assert written == {"sslmem.x": "1", "sslmem.y": "2", T.STATUS: "scored"}
    calls.clear()
    R.set_tags_status_last("enc", 1, {T.STATUS: "failed"})
    assert calls == [{T.STATUS: "failed"}]  # no empty write before it
