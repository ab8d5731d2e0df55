"""URI userinfo is redacted wherever a URI can reach a message: the function and its users."""

from __future__ import annotations

import pytest

from sslmem.data.store import S3Store, open_store
from sslmem.errors import ConfigError, StoreError, TrackingError
from sslmem.redaction import redact, split_userinfo


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://alice:pw@mlflow:5000/api", "http://***@mlflow:5000/api"),
        ("https://token123@kfp.example", "https://***@kfp.example"),
        ("s3://ak:sk@bucket/prefix", "s3://***@bucket/prefix"),
        ("postgresql+psycopg2://u:p@db:5432/x?ssl=1", "postgresql+psycopg2://***@db:5432/x?ssl=1"),
        # a raw '@' in the password: everything up to the last '@' of the authority goes
        ("http://u:p@ss@host/x", "http://***@host/x"),
        # two URIs in one message, surrounded by text and quotes
        ("from 'http://a:b@h1' to http://c:d@h2:1.", "from 'http://***@h1' to http://***@h2:1."),
        # nothing to redact: no userinfo, an '@' only in the path, a file path
        ("http://mlflow:5000/a@b", "http://mlflow:5000/a@b"),
        ("sqlite:////data/run@1/mlflow.db", "sqlite:////data/run@1/mlflow.db"),
        ("user@example.com wrote", "user@example.com wrote"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_split_userinfo_decodes_and_strips() -> None:
    assert split_userinfo("https://al%20ice:p%40ss@h:1/x?q=1") == (
        "https://h:1/x?q=1",
        "al ice",
        "p@ss",
    )
    assert split_userinfo("https://tok@h") == ("https://h", "tok", None)
    assert split_userinfo("http://h:1/x") == ("http://h:1/x", None, None)


def test_every_sslmem_error_redacts_its_problem_and_fix() -> None:
    error = ConfigError("cannot reach http://u:pw-42@h:1", "retry http://u:pw-42@h:1 later")
    assert "pw-42" not in str(error) and "pw-42" not in error.problem
    assert error.fix == "retry http://***@h:1 later"
    assert "pw-42" not in str(TrackingError("at postgresql://u:pw-42@db/x"))


def test_a_store_uri_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(StoreError) as info:
        open_store("s3://AKIA:sk-secret-9@bucket/prefix")
    assert "sk-secret-9" not in str(info.value) and "AKIA" not in str(info.value)
    assert "s3://***@bucket/prefix" in info.value.problem
    assert info.value.fix is not None and "SSLMEM_S3_SECRET_KEY" in info.value.fix


@pytest.mark.parametrize(
    "endpoint", ["ak:sk-secret-9@minio:9000", "http://ak:sk-secret-9@minio:9000"]
)
def test_an_s3_endpoint_with_credentials_is_refused_without_echoing_them(endpoint: str) -> None:
    with pytest.raises(StoreError) as info:
        S3Store("bucket", endpoint=endpoint, access_key=None, secret_key=None)
    assert "sk-secret-9" not in str(info.value)
    assert "***@minio:9000" in info.value.problem


def test_the_logging_filter_redacts_what_any_library_logs() -> None:
    import io
    import logging

    from sslmem.redaction import redact_logging

    stream = io.StringIO()
    logger = logging.getLogger("tests.redaction.some_library")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        redact_logging(logger)
        redact_logging(logger)  # idempotent: one filter per handler
        assert len(handler.filters) == 1
        logger.warning("retrying %s (%d)", "http://bob:log-pw-77@mlflow:5000/api", 3)
        logger.warning("plain message, %s", "no uri")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "retrying http://***@mlflow:5000/api (3)\nplain message, no uri\n"
