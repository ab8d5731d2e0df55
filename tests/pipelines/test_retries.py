"""A train task is retried by default (a retry resumes from the object store), configurably."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sslmem.pipelines.memorization import compile_pipeline
from sslmem.pipelines.platform import load_platform_config


def _retry_policies(path: Path) -> dict[str, list[dict[str, Any]]]:
    """``{task name: [retryPolicy, ...]}`` over every DAG of the compiled pipeline."""
    spec = next(yaml.safe_load_all(path.read_text()))
    dags = [spec["root"], *spec["components"].values()]
    found: dict[str, list[dict[str, Any]]] = {}
    for dag in dags:
        for task in dag.get("dag", {}).get("tasks", {}).values():
            if "retryPolicy" in task:
                found.setdefault(task["taskInfo"]["name"], []).append(task["retryPolicy"])
    return found


def test_train_tasks_alone_are_retried_twice_by_default(tmp_path: Path) -> None:
    policies = _retry_policies(compile_pipeline(tmp_path / "p.yaml"))
    # One train task per role (candidate and reference loops); no other task retries.
    assert list(policies) == ["train-encoder"]
    assert [p["maxRetryCount"] for p in policies["train-encoder"]] == [2, 2]
    assert {p["backoffDuration"] for p in policies["train-encoder"]} == {"60s"}


def test_platform_config_sets_or_removes_train_retries(tmp_path: Path) -> None:
    for retries, expected in ((5, {"train-encoder": [5, 5]}), (0, {})):
        platform = tmp_path / f"platform-{retries}.yaml"
        platform.write_text(f"train: {{retries: {retries}}}\n")
        path = compile_pipeline(
            tmp_path / f"p{retries}.yaml", platform=load_platform_config(platform)
        )
        counts = {
            name: [p["maxRetryCount"] for p in found]
            for name, found in _retry_policies(path).items()
        }
        assert counts == expected
