"""Structured logs of the scoring service: one JSON object per line, with the work in hand.

``sslmem serve`` logs through :func:`configure_logging`. With ``json`` (the chart's default)
every record is one line ``{"time", "level", "logger", "message", ...}`` plus, when known, the
``delivery_id`` of the webhook delivery, and the ``job_id``, ``model`` and ``version`` of the
job being handled: :func:`log_context` sets them in :mod:`contextvars` around a delivery and
around a job, so every record logged inside (by any module, MLflow and uvicorn included) carries
them without being passed around. ``text`` is the classic one-line format for a terminal, with
the same context appended.

Secrets never reach a record through this module: the context holds only ids and names, and the
settings' secrets are :class:`~pydantic.SecretStr`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

from sslmem.redaction import RedactingFilter

__all__ = [
    "CONTEXT_FIELDS",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "bind_job",
    "configure_logging",
    "current_context",
    "log_context",
]

LogFormat = Literal["json", "text"]

#: The context keys a record may carry, in output order.
CONTEXT_FIELDS = ("delivery_id", "job_id", "model", "version")

_context: ContextVar[dict[str, str] | None] = ContextVar("sslmem_log_context", default=None)


def current_context() -> dict[str, str]:
    """The context fields set by the enclosing :func:`log_context` blocks (a copy)."""
    return dict(_context.get() or {})


@contextlib.contextmanager
def log_context(**fields: str | int | None) -> Iterator[None]:
    """Add ``fields`` (of :data:`CONTEXT_FIELDS`) to every record logged inside the block.

    ``None`` values are skipped; nested blocks add to (and may override) the outer ones.

    Raises:
        ValueError: A field outside :data:`CONTEXT_FIELDS` (a typo would silently vanish).

    """
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields {sorted(unknown)}; use {CONTEXT_FIELDS}")
    merged = {**(_context.get() or {})}
    merged.update({key: str(value) for key, value in fields.items() if value is not None})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind_job(kind: str, model: str, version: str) -> str:
    """Set this thread's log context to a new job (a worker thread, before each job).

    Replaces the whole context, so the previous job's fields cannot leak into this one's
    records; a worker thread runs one job at a time.

    Returns:
        The job id (``<kind>-<12 hex digits>``, new per attempt).

    """
    job_id = f"{kind}-{uuid.uuid4().hex[:12]}"
    _context.set({"job_id": job_id, "model": model, "version": version})
    return job_id


class _ContextFilter(logging.Filter):
    """Copies the current context onto each record (``record.sslmem_context``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "sslmem_context"):
            record.sslmem_context = current_context()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, context."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON (no newline inside)."""
        out: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = getattr(record, "sslmem_context", None) or current_context()
        out.update({key: context[key] for key in CONTEXT_FIELDS if key in context})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message [key=value ...]`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The classic line plus the context fields that are set."""
        line = super().format(record)
        context = getattr(record, "sslmem_context", None) or current_context()
        extra = " ".join(f"{key}={context[key]}" for key in CONTEXT_FIELDS if key in context)
        return f"{line} [{extra}]" if extra else line


def configure_logging(fmt: LogFormat = "json", level: int = logging.INFO) -> logging.Handler:
    """Send every log record (root logger, uvicorn's included) to stderr in ``fmt``.

    Replaces the root logger's handlers, and makes uvicorn's and MLflow's loggers propagate to
    it instead of using their own (MLflow is told not to install its own when imported later),
    and routes :mod:`warnings` through logging, so one process writes one format.

    Returns:
        The installed handler.

    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    handler.addFilter(RedactingFilter())  # no URI credentials, whatever a library logs
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # MLflow writes around logging: its own handlers (configured on import), a tqdm progress
    # bar per artifact download (stderr) and a "View run" link per run (stdout). Each would
    # break the one-object-per-line stream; MLflow reads these variables when it uses them.
    for variable, value in (
        ("MLFLOW_CONFIGURE_LOGGING", "false"),
        ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
        ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"),
    ):
        os.environ.setdefault(variable, value)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "mlflow"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    logging.captureWarnings(True)
    return handler
