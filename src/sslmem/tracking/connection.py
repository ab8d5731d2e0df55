"""Where MLflow lives, how hard to retry it, and how its failures become sslmem errors.

* :func:`configure_mlflow` points this process at a tracking server (``http(s)://...``) or, by
  default, at a local SQLite store with a local artifact root; it bounds MLflow's HTTP retries
  and timeout and disables MLflow's telemetry.
* :func:`tracking_errors` turns every MLflow or HTTP failure inside it into a
  :class:`~sslmem.errors.TrackingError` naming the operation, the tracking URI and a fix.
* :func:`check_tracking_server` fails fast, with bounded retries, when the server is down.

MLflow reads ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``..._BACKOFF_FACTOR`` / ``..._BACKOFF_JITTER``
/ ``..._TIMEOUT`` on every request (``mlflow.utils.rest_utils.http_request``), so the bounds
apply to every client in the process. They come from ``SSLMEM_MLFLOW_TIMEOUT_S`` and
``SSLMEM_MLFLOW_MAX_RETRIES`` (:class:`~sslmem.config.RuntimeSettings`): a server that accepts
connections but never answers costs at most about ``timeout * (max_retries + 1)`` seconds per
call, then a :class:`~sslmem.errors.TrackingError` names it.

Credentials never travel in the tracking URI: ``http(s)://user:password@host`` is split into
the URI MLflow is given (``http(s)://host``) and ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` (MLflow's basic-auth variables), so no MLflow message, log line or
run link can show them; messages name the server by :attr:`TrackingTarget.display_uri`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslmem.config import RuntimeSettings
from sslmem.errors import (
    NotFoundError,
    SSLMemError,
    TrackingError,
    TrackingNotFoundError,
    TrackingUnavailableError,
)
from sslmem.redaction import redact, split_userinfo

TELEMETRY_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def disable_mlflow_telemetry() -> None:
    """Switch MLflow's usage telemetry off (environment, and the client if already created)."""
    os.environ.update(TELEMETRY_ENV)
    import mlflow.telemetry.client as telemetry

    telemetry.set_telemetry_client()  # re-reads the environment: drops the client


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on MLflow's HTTP retries, so an unreachable server fails in seconds, not minutes.

    MLflow's own defaults (7 retries, backoff factor 2, 120 s timeout) keep a client waiting for
    minutes. Worst-case wall time of one call is about ``timeout * (max_retries + 1)`` plus the
    backoff sleeps ``backoff_factor * (0, 2, 4, ...)`` (+ jitter); a refused connection costs
    only the sleeps. With the defaults (10 s, 2 retries) a server that accepts connections but
    never answers fails a call in about 32 s (it took 126 s with 30 s and 3 retries).

    Attributes:
        max_retries: Retries per HTTP request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``).
        backoff_factor: Exponential backoff factor in seconds (``..._BACKOFF_FACTOR``, an int).
        backoff_jitter: Random extra backoff in seconds (``..._BACKOFF_JITTER``).
        timeout: Connect/read timeout per request in seconds (``MLFLOW_HTTP_REQUEST_TIMEOUT``).

    """

    max_retries: int = 2
    backoff_factor: int = 1
    backoff_jitter: float = 0.5
    timeout: int = 10

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_factor < 0 or self.backoff_jitter < 0:
            raise TrackingError(f"retry bounds must be >= 0, got {self}")
        if self.timeout < 1:
            raise TrackingError(f"timeout must be >= 1 s, got {self.timeout}")

    @classmethod
    def from_settings(cls, settings: RuntimeSettings) -> RetryPolicy:
        """The policy of ``SSLMEM_MLFLOW_TIMEOUT_S`` and ``SSLMEM_MLFLOW_MAX_RETRIES``."""
        return cls(max_retries=settings.mlflow_max_retries, timeout=settings.mlflow_timeout_s)

    def env(self) -> dict[str, str]:
        """The MLflow environment variables that enforce this policy."""
        return {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.max_retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(self.backoff_factor),
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(self.backoff_jitter),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.timeout),
        }


@dataclass(frozen=True)
class TrackingTarget:
    """The MLflow store this process talks to.

    Attributes:
        tracking_uri: ``sqlite:////abs/mlflow.db`` or ``http(s)://host:port``.
        artifact_root: Local artifact root of experiments created here (SQLite stores: by
            default ``artifacts/`` beside the database); ``None`` when a server decides.

    """

    tracking_uri: str
    artifact_root: Path | None

    @property
    def display_uri(self) -> str:
        """The tracking URI for messages: any userinfo (a database password) redacted."""
        return redact(self.tracking_uri)

    @property
    def is_local(self) -> bool:
        """Whether the store is a local SQLite file (no server)."""
        return self.artifact_root is not None


_target: TrackingTarget | None = None


def configure_mlflow(
    tracking_uri: str | None = None,
    *,
    local_dir: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
) -> TrackingTarget:
    """Point MLflow at a tracking store, bound its retries and disable its telemetry.

    Args:
        tracking_uri: An MLflow tracking URI (``http(s)://...`` for a server, ``sqlite:///...``
            or another database URI). ``None`` (typically ``RuntimeSettings.mlflow_tracking_uri``
            unset) selects the embedded default: ``sqlite:///<local_dir>/mlflow.db`` with the
            artifact root ``<local_dir>/artifacts``. For another ``sqlite:///`` URI the artifact
            root is ``<local_dir or the database's folder>/artifacts``.
            An ``http(s)://user:password@host`` URI has its credentials moved to
            ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.
        local_dir: Directory of the embedded default (default ``./mlruns``, made absolute).
        retry: HTTP retry bounds; ``None`` takes ``SSLMEM_MLFLOW_TIMEOUT_S`` /
            ``SSLMEM_MLFLOW_MAX_RETRIES`` when set, else keeps ``MLFLOW_HTTP_REQUEST_*`` values
            already in the environment and fills the rest from the settings' defaults.

    Returns:
        The configured target.

    Raises:
        TrackingError: The URI is empty or the local directory cannot be created.

    """
    global _target
    disable_mlflow_telemetry()
    _apply_retry_policy(retry)
    if tracking_uri is not None and tracking_uri.lower().startswith(("http://", "https://")):
        tracking_uri = _move_credentials_to_env(tracking_uri)
    artifact_root: Path | None = None
    if tracking_uri is None:
        root = Path(local_dir if local_dir is not None else "mlruns").expanduser().resolve()
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        artifact_root = root / "artifacts"
    elif not tracking_uri.strip():
        raise TrackingError(
            "the MLflow tracking URI is empty",
            "set SSLMEM_MLFLOW_TRACKING_URI to http://host:port, or leave it unset for the "
            "local SQLite store",
        )
    elif tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri[len("sqlite:///") :])
        root = Path(local_dir or database.parent).expanduser().resolve()
        artifact_root = root / "artifacts"
    if artifact_root is not None:
        try:
            artifact_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(
                f"cannot create the local MLflow directory {artifact_root}: {exc.strerror or exc}",
                "pass a writable local_dir or set SSLMEM_MLFLOW_TRACKING_URI to a server",
            ) from exc
    import mlflow

    # mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ. RuntimeSettings
    # reads that variable as the user's fallback, so the URI chosen here (e.g. the local
    # default) must not pose as the user's in a later read: the environment is put back.
    users = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if users is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = users
    _target = TrackingTarget(tracking_uri=tracking_uri, artifact_root=artifact_root)
    return _target


def _apply_retry_policy(retry: RetryPolicy | None) -> None:
    """Set MLflow's HTTP bounds: ``retry``, else the settings (explicit ones win)."""
    if retry is not None:
        os.environ.update(retry.env())
        return
    settings = RuntimeSettings()
    env = RetryPolicy.from_settings(settings).env()
    explicit = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "mlflow_timeout_s" in settings.model_fields_set,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "mlflow_max_retries" in settings.model_fields_set,
    }
    for key, value in env.items():
        if explicit.get(key, False):
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)


