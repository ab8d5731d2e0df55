"""Clock-independent expiry, generations and fencing, with injected monotonic clocks.

Each test runs on a local directory and on SeaweedFS (the ``store`` fixture). Expiry is judged
only by the reader's monotonic clock and the lease object's etag; the holder's safety by its own
monotonic clock. Wall clocks are set absurdly wrong on purpose: they must not matter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from sslmem.coordination.conditional_store import ConditionalStore
from sslmem.coordination.lease import (
    Lease,
    LeaseManager,
    LeaseObservations,
    LeaseRecord,
    LeaseRenewer,
)
from sslmem.coordination.settings import LeaseSettings
from sslmem.errors import LeaseLostError, StoreError
from tests.coordination.helpers import FakeClock

KEY = "leases/k"


def manager(
    store: ConditionalStore,
    holder: str,
    mono: FakeClock,
    *,
    ttl_s: float = 10.0,
    seen: LeaseObservations | None = None,
    wall: Callable[[], float] = lambda: 0.0,
) -> LeaseManager:
    """A "replica": its own observations (a fresh process) unless shared, a fake monotonic."""
    return LeaseManager(
        store,
        holder,
        ttl_s,
        clock=wall,
        monotonic=mono,
        observations=LeaseObservations() if seen is None else seen,
    )


def test_wall_clocks_never_decide_expiry(store: ConditionalStore) -> None:
    # The holder's wall clock says 1970, the reader's says year 2286: with wall-clock expiry the
    # lease would look expired for centuries. Only the reader's monotonic time counts.
    a = manager(store, "a", FakeClock(), wall=lambda: 0.0)
    mono_b = FakeClock()
    b = manager(store, "b", mono_b, wall=lambda: 1e10)
    assert a.acquire(KEY) is not None
    assert b.acquire(KEY) is None
    mono_b.advance(9.99)
    assert b.acquire(KEY) is None
    mono_b.advance(0.02)
    taken = b.acquire(KEY)
    assert taken is not None and taken.record.holder == "b"


def test_a_restarted_reader_waits_one_full_ttl(store: ConditionalStore) -> None:
    a = manager(store, "a", FakeClock())
    assert a.acquire(KEY) is not None
    mono = FakeClock()
    b = manager(store, "b", mono)
    assert b.acquire(KEY) is None
    mono.advance(11)  # b saw it unchanged for longer than the TTL ...
    restarted = manager(store, "b", mono)  # ... but restarted: what it saw is gone
    assert restarted.acquire(KEY) is None
    mono.advance(9)
    assert restarted.acquire(KEY) is None
    mono.advance(1.1)
    assert restarted.acquire(KEY) is not None


def test_take_over_is_judged_from_the_latest_renewal(store: ConditionalStore) -> None:
    mono_a, mono_b = FakeClock(), FakeClock()
    a, b = manager(store, "a", mono_a), manager(store, "b", mono_b)
    lease = a.acquire(KEY)
    assert lease is not None
    assert b.acquire(KEY) is None  # b sees the first write at b-time 0
    mono_a.advance(8)
    mono_b.advance(8)
    renewed = a.renew(lease)  # a renews within its TTL
    assert renewed is not None
    mono_b.advance(3)  # 11 s since the acquisition, 3 s since the renewal
    assert b.acquire(KEY) is None
    mono_b.advance(6.9)  # b first saw the renewed object at 11: 6.9 s unchanged
    assert b.acquire(KEY) is None
    mono_b.advance(3.2)  # 10.1 s unchanged: expired (20.1 s after b first saw the key)
    taken = b.acquire(KEY)
    assert taken is not None and taken.generation == renewed.generation + 1


def test_the_ttl_written_by_the_holder_is_the_one_readers_wait(store: ConditionalStore) -> None:
    a = manager(store, "a", FakeClock(), ttl_s=100)
    assert a.acquire(KEY) is not None
    mono = FakeClock()
    b = manager(store, "b", mono, ttl_s=10)  # a reader with a shorter TTL of its own
    assert b.acquire(KEY) is None
    mono.advance(50)
    assert b.acquire(KEY) is None
    mono.advance(50.1)
    assert b.acquire(KEY) is not None


def test_generation_counts_every_claim_and_survives_renewals(store: ConditionalStore) -> None:
    mono = FakeClock()
    seen = LeaseObservations()
    a, b = manager(store, "a", mono, seen=seen), manager(store, "b", mono, seen=seen)
    first = a.acquire(KEY)
    assert first is not None and first.generation == 1
    renewed = a.renew(first)
    assert renewed is not None and renewed.generation == 1 and renewed.record.renewals == 1
    assert a.release(renewed)
    assert a.current(KEY) is None  # released: no live lease ...
    second = b.acquire(KEY)  # ... so it is claimed at once, with the next generation
    assert second is not None and second.generation == 2
    assert a.acquire(KEY) is None
    mono.advance(10.1)
    third = a.acquire(KEY)  # a take-over
    assert third is not None and third.generation == 3
    stored = a.current(KEY)
    assert stored is not None and stored[0] is not None and stored[0].generation == 3


def test_holder_is_safe_until_its_last_renewal_was_sent_plus_ttl(
    store: ConditionalStore,
) -> None:
    mono = FakeClock()
    a = manager(store, "a", mono)
    lease = a.acquire(KEY)
    assert lease is not None and lease.valid_until == pytest.approx(1010.0)
    mono.advance(4)
    renewed = a.renew(lease)
    assert renewed is not None and renewed.valid_until == pytest.approx(1014.0)


class Switch:
    """A real store whose writes can be made to fail, counting the attempts."""

    def __init__(self, inner: ConditionalStore) -> None:
        self.inner = inner
        self.failing = False
        self.attempts = 0
        self.attempted = threading.Event()

    def read(self, key: str) -> tuple[bytes, str] | None:
        if self.failing:
            raise StoreError("store unavailable")
        return self.inner.read(key)

    def create(self, key: str, data: bytes) -> str | None:
        return self._write(lambda: self.inner.create(key, data))

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        return self._write(lambda: self.inner.replace(key, data, etag))

    def delete(self, key: str, etag: str) -> bool:
        return self.inner.delete(key, etag)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)

    def _write(self, write: Callable[[], str | None]) -> str | None:
        if self.failing:
            self.attempts += 1
            if self.attempts >= 3:
                self.attempted.set()
            raise StoreError("store unavailable")
        return write()


def test_renewer_retries_store_errors_only_until_the_lease_expires(
    store: ConditionalStore,
) -> None:
    switch = Switch(store)
    mono = FakeClock()
    a = LeaseManager(switch, "a", 10, monotonic=mono, observations=LeaseObservations())
    lease = a.acquire(KEY)
    assert lease is not None
    lost: list[Lease] = []
    renewer = LeaseRenewer(a, lease, interval_s=0.02, on_lost=lost.append).start()
    try:
        switch.failing = True
        assert switch.attempted.wait(60)  # it retried several times ...
        assert not renewer.lost.is_set()  # ... and, within the TTL, still holds the lease
        assert renewer.fence() == lease  # still provably ours: fence returns it
        mono.advance(10)  # the TTL passes since the last successful write was sent
        assert renewer.lost.wait(60)  # the renewer itself gives the lease up
        assert len(lost) == 1
        with pytest.raises(LeaseLostError, match="no longer ours"):
            renewer.fence()
    finally:
        switch.failing = False
        assert renewer.stop() is False


def test_fence_renews_now_and_raises_once_taken_over(store: ConditionalStore) -> None:
    mono_a, mono_b = FakeClock(), FakeClock()
    a, b = manager(store, "a", mono_a), manager(store, "b", mono_b)
    lease = a.acquire(KEY)
    assert lease is not None
    renewer = LeaseRenewer(a, lease, interval_s=3600)  # never renews by itself here
    fenced = renewer.fence()
    assert fenced.etag != lease.etag and fenced.record.renewals == 1
    assert renewer.held() == fenced
    # The holder stalls (its own clock barely moves); another replica takes the key over.
    assert b.acquire(KEY) is None
    mono_b.advance(10.1)
    taken = b.acquire(KEY)
    assert taken is not None
    with pytest.raises(LeaseLostError, match="taken over"):
        renewer.fence()
    assert renewer.lost.is_set() and renewer.held() is None
    assert renewer.stop() is False
    found = b.current(KEY)
    assert found is not None and found[0] == taken.record  # the loser changed nothing


def test_fence_raises_after_the_holders_own_ttl_even_if_nobody_took_over(
    store: ConditionalStore,
) -> None:
    mono = FakeClock()
    a = manager(store, "a", mono)
    lease = a.acquire(KEY)
    assert lease is not None
    renewer = LeaseRenewer(a, lease, interval_s=3600)
    mono.advance(10)  # paused past its TTL: a reader may have taken over by now
    assert renewer.held() is None
    with pytest.raises(LeaseLostError, match="within its TTL"):
        renewer.fence()
    renewer.stop()


def test_records_of_older_versions_and_odd_bodies_parse_safely() -> None:
    old = b'{"holder": "x", "token": "t", "acquired": 1, "expires": 2, "renewals": 3}'
    record = LeaseRecord.from_bytes(old)
    assert record is not None and (record.generation, record.ttl_s, record.released) == (
        0,
        0,
        False,
    )
    for bad in (b"[]", b'{"holder": 1}', b"\xff", b'{"ttl_s": "nan"}'):
        assert LeaseRecord.from_bytes(bad) is None
    nan_ttl = old[:-1] + b', "ttl_s": NaN}'
    assert LeaseRecord.from_bytes(nan_ttl) is None


def test_lease_settings_refuse_a_renewal_slower_than_half_the_ttl() -> None:
    with pytest.raises(ValueError, match="at most half"):
        LeaseSettings(ttl_s=60, renew_s=40)
    settings = LeaseSettings(ttl_s=60, renew_s=20, holder="r1")
    assert (settings.prefix, settings.holder) == ("leases", "r1")


def test_managers_of_one_process_share_what_they_saw(store: ConditionalStore) -> None:
    # The pipeline's polling loop opens a new manager per attempt: the timer must survive that.
    holder = manager(store, "dead", FakeClock())
    assert holder.acquire(KEY) is not None
    mono = FakeClock()
    assert LeaseManager(store, "poller", 10, monotonic=mono).acquire(KEY) is None
    mono.advance(10.1)
    taken = LeaseManager(store, "poller", 10, monotonic=mono).acquire(KEY)
    assert taken is not None and taken.record.holder == "poller"
