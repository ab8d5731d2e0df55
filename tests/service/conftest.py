"""Fixtures for the service tests: an MLflow server that delivers webhooks, a raw receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import (
    WEBHOOK_SERVER_ENV,  # noqa: F401 - re-exported for older imports
    MlflowServer,
    Receiver,
    start_mlflow_server,
    start_receiver,
    webhook_mlflow_env,
)
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
