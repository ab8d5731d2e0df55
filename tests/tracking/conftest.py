"""Fixtures for the tracking tests: a fresh local MLflow store per test, a tiny encoder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sslmem.models import Encoder, build_encoder, save_checkpoint
from sslmem.tracking import RetryPolicy, TrackingTarget, configure_mlflow
from sslmem.tracking.connection import client

_RETRY_ENV = tuple(RetryPolicy().env())


@pytest.fixture(autouse=True)
def _restore_mlflow_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo each test's MLflow configuration (URIs, sslmem target, retry environment)."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    from sslmem.tracking import connection

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.setattr(connection, "_target", connection._target)
    for key in _RETRY_ENV:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database with MLflow's tables created once (the migrations take seconds)."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    from sslmem.tracking import connection

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri, connection._target)
    root = tmp_path_factory.mktemp("mlflow-template")
    try:
        configure_mlflow(None, local_dir=root)
        client().search_experiments(max_results=1)  # creates and migrates the tables
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri, connection._target = saved
    return root / "mlflow.db"


@pytest.fixture
def local_mlflow(tmp_path: Path, mlflow_db_template: Path) -> Iterator[TrackingTarget]:
    """A private copy of the template store under ``tmp_path/mlruns``, configured for MLflow."""
    root = tmp_path / "mlruns"
    root.mkdir()
    shutil.copyfile(mlflow_db_template, root / "mlflow.db")
    target = configure_mlflow(f"sqlite:///{root / 'mlflow.db'}")
    yield target
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()


def tiny_registry_encoder(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return build_encoder(
        "small_cnn",
        in_channels=1,
        image_size=28,
        arch_kwargs={"widths": [8, 8, 8]},
        head_hidden_dim=16,
        head_output_dim=8,
    )


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Encoder, Path]:
    encoder = tiny_registry_encoder(0)
    path = save_checkpoint(encoder, tmp_path / "enc.safetensors", metadata={"seed": 0})
    return encoder.eval(), path
