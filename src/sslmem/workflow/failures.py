"""Why scoring a version failed, by error type (the service's ``reason`` label and tags).

Lives in the workflow, below the scoring service, so that scoring can classify failures
without reaching up; the service's metrics module re-exports these names.
"""

from __future__ import annotations

from enum import Enum

from sslmem.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ScoringError,
    StoreError,
    TrackingError,
)

__all__ = ["RETRY_REASONS", "FailureReason", "failure_reason"]


class FailureReason(str, Enum):
    """Why scoring a version failed (the ``reason`` label; also worth a version tag)."""

    MISSING_PROVENANCE = "missing_provenance"
    """The version lacks tags needed to score it (reference, split, augmentation, ...)."""
    UNKNOWN_MODEL = "unknown_model"
    """The version, its model or its reference version does not exist."""
    INVALID_CHECKPOINT = "invalid_checkpoint"
    """Corrupt, foreign or refused (pickled) weights."""
    DATA = "data"
    """The dataset or split manifest is missing or does not match."""
    CONFIG = "config"
    """A configuration value is invalid."""
    SCORING = "scoring"
    """Scoring refused the inputs (incompatible encoders, non-finite representations, ...)."""
    TRACKING = "tracking"
    """MLflow refused or did not answer."""
    OBJECT_STORE = "object_store"
    """The object store refused or did not answer."""
    INTERNAL = "internal"
    """Anything else (a bug: see the service log)."""


#: Failure reasons that say nothing about the version (a dependency did not answer): the job is
#: retried after a backoff, never marked failed. The ``reason`` label of the retries counter.
RETRY_REASONS = (FailureReason.TRACKING, FailureReason.OBJECT_STORE)

_ERROR_REASONS: tuple[tuple[type[Exception], FailureReason], ...] = (
    (CheckpointError, FailureReason.INVALID_CHECKPOINT),
    (DataError, FailureReason.DATA),  # includes ManifestMismatchError
    (ConfigError, FailureReason.CONFIG),
    (ScoringError, FailureReason.SCORING),
    (TrackingError, FailureReason.TRACKING),
    (StoreError, FailureReason.OBJECT_STORE),
)


def failure_reason(error: BaseException) -> FailureReason:
    """The :class:`FailureReason` of an exception raised while scoring a version.

    ``missing_provenance`` and ``unknown_model`` are decided by the caller, which knows it
    checked tags or looked a version up; everything that is not an
    :class:`~sslmem.errors.SSLMemError` of a known kind is ``internal``.
    """
    for kind, reason in _ERROR_REASONS:
        if isinstance(error, kind):
            return reason
    return FailureReason.INTERNAL
