"""Fixtures for the service tests: an MLflow server that delivers webhooks, a raw receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sslmem.config import RuntimeSettings
from sslmem.tracking import TrackingTarget
from tests.servers import (
    WEBHOOK_SERVER_ENV,  # noqa: F401 - re-exported for older imports
    MlflowServer,
    Receiver,
    start_mlflow_server,
    start_receiver,
    webhook_mlflow_env,
)
from tests.service.scoring_setup import Encoders, make_encoders, runtime_settings
from tests.tracking.conftest import (  # noqa: F401 - fixtures
    _restore_mlflow_state,
    local_mlflow,
    mlflow_db_template,
)


@pytest.fixture(scope="session")
def webhook_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` configured to deliver registry webhooks to 127.0.0.1."""
    root = tmp_path_factory.mktemp("mlflow-webhooks")
    with start_mlflow_server(root, str(root / "artifacts"), env=webhook_mlflow_env()) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with start_receiver("/v1/webhooks/mlflow") as recorder:
        yield recorder


@pytest.fixture
def scoring_env(
    local_mlflow: TrackingTarget,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> tuple[Encoders, RuntimeSettings]:
    """Tiny encoders whose split lies in a local object store, and an in-process MLflow."""
    encoders = make_encoders(tmp_path / "store" / "enc")
    return encoders, runtime_settings(local_mlflow.tracking_uri, tmp_path / "store")
