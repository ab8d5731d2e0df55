"""How far the local wall clock is from the object store's: for a gauge and a warning.

Leases do not depend on it (expiry is judged by each reader's monotonic clock, see
:mod:`sslmem.coordination.lease`), but S3 request signing does: a request signed more than
about 15 minutes away from the server's clock is refused (403 ``RequestTimeTooSkewed``, or an
expired presigned URL). Measured once at start-up against the ``Date`` header of an S3 answer.
"""

from __future__ import annotations

from sslmem.coordination.conditional_store import ConditionalStore, S3ConditionalStore

__all__ = ["SKEW_WARNING_S", "measure_clock_skew"]

#: Skew worth a warning: a quarter of the ~15 min S3 tolerates before refusing requests.
SKEW_WARNING_S = 225.0


def measure_clock_skew(store: ConditionalStore, probe_key: str = "clock-probe") -> float | None:
    """Seconds the local wall clock is ahead of the store's (negative: behind).

    One GET of ``probe_key`` (it need not exist); the local time is taken mid-request. The
    server's ``Date`` has one-second resolution, so the result is within about ±1 s plus half
    the round trip.

    Args:
        store: The conditional store (an S3 one; a local directory has no clock of its own).
        probe_key: Key to read (absent is fine).

    Returns:
        Local wall time minus server time, seconds; ``None`` for a local store.

    Raises:
        StoreError: The store did not answer, or without a ``Date`` header.

    """
    if not isinstance(store, S3ConditionalStore):
        return None
    local, server = store.server_time(probe_key)
    return local - (server + 0.5)  # Date truncates to the second: its mean error is 0.5 s