def _move_credentials_to_env(uri: str) -> str:
    """Strip ``user:password@`` off an HTTP tracking URI into MLflow's basic-auth variables."""
    clean, user, password = split_userinfo(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return clean


def configure_from_settings(settings: RuntimeSettings | None = None) -> TrackingTarget:
    """:func:`configure_mlflow` with the settings' tracking URI.

    That is ``SSLMEM_MLFLOW_TRACKING_URI``, else ``MLFLOW_TRACKING_URI``; neither: local SQLite.
    """
    settings = settings if settings is not None else RuntimeSettings()
    return configure_mlflow(settings.mlflow_tracking_uri)


def current_target() -> TrackingTarget:
    """The configured target, configuring the embedded default if nothing was configured."""
    if _target is None:
        return configure_mlflow(None)
    return _target


def client() -> Any:
    """An ``mlflow.MlflowClient`` for the configured target (tracking and registry)."""
    target = current_target()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)


#: MLflow error codes (``MlflowException.error_code``) meaning "no such thing".
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"})
#: MLflow error codes of a server that is down, overloaded or throttling (HTTP 5xx, 429).
_UNAVAILABLE_CODES = frozenset(
    {
        "INTERNAL_ERROR",
        "TEMPORARILY_UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "REQUEST_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "INVALID_STATE",
        "ABORTED",
    }
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (explicitly or implicitly: MLflow re-raises without ``from``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError: the last failure
        if isinstance(reason, BaseException) and id(reason) not in seen:
            seen.add(id(reason))
            yield reason
        current = current.__cause__ or current.__context__


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an error carries (a requests ``HTTPError``'s response), if any."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


Classification = str  # "timeout" | "unreachable" | "not_found" | "unavailable" | "refused"


def classify_tracking_failure(exc: BaseException) -> Classification:
    """What an MLflow/HTTP failure means, decided by exception types and codes only.

    Returns:
        ``"timeout"`` (connected, no answer in time), ``"unreachable"`` (no connection),
        ``"unavailable"`` (HTTP 5xx or 429, or a local store that cannot be written),
        ``"not_found"`` (HTTP 404, ``RESOURCE_DOES_NOT_EXIST``) or ``"refused"`` (any other
        answer: the request itself was wrong).

    """
    import requests.exceptions as rex
    import urllib3.exceptions as uex
    from mlflow.exceptions import MlflowException

    chain = list(_chain(exc))
    if any(isinstance(item, (rex.ReadTimeout, uex.ReadTimeoutError)) for item in chain):
        return "timeout"
    unreachable = (
        rex.ConnectionError,
        rex.Timeout,
        rex.RetryError,
        uex.ProtocolError,
        uex.NewConnectionError,
        uex.MaxRetryError,
        uex.TimeoutError,
        ConnectionError,
        TimeoutError,
    )
    if any(isinstance(item, unreachable) for item in chain):
        return "unreachable"
    for item in chain:
        status = _http_status(item)
        if status is not None:
            if status == 404:
                return "not_found"
            return "unavailable" if status >= 500 or status in (408, 429) else "refused"
        if isinstance(item, MlflowException):
            code = str(item.error_code)
            if code in _NOT_FOUND_CODES:
                return "not_found"
            return "unavailable" if code in _UNAVAILABLE_CODES else "refused"
        if isinstance(item, (FileNotFoundError, NotADirectoryError)):
            return "not_found"  # a local artifact store: no such artifact
        if isinstance(item, OSError):
            return "unavailable"  # a local store that cannot be read or written now
    return "refused"


@contextlib.contextmanager
def tracking_errors(operation: str) -> Iterator[None]:
    """Turn MLflow/HTTP failures inside the block into :class:`TrackingError`.

    sslmem errors pass through unchanged. The class says what the failure means
    (:func:`classify_tracking_failure`, by exception type and code):
    :class:`~sslmem.errors.TrackingUnavailableError` (transient: timeouts, no connection, 5xx,
    429), :class:`~sslmem.errors.TrackingNotFoundError` (404) or a plain
    :class:`TrackingError` (a refused request). The message names the operation and the
    tracking URI; an unreachable server gets a fix that says how to reach it.

    Args:
        operation: What was being done, e.g. ``"register model 'enc'"``.

    """
    try:
        yield
    except SSLMemError:
        raise
    except Exception as exc:
        from mlflow.exceptions import MlflowException
        from requests.exceptions import RequestException

        if not isinstance(exc, (MlflowException, RequestException, OSError)):
            raise
        uri = _target.display_uri if _target is not None else "<not configured>"
        detail = redact(str(getattr(exc, "message", None) or exc)).strip().splitlines()
        first = detail[0] if detail else type(exc).__name__
        kind = classify_tracking_failure(exc)
        if kind == "timeout":
            # MLflow's own variables, set from RuntimeSettings by _apply_retry_policy (or the
            # user's, which win): what MLflow actually waited, for the message.
            timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "?")
            retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
            raise TrackingUnavailableError(
                f"cannot {operation}: MLflow at {uri} accepted the connection but did not answer "
                f"within {timeout} s ({retries} retries)",
                "check that the server is healthy (not hung or overloaded); the wait per call is "
                "bounded by SSLMEM_MLFLOW_TIMEOUT_S and SSLMEM_MLFLOW_MAX_RETRIES",
            ) from exc
        if kind == "unreachable":
            raise TrackingUnavailableError(
                f"cannot {operation}: MLflow at {uri} is unreachable ({first[:300]})",
                "check that the MLflow server is running and SSLMEM_MLFLOW_TRACKING_URI points "
                "at it; retries are bounded by MLFLOW_HTTP_REQUEST_MAX_RETRIES / "
                "MLFLOW_HTTP_REQUEST_TIMEOUT",
            ) from exc
        if kind == "unavailable":
            raise TrackingUnavailableError(
                f"cannot {operation}: MLflow at {uri} failed ({first[:300]})",
                "check the MLflow server's log and its artifact store; the work is retried",
            ) from exc
        if kind == "not_found":
            raise TrackingNotFoundError(
                f"cannot {operation} (MLflow at {uri}): {first[:500]}"
            ) from exc
        raise TrackingError(f"cannot {operation} (MLflow at {uri}): {first[:500]}") from exc


def check_tracking_server() -> None:
    """Make one cheap request to the tracking store; fail fast if it does not answer.

    Raises:
        TrackingError: The store is unreachable or refused the request (after bounded retries).

    """
    with tracking_errors("reach the tracking store"):
        client().search_experiments(max_results=1)


def is_not_found(exc: SSLMemError) -> bool:
    """Whether MLflow said the thing does not exist (not that it could not be asked).

    Decided by type (:class:`~sslmem.errors.TrackingNotFoundError`, raised by
    :func:`tracking_errors` for HTTP 404 and ``RESOURCE_DOES_NOT_EXIST``), never by text.
    """
    return isinstance(exc, NotFoundError)
