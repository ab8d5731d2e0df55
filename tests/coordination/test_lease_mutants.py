"""Fast unit tests that kill mutants mutmut found alive in ``sslmem.coordination.lease``.

Each test pins one behaviour of the lease that no other fast test did: how long a reader's
per-key timer runs and what it forgets (:class:`LeaseObservations`), take-over details of
``acquire`` (generations, TTLs of older records, the exact expiry instant, ``taken_over``,
``valid_until``), and the exact reason a lost lease gives (docs/service.md#mutation-testing).
All run on a local directory store with injected clocks, in well under a second each.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from sslmem.config import RuntimeSettings
from sslmem.coordination.conditional_store import ConditionalStore
from sslmem.coordination.lease import (
    Lease,
    LeaseManager,
    LeaseObservations,
    LeaseRecord,
    LeaseRenewer,
    open_lease_manager,
)
from sslmem.coordination.settings import LeaseSettings
from sslmem.errors import LeaseLostError, StoreError
from tests.coordination.helpers import FakeClock, local_store

KEY = "leases/k"
DROPPED = "nothing to fix here: another holder owns the work now; these results are dropped"


def lost_problem(why: str, key: str = KEY, generation: int = 1) -> str:
    """The problem a :class:`LeaseLostError` states, as docs/service.md shows operators."""
    return f"the lease {key} (generation {generation}) is no longer ours: {why}"


def manager(
    store: ConditionalStore, holder: str, mono: FakeClock, *, ttl_s: float = 10.0
) -> LeaseManager:
    return LeaseManager(store, holder, ttl_s, monotonic=mono, observations=LeaseObservations())


# --- LeaseObservations: one timer per key, restarted by a new etag, bounded -------------------


def test_observations_time_one_etag_per_key_and_restart_on_a_new_one() -> None:
    seen = LeaseObservations()
    assert seen.unchanged_for("k", "e1", 100.0) == 0.0  # first sight starts the timer
    assert seen.unchanged_for("k", "e1", 102.5) == 2.5
    assert seen.unchanged_for("other", "e1", 103.0) == 0.0  # timers are per key
    assert seen.unchanged_for("k", "e1", 99.0) == 0.0  # never negative
    assert seen.unchanged_for("k", "e2", 104.0) == 0.0  # the object changed: restart
    assert seen.unchanged_for("k", "e2", 104.5) == 0.5
    assert seen.unchanged_for("k", "e1", 105.0) == 0.0  # and changed back: restart again


def test_observations_forget_the_oldest_keys_beyond_the_bound() -> None:
    seen = LeaseObservations(max_keys=2)
    seen.unchanged_for("a", "e", 0.0)
    seen.unchanged_for("b", "e", 0.0)
    seen.unchanged_for("a", "e2", 1.0)  # a changed: now the newest entry
    seen.unchanged_for("c", "e", 1.0)  # a third key: the oldest (b) is forgotten
    assert seen.unchanged_for("a", "e2", 5.0) == 4.0  # both newer keys are remembered
    assert seen.unchanged_for("c", "e", 5.0) == 4.0
    assert seen.unchanged_for("b", "e", 5.0) == 0.0  # b's timer starts over


def test_forget_restarts_a_keys_timer_and_ignores_unknown_keys() -> None:
    seen = LeaseObservations()
    seen.unchanged_for("k", "e", 0.0)
    seen.forget("never-seen")  # no error
    seen.forget("k")
    assert seen.unchanged_for("k", "e", 7.0) == 0.0


# --- acquire: the paths of a take-over ---------------------------------------------------------


def test_a_reader_watching_two_keys_times_each_separately(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    holder = manager(store, "a", FakeClock())
    assert holder.acquire("leases/x") is not None and holder.acquire("leases/y") is not None
    mono = FakeClock()
    reader = manager(store, "b", mono)
    for _ in range(4):  # alternating looks must not restart each other's timer
        assert reader.acquire("leases/x") is None and reader.acquire("leases/y") is None
        mono.advance(2.5)
    taken_x, taken_y = reader.acquire("leases/x"), reader.acquire("leases/y")
    assert taken_x is not None and taken_y is not None


def test_a_lease_is_taken_over_exactly_when_its_ttl_has_passed(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    assert manager(store, "a", FakeClock()).acquire(KEY) is not None
    mono = FakeClock(50.0)
    reader = manager(store, "b", mono)
    assert reader.acquire(KEY) is None
    mono.advance(10.0)  # exactly the TTL: the holder's valid_until is over, so it is free
    taken = reader.acquire(KEY)
    assert taken is not None and taken.generation == 2 and taken.taken_over is True
    # Provably ours from when the take-over was sent (b-time 60) for one TTL of b's clock.
    assert taken.valid_until == 70.0 and taken.record.ttl_s == 10.0


def test_a_record_without_a_ttl_is_waited_out_with_the_readers_own(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    old = {"holder": "old", "token": "t", "acquired": 1, "expires": 2, "renewals": 0}
    assert store.create(KEY, json.dumps(old).encode()) is not None  # an older version's lease
    mono = FakeClock()
    reader = manager(store, "b", mono, ttl_s=30.0)
    assert reader.acquire(KEY) is None
    mono.advance(29.9)
    assert reader.acquire(KEY) is None  # ttl_s 0 means "unknown", not "expired at once"
    mono.advance(0.1)
    taken = reader.acquire(KEY)
    assert taken is not None and taken.generation == 1 and taken.taken_over is True


def test_a_corrupt_lease_is_taken_over_at_once_as_generation_1(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    assert store.create(KEY, b"{not json") is not None
    mono = FakeClock(5.0)
    taken = manager(store, "a", mono).acquire(KEY)
    assert taken is not None and taken.generation == 1 and taken.taken_over is True
    assert taken.valid_until == 15.0


def test_fresh_and_released_claims_are_not_counted_as_take_overs(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    a = manager(store, "a", FakeClock())
    first = a.acquire(KEY)
    assert first is not None and first.taken_over is False
    assert a.release(first)
    mono = FakeClock(20.0)
    second = manager(store, "b", mono).acquire(KEY)
    assert second is not None and second.taken_over is False and second.generation == 2
    assert second.valid_until == 30.0


class VanishingStore:
    """A real store whose lease is deleted (released and pruned) right after a refused create."""

    def __init__(self, inner: ConditionalStore) -> None:
        self.inner = inner
        self.vanish = False

    def read(self, key: str) -> tuple[bytes, str] | None:
        if self.vanish:
            self.vanish = False
            found = self.inner.read(key)
            assert found is not None and self.inner.delete(key, found[1])
            return None
        return self.inner.read(key)

    def create(self, key: str, data: bytes) -> str | None:
        return self.inner.create(key, data)

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        return self.inner.replace(key, data, etag)

    def delete(self, key: str, etag: str) -> bool:
        return self.inner.delete(key, etag)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)


def test_a_lease_deleted_between_create_and_read_is_claimed_afresh(tmp_path: Path) -> None:
    store = VanishingStore(local_store(tmp_path))
    assert manager(store, "a", FakeClock()).acquire(KEY) is not None
    store.vanish = True  # b's create is refused, then the object is gone when b reads it
    mono = FakeClock(3.0)
    claimed = manager(store, "b", mono).acquire(KEY)
    assert claimed is not None and claimed.record.holder == "b" and claimed.generation == 1
    assert claimed.valid_until == 13.0
    found = store.read(KEY)
    assert found is not None and LeaseRecord.from_bytes(found[0]) == claimed.record


def test_a_take_over_forgets_the_old_lease_and_a_live_one_keeps_its_timer(
    tmp_path: Path,
) -> None:
    store = local_store(tmp_path)
    assert manager(store, "a", FakeClock()).acquire(KEY) is not None
    before = store.read(KEY)
    assert before is not None
    mono = FakeClock()
    seen = LeaseObservations()
    b = LeaseManager(store, "b", 10.0, monotonic=mono, observations=seen)
    assert b.acquire(KEY) is None
    mono.advance(4)
    assert seen.unchanged_for(store.uri(KEY), before[1], mono()) == 4.0  # timed by key URI
    mono.advance(6)
    assert b.acquire(KEY) is not None
    # Ours now: what we saw of the old object is dropped (its timer would start over).
    assert seen.unchanged_for(store.uri(KEY), before[1], mono() + 100) == 0.0


def test_records_with_a_negative_or_infinite_ttl_or_generation_are_not_leases() -> None:
    base = {"holder": "x", "token": "t", "acquired": 1, "expires": 2, "renewals": 0}
    assert LeaseRecord.from_bytes(json.dumps(base).encode()) is not None
    for bad in ({"ttl_s": -1}, {"ttl_s": float("inf")}, {"generation": -1}):
        assert LeaseRecord.from_bytes(json.dumps(base | bad).encode()) is None
    released = LeaseRecord.from_bytes(json.dumps(base | {"released": "yes"}).encode())
    assert released is not None and released.released is False  # only a JSON true releases


def test_open_lease_manager_opens_the_runtime_s3_store() -> None:
    runtime = RuntimeSettings(
        store_uri="s3://leases-bucket/pre",
        s3_endpoint="127.0.0.1:9",
        s3_secure=False,
        s3_access_key="k",
        s3_secret_key="s",
        s3_region="us-east-1",
    )
    settings = LeaseSettings(ttl_s=30.0, renew_s=10.0, holder="r")
    opened = open_lease_manager(settings, runtime)
    # The endpoint comes from the runtime settings, not from the environment.
    assert repr(opened.store) == (
        "S3ConditionalStore(S3Store('s3://leases-bucket/pre/', endpoint='http://127.0.0.1:9'))"
    )


# --- LeaseRenewer: the exact reason a lost lease gives ------------------------------------------


class ClockedStore:
    """A real store whose next renewal runs a hook first (the clock moves during the request)."""

    def __init__(self, inner: ConditionalStore) -> None:
        self.inner = inner
        self.during_replace: list[object] = []
        self.fail_replace = False
        self.fail_writes = False

    def read(self, key: str) -> tuple[bytes, str] | None:
        return self.inner.read(key)

    def create(self, key: str, data: bytes) -> str | None:
        return self.inner.create(key, data)

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        if self.fail_writes:
            raise StoreError("store unavailable")
        while self.during_replace:
            hook = self.during_replace.pop(0)
            assert callable(hook)
            hook()
        if self.fail_replace:
            raise StoreError("store unavailable")
        return self.inner.replace(key, data, etag)

    def delete(self, key: str, etag: str) -> bool:
        return self.inner.delete(key, etag)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)


def held_lease(
    tmp_path: Path,
) -> tuple[ClockedStore, FakeClock, LeaseManager, Lease, LeaseRenewer]:
    """Holder ``a``'s lease on KEY in a clocked store, with a renewer that never wakes itself."""
    store = ClockedStore(local_store(tmp_path))
    mono = FakeClock()
    a = manager(store, "a", mono)
    lease = a.acquire(KEY)
    assert lease is not None
    return store, mono, a, lease, LeaseRenewer(a, lease, interval_s=3600)


