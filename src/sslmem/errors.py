"""Errors raised by the library.

Every error says what was wrong and how to fix it; adapters (CLI, components, service) turn
:class:`SSLMemError` into a clear message and a non-zero exit without a traceback.
"""

from __future__ import annotations

from sslmem.redaction import redact


class SSLMemError(Exception):
    """Base class for expected, user-facing errors.

    Args:
        problem: What was wrong, naming the offending value (URI userinfo is redacted).
        fix: How to fix it (optional; redacted too).
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        # No credential in any error message: URI userinfo is redacted here, once.
        problem = redact(problem)
        fix = None if fix is None else redact(fix)
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  fix: {fix}")


class ConfigError(SSLMemError):
    """An invalid configuration value or an unknown name."""


class DataError(SSLMemError):
    """A dataset is missing, malformed or empty."""


class ManifestMismatchError(DataError):
    """A split manifest was used against data it was not made from."""


class CheckpointError(SSLMemError):
    """A checkpoint is corrupt, foreign or incompatible."""


class StoreError(SSLMemError):
    """The object store is unreachable or an object is missing."""


class ScoringError(SSLMemError):
    """Scoring cannot proceed (incompatible encoders, non-finite representations, ...)."""


class TrainingError(SSLMemError):
    """Training cannot proceed or diverged."""


class TrackingError(SSLMemError):
    """MLflow (tracking server or model registry) is unreachable or refused a request."""
