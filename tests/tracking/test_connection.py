import logging
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
from tests.servers import free_port, silent_server
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


def test_the_uri_mlflow_is_pointed_at_does_not_pose_as_the_users_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI, which RuntimeSettings reads as the
    # user's fallback: the local default chosen once must not be "the user's" URI next time.
    monkeypatch.delenv("SSLMEM_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    configure_mlflow(None, local_dir=tmp_path / "ml")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5002")
    assert configure_from_settings().tracking_uri == "http://127.0.0.1:5002"
    configure_mlflow("http://127.0.0.1:5003")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5002"


def test_the_local_fallback_warning_names_both_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sslmem.config import RuntimeSettings
    from sslmem.workflow._common import configure_tracking

    monkeypatch.delenv("SSLMEM_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        configure_tracking(RuntimeSettings())
    assert "neither SSLMEM_MLFLOW_TRACKING_URI nor MLFLOW_TRACKING_URI is set" in caplog.text


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


# ---- a server that accepts connections but never answers; credentials in the URI


PASSWORD = "hunter2-b9f4e7"


@pytest.mark.timeout(60)  # MLflow's old bounds (30 s x 4 tries) would take ~126 s
def test_a_server_that_never_answers_fails_within_the_configured_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SSLMEM_MLFLOW_TIMEOUT_S", "1")
    monkeypatch.setenv("SSLMEM_MLFLOW_MAX_RETRIES", "0")
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.DEBUG)
    with silent_server() as port:
        configure_mlflow(f"http://alice:{PASSWORD}@127.0.0.1:{port}")
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "1"
        with pytest.raises(TrackingError) as info:
            check_tracking_server()
    message = str(info.value)
    assert f"MLflow at http://127.0.0.1:{port} " in message  # names the server that hung
    assert "did not answer within 1 s" in message
    assert info.value.fix is not None and "SSLMEM_MLFLOW_TIMEOUT_S" in info.value.fix
    assert PASSWORD not in message
    assert not [r for r in caplog.records if PASSWORD in r.getMessage()]


def test_credentials_leave_the_tracking_uri_for_mlflows_auth_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    # Percent-encoded userinfo ("p@ss/word" written p%40ss%2Fword) is decoded for MLflow.
    target = configure_mlflow("https://alice:p%40ss%2Fword@mlflow.example:5000/prefix")
    assert target.tracking_uri == "https://mlflow.example:5000/prefix"
    assert mlflow.get_tracking_uri() == "https://mlflow.example:5000/prefix"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss/word"


def test_a_database_password_stays_in_the_uri_but_not_in_messages() -> None:
    # SQLAlchemy needs it in the URI; messages show the redacted form.
    target = configure_mlflow("postgresql://bob:db-secret-51@127.0.0.1:1/mlflow")
    assert "db-secret-51" in target.tracking_uri
    assert target.display_uri == "postgresql://***@127.0.0.1:1/mlflow"


def test_explicit_timeout_settings_win_over_inherited_mlflow_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    configure_mlflow("http://127.0.0.1:5000")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "120"  # kept: not set by sslmem
    monkeypatch.setenv("SSLMEM_MLFLOW_TIMEOUT_S", "7")
    configure_mlflow("http://127.0.0.1:5000")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
