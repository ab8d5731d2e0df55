"""Fixtures of the curation tests: the tracking tests' private local MLflow store."""

from tests.tracking.conftest import (  # noqa: F401  (pytest finds fixtures by name)
    _restore_mlflow_state,
    local_mlflow,
    mlflow_db_template,
)
