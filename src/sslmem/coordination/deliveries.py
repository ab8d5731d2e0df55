"""Replay protection across replicas and restarts: one marker object per delivery id.

The first process to see a webhook delivery creates ``<prefix>/deliveries/<sha256 of the id>``
with ``If-None-Match: *`` (:mod:`sslmem.coordination.conditional_store`): of any number of
replicas receiving the same delivery -- at once, or after a restart -- exactly one creates it and
is told "first seen". The id is hashed, so any id gives one safe key and no input is echoed.

A marker holds the unix time it was written. A marker older than ``ttl_s`` by that time counts
as new again (it is replaced conditionally, so again only one process wins); choose ``ttl_s``
at least the whole window of accepted delivery timestamps (twice the max age: it is ±) plus the
clock skew between replicas. A marker that cannot be parsed counts as seen (conservative).
Old markers are deleted by :meth:`DeliveryLedger.prune` (a bounded sweep per call) or by an
S3 lifecycle rule on ``<prefix>/deliveries/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable

from sslmem.coordination.conditional_store import ConditionalStore
from sslmem.errors import StoreError

__all__ = ["DeliveryLedger"]

_log = logging.getLogger(__name__)


class DeliveryLedger:
    """Which delivery ids any replica has seen, in the object store.

    Args:
        store: The conditional store shared by all replicas.
        prefix: Key prefix (the lease prefix); markers live under ``<prefix>/deliveries/``.
        ttl_s: How long a marker refuses its id (see the module docstring).
        clock: Unix seconds (injectable for tests).

    """

    def __init__(
        self,
        store: ConditionalStore,
        prefix: str,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not ttl_s > 0:
            raise ValueError("ttl_s must be > 0")
        self.store = store
        self.prefix = prefix.strip("/")
        self.ttl_s = ttl_s
        self.clock = clock

    def key(self, delivery_id: str) -> str:
        """The marker key of ``delivery_id``."""
        digest = hashlib.sha256(delivery_id.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.prefix}/deliveries/{digest}"

    def first_seen(self, delivery_id: str) -> bool:
        """Record ``delivery_id``; ``True`` only for the first process to do so (within the TTL).

        Raises:
            StoreError: The store is unreachable (nothing is known: refuse the delivery with a
                retryable status, so the sender tries again).

        """
        key = self.key(delivery_id)
        marker = self._marker()
        if self._write(key, marker, lambda: self.store.create(key, marker)):
            return True
        found = self.store.read(key)
        if found is None:  # pruned in between: one more creation attempt decides
            return self._write(key, marker, lambda: self.store.create(key, marker))
        data, etag = found
        written = self._written_at(data)
        if written is None or self.clock() - written <= self.ttl_s:
            return False
        return self._write(key, marker, lambda: self.store.replace(key, marker, etag))

    def prune(self, limit: int = 100) -> int:
        """Delete up to ``limit`` markers older than twice the TTL; returns how many.

        Does nothing on a store without listing. Each delete is conditional on the etag read,
        so a marker re-created meanwhile stays.

        Raises:
            StoreError: The store is unreachable.

        """
        keys: Callable[[str], list[str]] | None = getattr(self.store, "keys", None)
        if keys is None:
            return 0
        deleted = 0
        for key in keys(f"{self.prefix}/deliveries"):
            if deleted >= limit:
                break
            found = self.store.read(key)
            if found is None:
                continue
            written = self._written_at(found[0])
            if written is not None and self.clock() - written > 2 * self.ttl_s:
                deleted += self.store.delete(key, found[1])
        return deleted

    def _marker(self) -> bytes:
        # The nonce makes our bytes unique, so an ambiguous write can be read back.
        return json.dumps({"seen": self.clock(), "nonce": uuid.uuid4().hex}).encode()

    @staticmethod
    def _written_at(data: bytes) -> float | None:
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            seen = float(json.loads(data)["seen"])
            if math.isfinite(seen):
                return seen
        return None

    def _write(self, key: str, data: bytes, attempt: Callable[[], str | None]) -> bool:
        try:
            return attempt() is not None
        except StoreError:
            found = self.store.read(key)  # did the write land before the error?
            if found is not None and found[0] == data:
                return True
            raise
