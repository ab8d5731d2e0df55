"""Fast unit tests that kill mutants mutmut found alive in the coordination modules.

Each test states a behaviour of the lease or delivery ledger that no other fast test pinned
(docs/service.md#mutation-testing); all run on a local directory store in well under a second.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from sslmem.config import RuntimeSettings
from sslmem.coordination.conditional_store import ConditionalStore
from sslmem.coordination.deliveries import DeliveryLedger
from sslmem.coordination.lease import (
    Lease,
    LeaseManager,
    LeaseObservations,
    LeaseRenewer,
    open_lease_manager,
)
from sslmem.coordination.settings import LeaseSettings
from sslmem.errors import LeaseLostError
from tests.coordination.helpers import FakeClock, local_store
from tests.coordination.test_expiry import Switch
from tests.coordination.test_lease import FlakyAfterWrite

KEY = "leases/k"


class HangingStore:
    """A real store whose ``replace`` (a renewal) blocks until released: a stuck request."""

    def __init__(self, inner: ConditionalStore) -> None:
        self.inner = inner
        self.hang = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def read(self, key: str) -> tuple[bytes, str] | None:
        return self.inner.read(key)

    def create(self, key: str, data: bytes) -> str | None:
        return self.inner.create(key, data)

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        if self.hang:
            self.entered.set()
            self.release.wait(60)
        return self.inner.replace(key, data, etag)

    def delete(self, key: str, etag: str) -> bool:
        return self.inner.delete(key, etag)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)


def test_fence_gives_the_lease_up_when_a_renewal_hangs_until_its_expiry(tmp_path: Path) -> None:
    store = HangingStore(local_store(tmp_path))
    # valid_until is 0.2 s of real waiting ahead on the injected clock: fence waits that long for
    # the stuck renewal, then must count the lease lost rather than wait for the request.
    mono = FakeClock()
    manager = LeaseManager(store, "a", 10, monotonic=mono, observations=LeaseObservations())
    lease = manager.acquire(KEY)
    assert lease is not None
    lost: list[Lease] = []
    renewer = LeaseRenewer(manager, lease, interval_s=0.01, on_lost=lost.append)
    mono.advance(10 - 0.2)
    store.hang = True

    # Unblock the stuck request only once the lease was given up (or after a minute at worst:
    # then fence returned without giving up and the assertions below fail).
    def unblock_once_lost() -> None:
        renewer.lost.wait(60)
        store.release.set()

    watcher = threading.Thread(target=unblock_once_lost)
    renewer.start()
    try:
        assert store.entered.wait(60)  # the background renewal is stuck holding the renew lock
        watcher.start()
        why = f"the lease {KEY} (generation 1) is no longer ours: not renewed within its TTL"
        for _ in range(2):  # the fence that gives it up, and every later one, say why
            with pytest.raises(LeaseLostError) as caught:
                renewer.fence()
            assert caught.value.problem == why
        assert lost == [lease]  # on_lost got the lease that was lost
        assert renewer.lost.is_set() and renewer.held() is None
    finally:
        store.release.set()
        watcher.join()
        renewer.stop()


def test_from_settings_takes_holder_and_ttl_from_the_lease_settings(tmp_path: Path) -> None:
    settings = LeaseSettings(prefix="p", ttl_s=42.0, renew_s=7.0, holder="replica-9")
    mono = FakeClock(5.0)
    seen = LeaseObservations()
    manager = LeaseManager.from_settings(
        local_store(tmp_path), settings, monotonic=mono, observations=seen
    )
    assert (manager.holder, manager.ttl_s) == ("replica-9", 42.0)
    assert manager.monotonic is mono and manager.observations is seen
    lease = manager.acquire(KEY)
    assert lease is not None and lease.record.holder == "replica-9"
    assert lease.record.ttl_s == 42.0 and lease.valid_until == 47.0


def test_open_lease_manager_uses_the_runtime_store(tmp_path: Path) -> None:
    settings = LeaseSettings(ttl_s=30.0, renew_s=10.0, holder="pipeline-run-1")
    runtime = RuntimeSettings(store_uri=str(tmp_path / "store"))
    manager = open_lease_manager(settings, runtime)
    assert (manager.holder, manager.ttl_s) == ("pipeline-run-1", 30.0)
    lease = manager.acquire(KEY)
    assert lease is not None
    # The lease object lives in the runtime's store, where another manager on it sees it.
    other = LeaseManager(local_store(tmp_path / "store"), "b", 30.0)
    found = other.current(KEY)
    assert found is not None and found[0] is not None and found[0].holder == "pipeline-run-1"


def test_release_writes_a_released_record_stamped_at_release_time(tmp_path: Path) -> None:
    wall = FakeClock(1_000.0)
    manager = LeaseManager(local_store(tmp_path), "a", 60, clock=wall)
    lease = manager.acquire(KEY)
    assert lease is not None and lease.record.expires == 1_060.0
    wall.advance(5)
    assert manager.release(lease)
    raw = manager.store.read(KEY)
    assert raw is not None
    body = json.loads(raw[0])
    assert body["released"] is True and body["expires"] == 1_005.0  # for humans: when it ended


class NoListingStore(HangingStore):
    """A conditional store without ``keys`` (no listing)."""


def test_prune_on_a_store_without_listing_deletes_nothing(tmp_path: Path) -> None:
    inner = local_store(tmp_path)
    wall = FakeClock(1_000_000.0)
    ledger = DeliveryLedger(NoListingStore(inner), "leases", ttl_s=10, clock=wall)
    assert not hasattr(ledger.store, "keys")
    assert ledger.first_seen("d-1")
    wall.advance(1_000)
    assert ledger.prune() == 0
    assert inner.read(ledger.key("d-1")) is not None


def test_prune_keeps_a_marker_exactly_twice_the_ttl_old(tmp_path: Path) -> None:
    wall = FakeClock(1_000_000.0)
    ledger = DeliveryLedger(local_store(tmp_path), "leases", ttl_s=100, clock=wall)
    assert ledger.first_seen("d-1")
    wall.advance(200)  # exactly 2 TTL: not yet past it
    assert ledger.prune() == 0
    wall.advance(1)
    assert ledger.prune() == 1


def test_an_ambiguous_release_is_resolved_by_reading_back(tmp_path: Path) -> None:
    flaky = FlakyAfterWrite(local_store(tmp_path))
    manager = LeaseManager(flaky, "a", ttl_s=60)
    lease = manager.acquire(KEY)
    assert lease is not None
    flaky.fail_next = True  # the release lands, then the answer is lost
    assert manager.release(lease) is True
    assert manager.current(KEY) is None  # released: free for the next claim
    assert LeaseManager(flaky, "b", ttl_s=60).acquire(KEY) is not None


def test_a_lease_lost_to_a_store_outage_says_so(tmp_path: Path) -> None:
    switch = Switch(local_store(tmp_path))
    mono = FakeClock()
    manager = LeaseManager(switch, "a", 10, monotonic=mono, observations=LeaseObservations())
    lease = manager.acquire(KEY)
    assert lease is not None
    renewer = LeaseRenewer(manager, lease, interval_s=0.01)
    switch.failing = True
    mono.advance(10)  # the store fails until the TTL has passed
    renewer.start()
    try:
        assert renewer.lost.wait(60)
        # The operator reads why: an outage, not a take-over and not a stalled holder.
        with pytest.raises(LeaseLostError) as caught:
            renewer.fence()
        assert caught.value.problem == (
            f"the lease {KEY} (generation 1) is no longer ours: "
            "the store failed until the TTL passed"
        )
    finally:
        switch.failing = False
        renewer.stop()


def test_zero_intervals_and_ttls_are_refused_with_their_name(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    with pytest.raises(ValueError, match=r"^ttl_s must be > 0$"):
        LeaseManager(store, "a", 0)
    manager = LeaseManager(store, "a", 10)
    lease = manager.acquire(KEY)
    assert lease is not None
    with pytest.raises(ValueError, match=r"^interval_s must be > 0$"):
        LeaseRenewer(manager, lease, interval_s=0)
    with pytest.raises(ValueError, match=r"^ttl_s must be > 0$"):
        DeliveryLedger(store, "leases", ttl_s=0)


def test_a_lost_lease_error_tells_the_reader_the_results_are_dropped(tmp_path: Path) -> None:
    mono = FakeClock()
    manager = LeaseManager(local_store(tmp_path), "a", 10, monotonic=mono)
    lease = manager.acquire(KEY)
    assert lease is not None
    renewer = LeaseRenewer(manager, lease, interval_s=1)
    mono.advance(10)
    with pytest.raises(LeaseLostError) as caught:
        renewer.fence()
    assert caught.value.fix is not None and "results are dropped" in caught.value.fix
    assert caught.value.problem.endswith(
        f"{KEY} (generation 1) is no longer ours: not renewed within its TTL"
    )


class Eventful(FlakyAfterWrite):
    """Also: the marker vanishes (pruned) between a refused create and the read that follows."""

    def __init__(self, inner: ConditionalStore) -> None:
        super().__init__(inner)
        self.vanish_on_read = False
        self.lose_answer_after_vanishing = False
        self.lose_replace_answer = False

    def read(self, key: str) -> tuple[bytes, str] | None:
        if self.vanish_on_read:
            self.vanish_on_read = False
            found = self.inner.read(key)
            assert found is not None
            assert self.inner.delete(key, found[1])
            self.fail_next = self.lose_answer_after_vanishing
            return None
        return self.inner.read(key)

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        self.fail_next = self.lose_replace_answer
        return super().replace(key, data, etag)


@pytest.mark.parametrize("answer_lost", [False, True], ids=["plain", "answer-lost"])
def test_a_marker_pruned_between_create_and_read_is_decided_by_one_more_create(
    tmp_path: Path, answer_lost: bool
) -> None:
    store = Eventful(local_store(tmp_path))
    wall = FakeClock(1_000_000.0)
    ledger = DeliveryLedger(store, "leases", ttl_s=100, clock=wall)
    assert ledger.first_seen("d-1")
    store.vanish_on_read = True  # the create is refused, then the marker is gone
    store.lose_answer_after_vanishing = (
        answer_lost  # ... and the second create lands but its answer is lost
    )
    assert ledger.first_seen("d-1") is True
    assert store.read(ledger.key("d-1")) is not None
    assert ledger.first_seen("d-1") is False


def test_ambiguous_marker_writes_are_resolved_by_reading_back(tmp_path: Path) -> None:
    store = Eventful(local_store(tmp_path))
    wall = FakeClock(1_000_000.0)
    ledger = DeliveryLedger(store, "leases", ttl_s=100, clock=wall)
    store.fail_next = True  # the create lands, its answer is lost
    assert ledger.first_seen("d-1") is True
    assert ledger.first_seen("d-1") is False
    wall.advance(101)  # the marker is past its TTL: replaced, again with the answer lost
    store.lose_replace_answer = True
    assert ledger.first_seen("d-1") is True
    assert ledger.first_seen("d-1") is False


@pytest.mark.parametrize("body", [b"[]", b"{}", b'"text"', b'{"seen": "abc"}', b'{"seen": null}'])
def test_an_unreadable_marker_counts_as_seen_and_never_raises(tmp_path: Path, body: bytes) -> None:
    store = local_store(tmp_path)
    ledger = DeliveryLedger(store, "leases", ttl_s=100)
    assert store.create(ledger.key("d-1"), body) is not None
    assert ledger.first_seen("d-1") is False


def test_ledger_keys_accept_any_id_and_a_slashed_prefix(tmp_path: Path) -> None:
    ledger = DeliveryLedger(local_store(tmp_path), "/leases/", ttl_s=0.5)  # any TTL > 0
    assert ledger.key("x").startswith("leases/deliveries/")
    assert ledger.first_seen("\ud800 lone surrogate")  # still one key, no UnicodeEncodeError


class FailingRelease(FlakyAfterWrite):
    """A store that refuses every write with a StoreError once ``fail_before`` is set."""


def test_stop_without_release_keeps_the_lease_and_a_failed_release_says_so(
    tmp_path: Path,
) -> None:
    store = FailingRelease(local_store(tmp_path))
    manager = LeaseManager(store, "a", 60)
    lease = manager.acquire(KEY)
    assert lease is not None
    assert LeaseRenewer(manager, lease, interval_s=30).stop(release=False) is True
    assert manager.current(KEY) is not None  # still held: not released
    store.fail_before = True  # the release cannot reach the store
    assert LeaseRenewer(manager, lease, interval_s=30).stop(release=True) is False
