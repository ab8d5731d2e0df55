"""Fixtures of the pipeline tests: MLflow state restored after each test, one torch thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

#: A run config small enough for a shared 2-core CPU (pool of 60 points, 1 epoch, 16 px).
TINY_RUN_CONFIG = """
split: {pool_size: 60}
augmentation: {output_size: 16}
model: {arch: small_cnn, arch_kwargs: {widths: [8, 8, 8]}, head_hidden_dim: 16, head_output_dim: 8}
training: {epochs: 1, batch_size: 16}
scoring: {views: 2}
evaluation: {probe_epochs: 5, knn_k: 5}
pipeline: {model_name: tiny-encoder, mlflow_experiment: tiny}
"""


@pytest.fixture(autouse=True)
def _restore_mlflow_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo each test's MLflow configuration and keep task subprocesses single-threaded."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    from sslmem.tracking import RetryPolicy, connection

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.setattr(connection, "_target", connection._target)
    for key in RetryPolicy().env():
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SSLMEM_NUM_THREADS", "1")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
