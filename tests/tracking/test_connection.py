import os
import time
from pathlib import Path

import pytest

from sslmem.errors import SSLMemError, TrackingError
from sslmem.models import save_checkpoint
from sslmem.tracking import (
    RetryPolicy,
    check_tracking_server,
    configure_from_settings,
    configure_mlflow,
    get_or_create_experiment,
    load_registered_encoder,
    register_encoder,
)
from tests.servers import free_port
from tests.tracking.conftest import tiny_registry_encoder


def _unreachable_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"  # free now: nothing listens there


def test_default_is_a_local_sqlite_store_with_telemetry_off(tmp_path: Path) -> None:
    import mlflow

    target = configure_mlflow(None, local_dir=tmp_path / "ml")
    assert target.tracking_uri == f"sqlite:///{(tmp_path / 'ml' / 'mlflow.db').resolve()}"
    assert target.is_local and target.artifact_root == (tmp_path / "ml" / "artifacts").resolve()
    assert target.artifact_root.is_dir()
    assert mlflow.get_tracking_uri() == target.tracking_uri
    assert mlflow.get_registry_uri() == target.tracking_uri
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    from mlflow.telemetry.client import get_telemetry_client

    assert get_telemetry_client() is None
    # Bounded retries are the default unless the environment already says otherwise.
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(RetryPolicy().max_retries)


def test_configure_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert configure_from_settings().tracking_uri == "http://127.0.0.1:5001"


def test_sqlite_uri_puts_artifacts_beside_the_database(tmp_path: Path) -> None:
    target = configure_mlflow(f"sqlite:///{tmp_path / 'x.db'}")
    assert target.artifact_root == tmp_path.resolve() / "artifacts"


def test_server_uri_leaves_artifacts_to_the_server() -> None:
    target = configure_mlflow("http://127.0.0.1:5000", retry=RetryPolicy(max_retries=2))
    assert not target.is_local and target.artifact_root is None
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"


def test_environment_retry_settings_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    configure_mlflow("http://127.0.0.1:5000")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"


@pytest.mark.parametrize("kwargs", [{"max_retries": -1}, {"timeout": 0}, {"backoff_factor": -1}])
def test_retry_policy_rejects_bad_bounds(kwargs: dict[str, int]) -> None:
    with pytest.raises(TrackingError):
        RetryPolicy(**kwargs)


def test_empty_uri_is_a_clear_error() -> None:
    with pytest.raises(TrackingError, match="empty"):
        configure_mlflow("  ")


def test_unreachable_server_fails_fast_with_default_bounds() -> None:
    configure_mlflow(_unreachable_uri())
    started = time.monotonic()
    with pytest.raises(TrackingError, match="unreachable") as info:
        check_tracking_server()
    elapsed = time.monotonic() - started
    # 3 retries with backoff factor 1: sleeps of about 0 + 2 + 4 s plus jitter (MLflow's own
    # defaults would retry for minutes).
    assert elapsed < 20, elapsed
    assert info.value.fix is not None and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in info.value.fix
    assert isinstance(info.value, SSLMemError)


@pytest.mark.parametrize("call", ["experiment", "register", "load"])
def test_every_entry_point_reports_an_unreachable_server(call: str, tmp_path: Path) -> None:
    configure_mlflow(_unreachable_uri(), retry=RetryPolicy(max_retries=1, timeout=2))
    started = time.monotonic()
    with pytest.raises(TrackingError, match="unreachable"):
        if call == "experiment":
            get_or_create_experiment("x")
        elif call == "register":
            path = save_checkpoint(tiny_registry_encoder(), tmp_path / "c.safetensors", metadata={})
            register_encoder(path, model_name="enc")
        else:
            load_registered_encoder("models:/enc@champion", cache_dir=tmp_path)
    assert time.monotonic() - started < 5
