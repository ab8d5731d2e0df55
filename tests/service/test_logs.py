"""Structured logs: one JSON object per line, carrying the delivery and job in hand."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from sslmem.service.logs import (
    JsonFormatter,
    TextFormatter,
    bind_job,
    configure_logging,
    log_context,
)


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The root logger writing JSON lines into a buffer (everything restored afterwards)."""
    for variable, value in (  # configure_logging sets these for MLflow: restored afterwards
        ("MLFLOW_CONFIGURE_LOGGING", "true"),
        ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true"),
        ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "false"),
    ):
        monkeypatch.setenv(variable, value)
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    named = {
        n: logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access", "mlflow")
    }
    kept = {n: (list(lg.handlers), lg.propagate) for n, lg in named.items()}
    handler = configure_logging("json")
    buffer = io.StringIO()
    handler.setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield buffer
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved
        root.setLevel(level)
        for n, lg in named.items():
            lg.handlers[:], lg.propagate = kept[n]


def _lines(buffer: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_the_delivery_then_the_model_and_version(stream: io.StringIO) -> None:
    log = logging.getLogger("sslmem.test")
    log.info("outside")
    with log_context(delivery_id="d-1"):
        log.info("verifying %s", "it")
        with log_context(model="enc", version="3"):
            log.warning("accepted")
    log.info("after")
    outside, verifying, accepted, after = _lines(stream)
    assert set(outside) == {"time", "level", "logger", "message"}
    assert outside["logger"] == "sslmem.test" and outside["level"] == "INFO"
    assert outside["time"].endswith("+00:00")
    assert verifying["message"] == "verifying it" and verifying["delivery_id"] == "d-1"
    assert "model" not in verifying
    assert (accepted["delivery_id"], accepted["model"], accepted["version"]) == ("d-1", "enc", "3")
    assert accepted["level"] == "WARNING"
    assert set(after) == set(outside)  # the context ended with its block


def test_a_job_binds_its_thread_only(stream: io.StringIO) -> None:
    log = logging.getLogger("sslmem.test")
    ids: list[str] = []

    def worker() -> None:
        ids.append(bind_job("score", "enc", "7"))
        log.info("scoring")
        ids.append(bind_job("judge", "enc", "8"))  # the next job replaces the whole context
        log.info("judging")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    log.info("main thread")
    scoring, judging, main = _lines(stream)
    assert scoring["job_id"] == ids[0] and ids[0].startswith("score-")
    assert (scoring["model"], scoring["version"]) == ("enc", "7")
    assert judging["job_id"] == ids[1] != ids[0] and judging["version"] == "8"
    assert "job_id" not in main


def test_exceptions_stay_on_one_line_and_credentials_are_redacted(stream: io.StringIO) -> None:
    log = logging.getLogger("sslmem.test")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed reading s3://AKIAUSER:hunter2secret@host/bucket")
    (line,) = _lines(stream)
    assert "RuntimeError: boom" in line["exception"]
    assert "hunter2secret" not in json.dumps(line)


def test_unknown_context_field_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown log context"), log_context(secret="x"):  # type: ignore[arg-type]
        pass


def test_text_format_appends_the_context() -> None:
    record = logging.LogRecord("sslmem.x", logging.INFO, __file__, 1, "hello", None, None)
    with log_context(delivery_id="d-9", model="enc"):
        text = TextFormatter().format(record)
        as_json = json.loads(JsonFormatter().format(record))
    assert text.endswith("sslmem.x: hello [delivery_id=d-9 model=enc]")
    assert as_json["delivery_id"] == "d-9"
