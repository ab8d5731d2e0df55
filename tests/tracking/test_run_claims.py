"""Runs of one pipeline run are created exactly once, under real concurrency.

Several threads ask a real ``mlflow server`` for the run of the same ``(pipeline run, step)`` at
the same moment (a barrier releases them together): all must get the same run, and exactly one
run per step -- and one parent -- must remain active.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sslmem.tracking import configure_mlflow, find_or_create_run
from sslmem.tracking.connection import client
from tests.servers import MlflowServer, start_mlflow_server

pytestmark = pytest.mark.slow

WORKERS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow-claims")
    with start_mlflow_server(root, str(root / "artifacts")) as running:
        yield running


def _race(step: str, pipeline_run_id: str) -> list[str]:
    barrier = threading.Barrier(WORKERS)

    def ask(_: int) -> str:
        barrier.wait(timeout=60)
        return find_or_create_run(pipeline_run_id, step=step, experiment="race")

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(ask, range(WORKERS)))


def _active_runs(query: str) -> list[str]:
    experiment = client().get_experiment_by_name("race")
    found = client().search_runs([experiment.experiment_id], filter_string=query)
    return [str(r.info.run_id) for r in found]


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_steps_create_one_run_and_one_parent(
    server: MlflowServer, tmp_path: Path, attempt: int
) -> None:
    configure_mlflow(server.url)
    pipeline_run_id = f"kfp-race-{attempt}"
    got = _race("score", pipeline_run_id)
    assert len(set(got)) == 1, got
    tagged = f"tags.`sslmem.pipeline_run_id` = '{pipeline_run_id}'"
    assert _active_runs(f"{tagged} AND tags.`sslmem.step` = 'score'") == [got[0]]
    parents = _active_runs(f"{tagged} AND tags.`sslmem.step` = 'pipeline'")
    assert len(parents) == 1
    assert client().get_run(got[0]).data.tags["mlflow.parentRunId"] == parents[0]
    # Asked again later (a retried step), the same run comes back.
    assert find_or_create_run(pipeline_run_id, step="score", experiment="race") == got[0]
