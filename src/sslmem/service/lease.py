"""Exactly-once claims through the object store: leases with a TTL, renewed while working.

Whoever scores a model version -- any replica of the service or the pipeline's scoring step --
first claims it with :meth:`LeaseManager.acquire`. A lease is one small JSON object::

    {"holder": "<replica id>", "token": "<uuid of this claim>", "acquired": <unix s>,
     "expires": <unix s>, "renewals": <n>}

and every change to it is a compare-and-swap (:mod:`sslmem.service.lease_store`):

* **acquire** creates it only if absent (S3 ``If-None-Match: *``): of any number of
  contenders exactly one wins; the others get ``None``.
* **renew** replaces it only if it still has the etag we wrote (``If-Match``), moving
  ``expires`` forward. A stale etag -- someone took the lease over -- is refused: the lease is
  lost and the work must stop without writing results.
* **take over**: a lease whose ``expires`` has passed (its holder died or stalled) is replaced
  with ``If-Match`` on the expired object's etag, so of several replicas taking it over at once
  exactly one wins.
* **release** deletes it only if it still has our etag: a holder never deletes a successor's lease.

Guarantee: at any moment at most one claim is live per key, *if* clocks agree to well within
the TTL and the holder renews (or stops) before its lease expires. Expiry is judged by the
reader's clock against the writer's ``expires``, so keep ``ttl`` far above clock skew plus one
renewal interval (defaults: TTL 120 s, renew every 30 s); a holder that cannot renew in time
learns it on the next renewal and must discard its work.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import quote

from sslmem.errors import StoreError
from sslmem.service.lease_store import ConditionalStore

__all__ = ["Lease", "LeaseManager", "LeaseRecord", "LeaseRenewer", "version_lease_key"]

_log = logging.getLogger(__name__)


def version_lease_key(model_name: str, version: str | int, prefix: str = "leases") -> str:
    """The lease key of one model version (the same for the service and the pipeline).

    The model name is percent-encoded, so any MLflow name gives one safe key segment.
    """
    return f"{prefix}/model-versions/{quote(model_name, safe='')}/{version}"


@dataclass(frozen=True)
class LeaseRecord:
    """The content of a lease object.

    Attributes:
        holder: Who holds it (a replica id, or a pipeline run).
        token: Unique per claim; tells two claims by the same holder apart.
        acquired: Unix time the claim was made.
        expires: Unix time after which others may take the lease over.
        renewals: How many times it was renewed.

    """

    holder: str
    token: str
    acquired: float
    expires: float
    renewals: int = 0

    def to_bytes(self) -> bytes:
        """The JSON body stored in the object."""
        return json.dumps(
            {
                "holder": self.holder,
                "token": self.token,
                "acquired": self.acquired,
                "expires": self.expires,
                "renewals": self.renewals,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord | None:
        """Parse a lease body; ``None`` if it is not one (then it can only be taken over)."""
        try:
            raw = json.loads(data)
            return cls(
                holder=str(raw["holder"]),
                token=str(raw["token"]),
                acquired=float(raw["acquired"]),
                expires=float(raw["expires"]),
                renewals=int(raw["renewals"]),
            )
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True)
class Lease:
    """A lease this process holds: its key, content and the etag of the object we wrote."""

    key: str
    record: LeaseRecord
    etag: str


class LeaseManager:
    """Acquire, renew, take over and release leases in a :class:`ConditionalStore`.

    Thread-safe (it holds no mutable state). A write that fails ambiguously (a timeout after the
    request was sent) is resolved by reading the object back: if it holds exactly what we wrote,
    the write happened.

    Args:
        store: The conditional store (:func:`~sslmem.service.lease_store.open_conditional_store`).
        holder: Who we are (``ServiceSettings.replica_id``).
        ttl_s: Lease lifetime after each acquire or renew, seconds.
        clock: Unix seconds (injectable for tests).

    """

    def __init__(
        self,
        store: ConditionalStore,
        holder: str,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.store = store
        self.holder = holder
        self.ttl_s = ttl_s
        self.clock = clock

    def current(self, key: str) -> tuple[LeaseRecord | None, str] | None:
        """The stored lease and its etag (record ``None`` if unreadable); ``None`` if absent."""
        found = self.store.read(key)
        return None if found is None else (LeaseRecord.from_bytes(found[0]), found[1])

    def acquire(self, key: str) -> Lease | None:
        """Claim ``key``: create the lease, or take it over if the stored one has expired.

        Returns:
            The lease, or ``None`` if someone else holds a live one or won the race.

        Raises:
            StoreError: The store is unreachable or refused the request.

        """
        now = self.clock()
        record = LeaseRecord(self.holder, uuid.uuid4().hex, now, now + self.ttl_s)
        data = record.to_bytes()
        etag = self._write(key, data, lambda: self.store.create(key, data))
        if etag is not None:
            return Lease(key, record, etag)
        found = self.current(key)
        if found is None:  # released in between: one more plain attempt
            etag = self._write(key, data, lambda: self.store.create(key, data))
            return None if etag is None else Lease(key, record, etag)
        stored, stored_etag = found
        if stored is not None and stored.expires > now:
            return None
        if stored is not None:
            _log.info(
                "taking over the lease %s of %s (expired %.0f s ago)",
                key,
                stored.holder,
                now - stored.expires,
            )
        etag = self._write(key, data, lambda: self.store.replace(key, data, stored_etag))
        return None if etag is None else Lease(key, record, etag)

    def renew(self, lease: Lease) -> Lease | None:
        """Extend ``lease`` by the TTL from now, only if it is still ours.

        Returns:
            The renewed lease (new etag), or ``None`` if it was taken over or released.

        Raises:
            StoreError: The store is unreachable (the lease may still be ours: retry).

        """
        now = self.clock()
        record = replace(lease.record, expires=now + self.ttl_s, renewals=lease.record.renewals + 1)
        data = record.to_bytes()
        etag = self._write(lease.key, data, lambda: self.store.replace(lease.key, data, lease.etag))
        return None if etag is None else Lease(lease.key, record, etag)

    def release(self, lease: Lease) -> bool:
        """Delete the lease if it is still ours; ``False`` if someone else holds it now."""
        return self.store.delete(lease.key, lease.etag)

    def _write(self, key: str, data: bytes, attempt: Callable[[], str | None]) -> str | None:
        try:
            return attempt()
        except StoreError:
            found = self.store.read(key)  # did the write land before the error?
            if found is not None and found[0] == data:  # `data` holds our unique token
                return found[1]
            raise


class LeaseRenewer:
    """Renews a lease in a background thread until stopped; signals when it is lost.

    Renews every ``interval_s``. A refused renewal (taken over) sets :attr:`lost` at once; store
    errors are retried at the next tick until the lease's own expiry, then it counts as lost.
    Work guarded by the lease should check :attr:`lost` (or :meth:`held`) before writing
    results, and stop when it is set.

    Args:
        manager: The lease manager.
        lease: The lease to keep.
        interval_s: Seconds between renewals (``ServiceSettings.lease_renew_s``).
        on_lost: Called once, from the renewer thread, when the lease is lost.

    Example:
        >>> with LeaseRenewer(manager, lease, 30.0) as renewer:  # doctest: +SKIP
        ...     result = score()
        ...     if not renewer.lost.is_set():
        ...         publish(result)

    """

    def __init__(
        self,
        manager: LeaseManager,
        lease: Lease,
        interval_s: float,
        on_lost: Callable[[Lease], None] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.manager = manager
        self.interval_s = interval_s
        self.lost = threading.Event()
        self._lease = lease
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"lease-renewer:{lease.key}", daemon=True
        )

    def held(self) -> Lease | None:
        """The current lease (latest etag), or ``None`` once it is lost."""
        with self._lock:
            return None if self.lost.is_set() else self._lease

    def start(self) -> LeaseRenewer:
        """Start renewing; returns ``self``."""
        self._thread.start()
        return self

    def stop(self, *, release: bool = True) -> bool:
        """Stop renewing and, by default, release the lease.

        Returns:
            Whether the lease was still ours when stopped (and, with ``release``, deleted).

        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        lease = self.held()
        if lease is None:
            return False
        if not release:
            return True
        try:
            return self.manager.release(lease)
        except StoreError as exc:
            _log.warning("could not release lease %s (it will expire): %s", lease.key, exc.problem)
            return False

    def __enter__(self) -> LeaseRenewer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop(release=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                lease = self._lease
            try:
                renewed = self.manager.renew(lease)
            except StoreError as exc:
                if self.manager.clock() < lease.record.expires:
                    _log.warning("lease %s not renewed, retrying: %s", lease.key, exc.problem)
                    continue
                renewed = None
            if renewed is None:
                self._mark_lost(lease)
                return
            with self._lock:
                self._lease = renewed

    def _mark_lost(self, lease: Lease) -> None:
        _log.warning("lost the lease %s", lease.key)
        with self._lock:
            self.lost.set()
        if self._on_lost is not None:
            self._on_lost(lease)
