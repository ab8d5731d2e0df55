"""Errors raised by the library.

Every error says what was wrong and how to fix it; adapters (CLI, components, service) turn
:class:`SSLMemError` into a clear message and a non-zero exit without a traceback.
"""

from __future__ import annotations

import re
import sys

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


class TransientError(SSLMemError):
    """A dependency did not answer or refused *for now*: nothing is known about the input.

    Network errors, timeouts, HTTP 5xx and 429, a tracking server or object store that is down,
    artifact writes that fail. Never a verdict on a model version: the work is retried with a
    backoff. Raised as :class:`TrackingUnavailableError` or :class:`StoreUnavailableError`, the
    classes the edges (``tracking.connection.tracking_errors``, the object stores) choose by
    exception type and status code, never by message text.
    """


class NotFoundError(SSLMemError):
    """A thing the input names does not exist (a version, a run, an artifact, an object).

    A permanent input error: the input must change before a retry can succeed.
    """


class TrackingUnavailableError(TrackingError, TransientError):
    """MLflow did not answer, or answered 5xx/429 (see :class:`TransientError`)."""


class TrackingNotFoundError(TrackingError, NotFoundError):
    """MLflow said the model, version, run or artifact does not exist (404)."""


class StoreUnavailableError(StoreError, TransientError):
    """The object store did not answer, or answered 5xx/throttled (see :class:`TransientError`)."""


class StoreNotFoundError(StoreError, NotFoundError):
    """The object (or its bucket) does not exist."""


class LeaseLostError(SSLMemError):
    """The lease moved on (taken over, or no longer provably ours): drop the results.

    Raised by :meth:`sslmem.coordination.lease.LeaseRenewer.fence`. Not a verdict on the input
    and not an outage: another holder owns the work now, so nothing is published or retried.
    """


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` says nothing about the input (retry it later, never fail the input)."""
    return isinstance(error, TransientError)


class OutputError(ConfigError):
    """An output path cannot be written (checked before the work that produces it)."""


class OutputWriteError(TransientError):
    """Writing an output failed part-way (disk full, quota, read-only volume, file-size limit).

    Transient: it says nothing about the input (a version is never failed for it). The writer
    leaves the previous output as it was (see :mod:`sslmem.reporting.outdir`).
    """


class ResourceError(SSLMemError):
    """The machine ran out of a resource (memory) the computation needs."""


#: What each command can reduce when it runs out of memory (key: the CLI subcommand).
_MEMORY_FIXES = {
    "train": "lower --batch-size (or raise training.grad_accum_steps to keep the batch), "
    "augmentation.output_size or the model size",
    "score": "lower scoring.chunk_size (points per forward) or --views",
    "evaluate": "lower evaluation.feature_batch_size, evaluation.knn_batch_size or "
    "evaluation.probe_batch_size",
}


def out_of_memory_error(exc: BaseException, command: str) -> ResourceError | None:
    """A :class:`ResourceError` saying what to reduce, if ``exc`` means memory ran out.

    Recognises Python's ``MemoryError``, ``torch.OutOfMemoryError`` (CUDA) and the
    ``RuntimeError`` torch's CPU allocator raises. torch is not imported here: if it was never
    imported, no torch error can have occurred.

    Args:
        exc: The exception that ended the command.
        command: The subcommand (``"train"``, ``"score"``, ...), to name what to reduce.

    Returns:
        The error to report, or ``None`` if ``exc`` is not about memory.

    """
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    cuda = oom_type is not None and isinstance(exc, oom_type)
    cpu = isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    if not (cuda or cpu or isinstance(exc, MemoryError)):
        return None
    where = "GPU" if cuda else "CPU"
    text = str(exc).strip()
    asked = re.search(r"allocate (\d+) bytes", text)  # torch's CPU allocator
    if asked is not None:
        first_line = f"an allocation of {int(asked.group(1)) / 2**30:.1f} GiB failed"
    else:
        first_line = text.splitlines()[0] if text else type(exc).__name__
    reduce = _MEMORY_FIXES.get(command, "reduce the batch or chunk sizes of the recipe")
    return ResourceError(
        f"out of {where} memory: {first_line}",
        f"{reduce}; or run on a machine with more memory",
    )
