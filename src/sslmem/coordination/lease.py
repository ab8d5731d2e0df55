"""Exactly-once claims through the object store: leases with a TTL, renewed while working.

Whoever scores a model version -- any replica of the service or the pipeline's scoring step --
first claims it with :meth:`LeaseManager.acquire`. A lease is one small JSON object::

    {"holder": "<replica id>", "token": "<uuid of this claim>", "generation": <n>,
     "ttl_s": <s>, "renewals": <n>, "released": false,
     "acquired": <unix s>, "expires": <unix s>}

and every change to it is a compare-and-swap (:mod:`sslmem.coordination.conditional_store`):

* **acquire** creates it only if absent (S3 ``If-None-Match: *``): of any number of
  contenders exactly one wins; the others get ``None``.
* **renew** replaces it only if it still has the etag we wrote (``If-Match``). A stale etag --
  someone took the lease over -- is refused: the lease is lost and the work must stop without
  writing results.
* **take over**: a lease is replaced (``If-Match`` on the etag we saw, so of several replicas
  taking it over at once exactly one wins) once *this reader* has seen the object unchanged --
  the same etag -- for the lease's ``ttl_s`` of its **own monotonic clock**, as Kubernetes'
  leader election does. Wall-clock times (``acquired``, ``expires``) are written for humans
  only and never compared with anything, so clock skew between replicas, or between a replica
  and the store, cannot make a live lease look expired. A first observation starts the timer:
  a freshly started process waits one TTL before taking over a lease it finds.
* **release** replaces it with a *released* record (same generation) only if it still has our
  etag: a holder never touches a successor's lease, and the next claim may take it at once.

**Holder side.** A lease is ours until ``valid_until`` = (monotonic time the last successful
acquire or renew request was *sent*) + TTL: the write landed after it was sent, and every
reader started its timer after the write landed, so no reader takes over before then.
:class:`LeaseRenewer` counts the lease lost once that passes without a successful renewal
(store errors are retried only until then), and :meth:`LeaseRenewer.fence` renews
synchronously right before each publishing step. This assumes monotonic clocks *run* at the
same rate (drift of parts per million), not that they agree.

**Generation** (a fencing token): 1 when the key is created, +1 on every take-over or claim after
a release, kept by renewals; ``(key, generation)`` names one claim for good.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from urllib.parse import quote

from sslmem.coordination.conditional_store import ConditionalStore
from sslmem.errors import LeaseLostError, StoreError

if TYPE_CHECKING:
    from sslmem.config import RuntimeSettings
    from sslmem.coordination.settings import LeaseSettings

__all__ = [
    "Lease",
    "LeaseManager",
    "LeaseObservations",
    "LeaseRecord",
    "LeaseRenewer",
    "open_lease_manager",
    "version_lease_key",
]

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
        acquired: Unix time the claim was made (for humans only).
        expires: Unix time of the last write plus the TTL (for humans only: never compared).
        renewals: How many times it was renewed.
        generation: Fencing token: +1 on every create or take-over, kept by renewals.
        ttl_s: The holder's TTL: readers take over after seeing the object unchanged this long
            (0: unknown, e.g. written by an older version; readers use their own TTL).
        released: The holder released it: free to claim at once.

    """

    holder: str
    token: str
    acquired: float
    expires: float
    renewals: int = 0
    generation: int = 1
    ttl_s: float = 0.0
    released: bool = False

    def to_bytes(self) -> bytes:
        """The JSON body stored in the object."""
        return json.dumps(
            {
                "holder": self.holder,
                "token": self.token,
                "acquired": self.acquired,
                "expires": self.expires,
                "renewals": self.renewals,
                "generation": self.generation,
                "ttl_s": self.ttl_s,
                "released": self.released,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord | None:
        """Parse a lease body; ``None`` if it is not one (then it can only be taken over)."""
        try:
            raw = json.loads(data)
            record = cls(
                holder=str(raw["holder"]),
                token=str(raw["token"]),
                acquired=float(raw["acquired"]),
                expires=float(raw["expires"]),
                renewals=int(raw["renewals"]),
                generation=int(raw.get("generation", 0)),
                ttl_s=float(raw.get("ttl_s", 0.0)),
                released=raw.get("released", False) is True,
            )
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return None
        if not math.isfinite(record.ttl_s) or record.ttl_s < 0 or record.generation < 0:
            return None
        return record


@dataclass(frozen=True)
class Lease:
    """A lease this process holds.

    Attributes:
        key: The lease key.
        record: What we wrote.
        etag: The etag of the object we wrote.
        valid_until: Monotonic time (of :attr:`LeaseManager.monotonic`) until which it is
            provably ours: when our last successful write was sent, plus the TTL.
        taken_over: Whether this claim replaced another holder's unreleased lease (it had
            stopped renewing); ``False`` for a fresh or released key (and after a renewal).

    """

    key: str
    record: LeaseRecord
    etag: str
    valid_until: float = field(default=-math.inf, compare=False)
    taken_over: bool = field(default=False, compare=False)

    @property
    def generation(self) -> int:
        """The fencing token of this claim (see the module docstring)."""
        return self.record.generation


class LeaseObservations:
    """What this process saw of lease objects: per key, the etag and when it first saw it.

    Shared by every :class:`LeaseManager` of the process by default, so a caller that opens a
    new manager per attempt (the pipeline's polling loop) still sees a dead lease expire. An
    entry is a fact ("this etag existed at that monotonic time"), true for any observer in the
    process; evicting one (beyond ``max_keys``) only restarts a timer, which is safe.

    Args:
        max_keys: Keys remembered; the oldest are forgotten first.

    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_keys = max_keys

    def unchanged_for(self, key: str, etag: str, now: float) -> float:
        """Seconds ``key`` has shown ``etag``, as of ``now``; 0 (timer started) if new."""
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and seen[0] == etag:
                return max(0.0, now - seen[1])
            self._seen[key] = (etag, now)
            self._seen.move_to_end(key)
            while len(self._seen) > self._max_keys:
                self._seen.popitem(last=False)
            return 0.0

    def forget(self, key: str) -> None:
        """Drop what we saw of ``key`` (it is ours now, or gone)."""
        with self._lock:
            self._seen.pop(key, None)


_SHARED_OBSERVATIONS = LeaseObservations()


class LeaseManager:
    """Acquire, renew, take over and release leases in a :class:`ConditionalStore`.

    Thread-safe. A write that fails ambiguously (a timeout after the request was sent) is
    resolved by reading the object back: if it holds exactly what we wrote, the write happened.

    Args:
        store: The conditional store
            (:func:`~sslmem.coordination.conditional_store.open_conditional_store`).
        holder: Who we are (``LeaseSettings.holder``, the replica id).
        ttl_s: Our TTL, written into our leases (``LeaseSettings.ttl_s``).
        clock: Unix seconds, only for the human-readable times in the record.
        monotonic: The clock expiry is judged by (injectable for tests).
        observations: Where what we saw is kept (default: shared by the process).

    """

    def __init__(
        self,
        store: ConditionalStore,
        holder: str,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        observations: LeaseObservations | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.store = store
        self.holder = holder
        self.ttl_s = ttl_s
        self.clock = clock
        self.monotonic = monotonic
        self.observations = _SHARED_OBSERVATIONS if observations is None else observations

    @classmethod
    def from_settings(
        cls,
        store: ConditionalStore,
        settings: LeaseSettings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        observations: LeaseObservations | None = None,
    ) -> LeaseManager:
        """A manager for ``settings.holder`` with ``settings.ttl_s``."""
        return cls(
            store,
            settings.holder,
            settings.ttl_s,
            monotonic=monotonic,
            observations=observations,
        )

    def current(self, key: str) -> tuple[LeaseRecord | None, str] | None:
        """The stored lease and its etag (record ``None`` if unreadable).

        ``None`` if there is no lease: the object is absent or holds a released record.
        """
        found = self.store.read(key)
        if found is None:
            return None
        record = LeaseRecord.from_bytes(found[0])
        return None if record is not None and record.released else (record, found[1])

    def acquire(self, key: str) -> Lease | None:
        """Claim ``key``: create the lease, or take it over (see the module docstring).

        Returns:
            The lease, or ``None`` if another holds it (its object changed within its TTL of
            our clock, or we only just saw it) or won the race.

        Raises:
            StoreError: The store is unreachable or refused the request.

        """
        lease = self._create(key, generation=1)
        if lease is not None:
            return lease
        found = self.store.read(key)
        seen_at = self.monotonic()  # after the answer: the write we see landed before this
        if found is None:  # released and deleted in between: one more plain attempt
            return self._create(key, generation=1)
        data, etag = found
        stored = LeaseRecord.from_bytes(data)
        if stored is None:
            _log.warning("taking over the lease %s: its content is not a lease", key)
            generation = 1
        elif stored.released:
            generation = stored.generation + 1
        else:
            ttl = stored.ttl_s or self.ttl_s
            unchanged = self.observations.unchanged_for(self.store.uri(key), etag, seen_at)
            if unchanged < ttl:
                return None
            _log.info(
                "taking over the lease %s of %s (generation %d): unchanged for %.0f s of our "
                "clock, its TTL is %.0f s",
                key,
                stored.holder,
                stored.generation,
                unchanged,
                ttl,
            )
            generation = stored.generation + 1
        sent = self.monotonic()
        record = self._record(generation)
        new = record.to_bytes()
        new_etag = self._write(key, new, lambda: self.store.replace(key, new, etag))
        if new_etag is None:
            return None
        self.observations.forget(self.store.uri(key))
        taken_over = stored is None or not stored.released  # counted by the service's metrics
        return Lease(key, record, new_etag, sent + self.ttl_s, taken_over=taken_over)

    def renew(self, lease: Lease) -> Lease | None:
        """Rewrite ``lease`` (new etag, ``valid_until`` from now), only if it is still ours.

        Returns:
            The renewed lease, or ``None`` if it was taken over or released.

        Raises:
            StoreError: The store is unreachable (the lease may still be ours: retry).

        """
        sent = self.monotonic()
        # The renewal counter makes every write's bytes new, so the etag changes even where it is
        # the content's MD5 (S3): readers restart their timers on every renewal.
        record = replace(
            lease.record,
            expires=self.clock() + self.ttl_s,
            renewals=lease.record.renewals + 1,
            ttl_s=self.ttl_s,
        )
        data = record.to_bytes()
        etag = self._write(lease.key, data, lambda: self.store.replace(lease.key, data, lease.etag))
        return None if etag is None else Lease(lease.key, record, etag, sent + self.ttl_s)

    def release(self, lease: Lease) -> bool:
        """Mark the lease released if it is still ours; ``False`` if another holds it now.

        Raises:
            StoreError: The store is unreachable (the lease then expires after its TTL).

        """
        record = replace(lease.record, released=True, expires=self.clock())
        data = record.to_bytes()
        etag = self._write(lease.key, data, lambda: self.store.replace(lease.key, data, lease.etag))
        return etag is not None

    def _record(self, generation: int) -> LeaseRecord:
        now = self.clock()
        return LeaseRecord(
            self.holder,
            uuid.uuid4().hex,
            now,
            now + self.ttl_s,
            generation=generation,
            ttl_s=self.ttl_s,
        )

    def _create(self, key: str, generation: int) -> Lease | None:
        sent = self.monotonic()
        record = self._record(generation)
        data = record.to_bytes()
        etag = self._write(key, data, lambda: self.store.create(key, data))
        if etag is None:
            return None
        self.observations.forget(self.store.uri(key))
        return Lease(key, record, etag, sent + self.ttl_s)

    def _write(self, key: str, data: bytes, attempt: Callable[[], str | None]) -> str | None:
        try:
            return attempt()
        except StoreError:
            found = self.store.read(key)  # did the write land before the error?
            if found is not None and found[0] == data:  # `data` holds our unique token
                return found[1]
            raise


def open_lease_manager(settings: LeaseSettings, runtime: RuntimeSettings) -> LeaseManager:
    """The lease manager on the object store of ``runtime`` (``SSLMEM_STORE_URI``)."""
    from sslmem.coordination.conditional_store import open_conditional_store

    return LeaseManager.from_settings(open_conditional_store(runtime.store_uri, runtime), settings)


class LeaseRenewer:
    """Renews a lease in a background thread until stopped; signals when it is lost.

    Renews every ``interval_s``. The lease is lost when a renewal is refused (taken over), or
    when its ``valid_until`` passes without a successful renewal -- store errors are retried
    only until then. :meth:`held` and :meth:`fence` judge that by the clock themselves, so a
    renewal stuck in a slow request cannot keep a lease alive. Once lost, always lost: work
    guarded by the lease calls :meth:`fence` right before each publishing step and drops its
    results on :class:`~sslmem.errors.LeaseLostError`.

    Args:
        manager: The lease manager.
        lease: The lease to keep.
        interval_s: Seconds between renewals (``LeaseSettings.renew_s``).
        on_lost: Called once, from whichever thread notices, when the lease is lost.

    Example:
        >>> with LeaseRenewer(manager, lease, 30.0) as renewer:  # doctest: +SKIP
        ...     result = score()
        ...     renewer.fence()  # raises LeaseLostError: drop the result
        ...     publish(result, generation=renewer.fence().generation)

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
        self._lost_why = ""  # set once, with the claim below, under _lock
        self._on_lost = on_lost
        # Both under _renew_lock: publishing begins with the first fence that passes; a closed
        # fence refuses every later one (shutdown) while the lease stays ours to release.
        self._publishing = False
        self._closed_why = ""
        self.stopped = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _lease and lost
        self._renew_lock = threading.Lock()  # one renewal at a time: two would refuse each other
        self._thread = threading.Thread(
            target=self._run, name=f"lease-renewer:{lease.key}", daemon=True
        )

    def held(self) -> Lease | None:
        """The current lease (latest etag), or ``None`` once it is lost or no longer provable."""
        with self._lock:
            if self._lost_why:
                return None
            lease = self._lease
        if self.manager.monotonic() >= lease.valid_until:
            self._mark_lost(lease, "not renewed within its TTL")
            return None
        return lease

    def fence(self, *, publishing: bool = False) -> Lease:
        """Renew now (``If-Match``) and return the fresh lease: call before each publishing step.

        If the store cannot be reached, the current lease is returned while it is still
        provably ours (before its ``valid_until``).

        Args:
            publishing: The step belongs to a result set of several writes: from here until
                :meth:`end_publishing`, :meth:`close_unless_publishing` leaves the fence open.

        Raises:
            LeaseLostError: The lease was taken over or released, or cannot be proven ours any
                longer (no successful renewal within the TTL). Drop the results.

        """
        lease = self.held()
        if lease is None:
            raise self._lost_error(self._lease)
        left = lease.valid_until - self.manager.monotonic()
        if not self._renew_lock.acquire(timeout=max(left, 0.0)):  # a renewal hangs past expiry
            self._mark_lost(lease, "not renewed within its TTL")
            raise self._lost_error(lease, "not renewed within its TTL")
        try:
            if self._closed_why:
                raise self._lost_error(lease, self._closed_why)
            renewed = self._renew_locked()[0]
            self._publishing = self._publishing or publishing
            return renewed
        finally:
            self._renew_lock.release()

    @property
    def publishing(self) -> bool:
        """Whether a result set is being published (a publishing fence since the last end)."""
        return self._publishing

    def end_publishing(self) -> None:
        """The result set begun by a publishing :meth:`fence` is complete."""
        with self._renew_lock:
            self._publishing = False

    def close_unless_publishing(self, why: str) -> bool:
        """Refuse every later :meth:`fence` (with ``why``) unless a result set is being published.

        For shutdown: work must not begin a result set once its lease is about to be released,
        or its first write (a score run) would be left behind, orphaned; a result set already
        begun is better let finish (see the worker's shutdown). The lease stays ours until
        :meth:`stop` releases it.

        Returns:
            ``True`` if the fence is now closed; ``False`` if a result set is being published.

        """
        with self._renew_lock:  # no fence passes in between: the two decisions exclude each other
            if self._publishing:
                return False
            self._closed_why = why or "closed"
            return True

    def start(self) -> LeaseRenewer:
        """Start renewing; returns ``self``."""
        self._thread.start()
        return self

    def stop(self, *, release: bool = True) -> bool:
        """Stop renewing and, by default, release the lease.

        Returns:
            Whether the lease was still ours when stopped (and, with ``release``, released).

        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            with self._renew_lock:
                lease = self.held()
                if lease is None:
                    return False
                if not release:
                    return True
                try:
                    return self.manager.release(lease)
                except StoreError as exc:
                    _log.warning(
                        "could not release lease %s (it will expire): %s", lease.key, exc.problem
                    )
                    return False
        finally:
            self.stopped.set()

    def __enter__(self) -> LeaseRenewer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop(release=True)

    def _renew_locked(self) -> tuple[Lease, bool]:
        """Renew once (``_renew_lock`` held): ``(lease, renewed)``; raises when lost."""
        with self._lock:
            lease, lost = self._lease, bool(self._lost_why)
        if lost:
            raise self._lost_error(lease)
        # No expiry check before the request: a renewal that lands proves nobody took over,
        # and callers check the clock themselves (fence() through held()).
        monotonic = self.manager.monotonic
        try:
            renewed = self.manager.renew(lease)
        except StoreError as exc:
            if monotonic() < lease.valid_until:
                _log.warning("lease %s not renewed, retrying: %s", lease.key, exc.problem)
                return lease, False
            self._mark_lost(lease, "the store failed until the TTL passed")
            raise self._lost_error(lease, "the store failed until the TTL passed") from None
        if renewed is None:
            self._mark_lost(lease, "taken over or released")
            raise self._lost_error(lease, "taken over or released")
        with self._lock:
            lost = bool(self._lost_why)  # expired (held()) while the request was in flight
            if not lost:
                self._lease = renewed
        if lost:
            with contextlib.suppress(StoreError):  # ours, but given up: free it for the next
                self.manager.release(renewed)
            raise self._lost_error(lease, "not renewed within its TTL")
        return renewed, True

    def _run(self) -> None:
        delay = self.interval_s
        while not self._stop.wait(delay):
            with self._renew_lock:
                if self._stop.is_set():
                    return
                try:
                    lease, renewed = self._renew_locked()
                except LeaseLostError:
                    return
            left = lease.valid_until - self.manager.monotonic()
            # After a failure retry sooner, and wake at the expiry at the latest.
            delay = self.interval_s if renewed else max(0.0, min(self.interval_s / 4, left))

    def _mark_lost(self, lease: Lease, why: str) -> None:
        with self._lock:
            if self._lost_why:
                return
            self._lost_why = why or "lost"
        _log.warning("lost the lease %s (generation %d): %s", lease.key, lease.generation, why)
        try:
            if self._on_lost is not None:
                self._on_lost(lease)
        finally:
            self.lost.set()  # after on_lost: whoever waits on it sees the callback's effects

    def _lost_error(self, lease: Lease, why: str | None = None) -> LeaseLostError:
        with self._lock:
            why = why or self._lost_why or "lost"
        return LeaseLostError(
            f"the lease {lease.key} (generation {lease.generation}) is no longer ours: {why}",
            "nothing to fix here: another holder owns the work now; these results are dropped",
        )
