"""A ``user:password@`` tracking URI against a real ``mlflow server``: the password reaches no
MLflow tag or param, no log record, no printed line and no error message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslmem.config import ExperimentConfig
from sslmem.errors import TrackingError
from sslmem.models import save_checkpoint
from sslmem.tracking import (
    check_tracking_server,
    configure_mlflow,
    get_model_version,
    log_config,
    pipeline_run,
    register_encoder,
)
from sslmem.tracking.connection import client
from tests.servers import MlflowServer, start_mlflow_server
from tests.tracking.conftest import tiny_registry_encoder

pytestmark = pytest.mark.slow

PASSWORD = "pw-c4f1e0a9"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow-credentials")
    with start_mlflow_server(root, str(root / "artifacts")) as server:
        yield server


def _everything_stored(experiment: str, model: str) -> list[str]:
    """Every tag and param key and value of the experiment's runs, versions and models."""
    mlflow_client = client()
    found: list[str] = []
    exp = mlflow_client.get_experiment_by_name(experiment)
    found += [f"{k}={v}" for k, v in exp.tags.items()]
    for run in mlflow_client.search_runs([exp.experiment_id]):
        found += [f"{k}={v}" for k, v in run.data.tags.items()]
        found += [f"{k}={v}" for k, v in run.data.params.items()]
        found.append(run.info.artifact_uri or "")
    for version in mlflow_client.search_model_versions(f"name = '{model}'"):
        found += [f"{k}={v}" for k, v in version.tags.items()]
        found += [version.source or "", version.run_link or ""]
    found += [f"{k}={v}" for k, v in mlflow_client.get_registered_model(model).tags.items()]
    return found


def test_a_password_in_the_tracking_uri_is_stored_printed_and_logged_nowhere(
    mlflow_server: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.DEBUG)
    host = mlflow_server.url.removeprefix("http://")
    configure_mlflow(f"http://alice:{PASSWORD}@{host}")
    check_tracking_server()

    checkpoint = save_checkpoint(tiny_registry_encoder(0), tmp_path / "e.safetensors", metadata={})
    with pipeline_run("kfp-credentials", step="train", experiment="credentials") as run_id:
        log_config(ExperimentConfig())
        version = register_encoder(checkpoint, model_name="cred-encoder")
    assert version.run_id == run_id
    with pytest.raises(TrackingError) as info:
        get_model_version("models:/no-such-model/1")

    stored = _everything_stored("credentials", "cred-encoder")
    assert stored  # the scan saw the run, its params and the version's tags
    assert not [item for item in stored if PASSWORD in item]
    assert PASSWORD not in str(info.value)
    assert not [r.getMessage() for r in caplog.records if PASSWORD in r.getMessage()]
    printed = capsys.readouterr()
    assert "View run" in printed.out or "View run" in printed.err  # MLflow's own run link ...
    assert PASSWORD not in printed.out + printed.err  # ... shows no password
