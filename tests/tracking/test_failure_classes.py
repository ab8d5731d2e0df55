"""Failures are classified by type and status code at the edge, never by message text.

Real exceptions as MLflow, requests and the object stores raise them (and real unreachable
endpoints): the class decides whether the scoring service retries (transient) or fails the
version (a typed not-found or another permanent input error).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos import databricks_pb2 as codes

from sslmem.data.store import LocalStore, S3Store
from sslmem.errors import (
    StoreNotFoundError,
    StoreUnavailableError,
    TrackingError,
    TrackingNotFoundError,
    TrackingUnavailableError,
    TransientError,
    is_transient,
)
from sslmem.tracking import RetryPolicy, check_tracking_server, configure_mlflow
from sslmem.tracking.connection import is_not_found, tracking_errors
from sslmem.workflow.failures import RETRY_REASONS, FailureReason, failure_reason
from tests.servers import free_port


def _raised(exc: BaseException) -> TrackingError:
    with pytest.raises(TrackingError) as caught, tracking_errors("do a thing"):
        raise exc
    return caught.value


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} error", response=response)


def test_mlflow_error_codes_decide_the_class_not_the_text() -> None:
    missing = _raised(MlflowException("gone", error_code=codes.RESOURCE_DOES_NOT_EXIST))
    assert isinstance(missing, TrackingNotFoundError) and is_not_found(missing)
    assert not is_transient(missing)
    # The words of a not-found (or of an outage) in a refusal change nothing.
    refused = _raised(
        MlflowException(
            "alias not found: Connection refused", error_code=codes.INVALID_PARAMETER_VALUE
        )
    )
    assert type(refused) is TrackingError
    assert not is_not_found(refused) and not is_transient(refused)
    for code in (codes.TEMPORARILY_UNAVAILABLE, codes.INTERNAL_ERROR, codes.REQUEST_LIMIT_EXCEEDED):
        assert isinstance(_raised(MlflowException("x", error_code=code)), TrackingUnavailableError)
    rest = _raised(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "m"}))
    assert isinstance(rest, TrackingNotFoundError)


def test_http_statuses_and_transport_errors_decide_the_class() -> None:
    assert isinstance(_raised(_http_error(503)), TrackingUnavailableError)
    assert isinstance(_raised(_http_error(429)), TrackingUnavailableError)
    assert isinstance(_raised(_http_error(404)), TrackingNotFoundError)
    assert type(_raised(_http_error(400))) is TrackingError
    unreachable = _raised(requests.ConnectionError("does not exist"))  # text says not-found
    assert isinstance(unreachable, TrackingUnavailableError) and not is_not_found(unreachable)
    assert isinstance(_raised(requests.ReadTimeout()), TrackingUnavailableError)
    # MLflow re-raises transport errors without ``from``: the implicit context is followed.
    outer = MlflowException("API request failed with exception reset")
    outer.__context__ = requests.ConnectionError("reset")
    assert isinstance(_raised(outer), TrackingUnavailableError)
    assert isinstance(_raised(FileNotFoundError("x")), TrackingNotFoundError)
    assert isinstance(_raised(PermissionError("x")), TrackingUnavailableError)


def test_an_unreachable_tracking_server_is_transient() -> None:
    configure_mlflow(f"http://127.0.0.1:{free_port()}", retry=RetryPolicy(max_retries=0))
    with pytest.raises(TrackingUnavailableError) as caught:
        check_tracking_server()
    assert is_transient(caught.value) and not is_not_found(caught.value)
    assert failure_reason(caught.value) in RETRY_REASONS


def test_store_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        LocalStore(tmp_path).get_bytes("missing.json")
    down = S3Store(
        "bucket", endpoint=f"127.0.0.1:{free_port()}", access_key="k", secret_key="s",
        secure=False, retries=0,
    )  # fmt: skip
    with pytest.raises(StoreUnavailableError) as caught:
        down.get_bytes("any.json")
    assert isinstance(caught.value, TransientError)
    assert failure_reason(caught.value) is FailureReason.OBJECT_STORE
