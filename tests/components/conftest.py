"""Fixtures of the component tests: the same as the pipeline tests'."""

from tests.pipelines.conftest import _restore_mlflow_state

__all__ = ["_restore_mlflow_state"]