def test_a_store_failing_past_the_ttl_during_fence_loses_the_lease_saying_so(
    tmp_path: Path,
) -> None:
    store, mono, _a, _lease, renewer = held_lease(tmp_path)
    store.during_replace.append(lambda: mono.advance(10))  # the request outlives the TTL ...
    store.fail_replace = True  # ... and fails
    why = "the store failed until the TTL passed"
    for _ in range(2):  # the first fence loses it, and every later one says why
        with pytest.raises(LeaseLostError) as caught:
            renewer.fence()
        assert caught.value.problem == lost_problem(why) and caught.value.fix == DROPPED
    assert renewer.lost.is_set()


def test_a_store_error_within_the_ttl_keeps_the_lease(tmp_path: Path) -> None:
    store, mono, _a, lease, renewer = held_lease(tmp_path)
    store.fail_replace = True
    mono.advance(9.9)
    assert renewer.fence() == lease  # not renewed, still provably ours
    assert not renewer.lost.is_set()


def test_a_taken_over_lease_says_so_on_every_later_fence(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    a, mono_b = manager(store, "a", FakeClock()), FakeClock()
    lease = a.acquire(KEY)
    assert lease is not None
    renewer = LeaseRenewer(a, lease, interval_s=3600)
    b = manager(store, "b", mono_b)
    assert b.acquire(KEY) is None
    mono_b.advance(10)
    assert b.acquire(KEY) is not None
    for _ in range(2):
        with pytest.raises(LeaseLostError) as caught:
            renewer.fence()
        assert caught.value.problem == lost_problem("taken over or released")


def test_a_lease_that_expired_while_its_renewal_was_in_flight_is_given_up(
    tmp_path: Path,
) -> None:
    store, mono, a, _lease, renewer = held_lease(tmp_path)

    def expire_meanwhile() -> None:  # another thread notices the TTL passed; then it lands
        mono.advance(10)
        assert renewer.held() is None

    store.during_replace.append(expire_meanwhile)
    for _ in range(2):
        with pytest.raises(LeaseLostError) as caught:
            renewer.fence()
        assert caught.value.problem == lost_problem("not renewed within its TTL")
    # The renewal landed, but a reader may already have taken over: it is released at once.
    assert a.current(KEY) is None


def test_a_late_renewal_whose_release_fails_still_loses_the_lease(tmp_path: Path) -> None:
    store, mono, a, _lease, renewer = held_lease(tmp_path)

    def expire_then_fail_writes() -> None:
        mono.advance(10)
        assert renewer.held() is None

    store.during_replace.append(expire_then_fail_writes)
    real_replace = store.inner.replace

    def land_then_fail(key: str, data: bytes, etag: str) -> str | None:
        result = real_replace(key, data, etag)
        store.fail_writes = True  # the release that follows cannot reach the store
        return result

    store.inner.replace = land_then_fail  # type: ignore[method-assign]
    with pytest.raises(LeaseLostError) as caught:
        renewer.fence()
    assert caught.value.problem == lost_problem("not renewed within its TTL")
    found = a.current(KEY)  # still there (it expires by its TTL), renewed once
    assert found is not None and found[0] is not None and found[0].renewals == 1


def test_a_renewal_writes_the_renewing_managers_ttl_which_readers_then_wait(
    tmp_path: Path,
) -> None:
    # The holder's valid_until is sent + *its* TTL, so the record must say that TTL: a reader
    # waiting a shorter one could take over while the holder still believes it holds the lease.
    store = local_store(tmp_path)
    mono_a = FakeClock()
    lease = manager(store, "a", mono_a, ttl_s=10.0).acquire(KEY)
    assert lease is not None
    renewed = manager(store, "a", mono_a, ttl_s=30.0).renew(lease)  # reconfigured holder
    assert renewed is not None and renewed.record.ttl_s == 30.0 and renewed.valid_until == 1030.0
    mono_b = FakeClock()
    reader = manager(store, "b", mono_b, ttl_s=10.0)
    assert reader.acquire(KEY) is None
    mono_b.advance(29.9)
    assert reader.acquire(KEY) is None
    mono_b.advance(0.1)
    assert reader.acquire(KEY) is not None


def test_stop_releases_by_default_and_the_renewer_thread_is_a_named_daemon(
    tmp_path: Path,
) -> None:
    store = local_store(tmp_path)
    a = manager(store, "a", FakeClock())
    lease = a.acquire(KEY)
    assert lease is not None
    renewer = LeaseRenewer(a, lease, interval_s=3600).start()
    threads = [t for t in threading.enumerate() if t.name == f"lease-renewer:{KEY}"]
    # Named after its lease (thread dumps); a daemon, so it never keeps a process from exiting.
    assert len(threads) == 1 and threads[0].daemon is True
    assert renewer.stop() is True
    assert a.current(KEY) is None  # released: the next claim takes it at once
