"""Leases on a real S3 server (SeaweedFS) and on a local directory: one winner, always."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sslmem.config import RuntimeSettings
from sslmem.coordination.conditional_store import (
    ConditionalStore,
    LocalConditionalStore,
    open_conditional_store,
)
from sslmem.coordination.lease import (
    Lease,
    LeaseManager,
    LeaseObservations,
    LeaseRecord,
    LeaseRenewer,
    version_lease_key,
)
from sslmem.errors import LeaseLostError, StoreError, StoreUnavailableError
from tests.coordination.helpers import FakeClock, race


def test_16_contenders_30_keys_exactly_one_winner_each(store: ConditionalStore) -> None:
    keys = [version_lease_key("enc/odd name", v) for v in range(30)]
    wins: list[tuple[str, str]] = []
    lock = threading.Lock()

    def contend(i: int) -> None:
        manager = LeaseManager(store, f"replica-{i}", ttl_s=60)
        for key in keys:
            lease = manager.acquire(key)
            if lease is not None:
                with lock:
                    wins.append((key, lease.record.holder))

    race(16, contend)
    per_key = Counter(key for key, _ in wins)
    assert sorted(per_key) == sorted(keys) and set(per_key.values()) == {1}
    for key, holder in wins:  # the stored lease names the winner
        found = LeaseManager(store, "observer", 60).current(key)
        assert found is not None and found[0] is not None and found[0].holder == holder


def test_live_lease_is_not_taken(store: ConditionalStore) -> None:
    a = LeaseManager(store, "a", ttl_s=60)
    b = LeaseManager(store, "b", ttl_s=60)
    lease = a.acquire("leases/k")
    assert lease is not None and lease.record.holder == "a"
    assert b.acquire("leases/k") is None
    assert a.acquire("leases/k") is None  # a second claim by the same holder is refused too


def test_renew_moves_expiry_and_a_stale_etag_is_refused(store: ConditionalStore) -> None:
    now = [1000.0]
    manager = LeaseManager(store, "a", ttl_s=30, clock=lambda: now[0])
    first = manager.acquire("leases/k")
    assert first is not None and first.record.expires == 1030.0
    now[0] = 1010.0
    second = manager.renew(first)
    assert second is not None and second.etag != first.etag
    assert (second.record.expires, second.record.renewals) == (1040.0, 1)
    assert manager.renew(first) is None  # stale etag
    found = manager.current("leases/k")
    assert found is not None and found[0] == second.record  # untouched by the refused renew


def test_expired_lease_taken_over_by_exactly_one(store: ConditionalStore) -> None:
    holder = LeaseManager(store, "dead", ttl_s=10, observations=LeaseObservations())
    lease = holder.acquire("leases/k")
    assert lease is not None and lease.generation == 1
    # Expiry is judged by the readers' monotonic clock: 10 s of it with the object unchanged.
    mono, seen = FakeClock(), LeaseObservations()
    early = LeaseManager(store, "early", 10, monotonic=mono, observations=seen)
    assert early.acquire("leases/k") is None  # first sight starts the timer
    mono.advance(9.9)
    assert early.acquire("leases/k") is None
    mono.advance(0.2)
    # After expiry, 8 contenders race: exactly one wins.
    winners: list[Lease] = []

    def take(i: int) -> None:
        contender = LeaseManager(store, f"c{i}", 10, monotonic=mono, observations=seen)
        got = contender.acquire("leases/k")
        if got is not None:
            winners.append(got)

    race(8, take)
    assert len(winners) == 1 and winners[0].generation == 2
    found = holder.current("leases/k")
    assert found is not None and found[0] == winners[0].record
    # The old holder learns it lost: renew and release are refused and change nothing.
    assert holder.renew(lease) is None
    assert holder.release(lease) is False
    assert holder.current("leases/k") == found


def test_release_only_by_the_holder(store: ConditionalStore) -> None:
    a = LeaseManager(store, "a", ttl_s=60)
    lease = a.acquire("leases/k")
    assert lease is not None
    renewed = a.renew(lease)
    assert renewed is not None
    forged = Lease("leases/k", LeaseRecord("b", "t", 0, 0), "not-an-etag")
    assert a.release(forged) is False
    assert a.release(lease) is False  # our own stale etag
    assert a.current("leases/k") is not None
    assert a.release(renewed) is True
    assert a.current("leases/k") is None
    again = LeaseManager(store, "b", ttl_s=60).acquire("leases/k")
    assert again is not None and again.record.holder == "b"


def test_corrupt_lease_can_be_taken_over(store: ConditionalStore) -> None:
    assert store.create("leases/k", b"{not json") is not None
    lease = LeaseManager(store, "a", ttl_s=60).acquire("leases/k")
    assert lease is not None and lease.record.holder == "a"


class FlakyAfterWrite:
    """A real store whose next write lands on the server but reports a failure (a timeout)."""

    def __init__(self, inner: ConditionalStore) -> None:
        self.inner = inner
        self.fail_next = False
        self.fail_before = False

    def read(self, key: str) -> tuple[bytes, str] | None:
        return self.inner.read(key)

    def create(self, key: str, data: bytes) -> str | None:
        return self._flaky(lambda: self.inner.create(key, data))

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        return self._flaky(lambda: self.inner.replace(key, data, etag))

    def delete(self, key: str, etag: str) -> bool:
        return self.inner.delete(key, etag)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)

    def _flaky(self, write: Callable[[], str | None]) -> str | None:
        if self.fail_before:  # nothing reaches the server
            raise StoreError("connection refused")
        result = write()
        if self.fail_next:
            self.fail_next = False
            raise StoreError("read timed out")
        return result


def test_ambiguous_write_is_resolved_by_reading_back(store: ConditionalStore) -> None:
    flaky = FlakyAfterWrite(store)
    manager = LeaseManager(flaky, "a", ttl_s=60)
    flaky.fail_next = True
    lease = manager.acquire("leases/k")
    assert lease is not None  # the create landed: it is ours
    flaky.fail_next = True
    renewed = manager.renew(lease)
    assert renewed is not None and renewed.record.renewals == 1
    # A failure with nothing written stays an error, and the stored lease is unchanged.
    flaky.fail_before = True
    with pytest.raises(StoreError, match="connection refused"):
        manager.renew(renewed)
    found = manager.current("leases/k")
    assert found is not None and found[0] == renewed.record


def test_renewer_keeps_the_lease_and_signals_loss(store: ConditionalStore) -> None:
    manager = LeaseManager(store, "a", ttl_s=60)
    lease = manager.acquire("leases/k")
    assert lease is not None
    lost: list[Lease] = []
    renewer = LeaseRenewer(manager, lease, interval_s=0.05, on_lost=lost.append).start()
    deadline = time.monotonic() + 30
    while (held := renewer.held()) is not None and held.record.renewals < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # Someone else takes the key over behind the renewer's back.
    current = manager.current("leases/k")
    assert current is not None
    thief = LeaseRecord("thief", "t", 0, 1e12)
    while store.replace("leases/k", thief.to_bytes(), current[1]) is None:
        current = manager.current("leases/k")  # the renewer moved the etag meanwhile
        assert current is not None
    assert renewer.lost.wait(30)
    assert renewer.held() is None and len(lost) == 1
    assert renewer.stop() is False
    found = manager.current("leases/k")
    assert found is not None and found[0] == thief  # the loser deleted nothing


def test_renewer_stop_releases(store: ConditionalStore) -> None:
    manager = LeaseManager(store, "a", ttl_s=60)
    lease = manager.acquire("leases/k")
    assert lease is not None
    with LeaseRenewer(manager, lease, interval_s=10) as renewer:
        assert renewer.held() == lease
    assert manager.current("leases/k") is None


def test_local_stale_generation_after_pruning_is_refused(tmp_path: Path) -> None:
    store = open_conditional_store(tmp_path, RuntimeSettings())
    assert isinstance(store, LocalConditionalStore)
    etag = store.create("k", b"v1")
    assert etag == "g1"
    for i in range(2, 6):
        etag = store.replace("k", f"v{i}".encode(), etag or "")
    assert etag == "g5"
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [f"g{4:020d}", f"g{5:020d}"]
    # g2 was pruned: a writer still holding etag g1 recreates g2 but must not win.
    assert store.replace("k", b"stale", "g1") is None
    assert store.read("k") == (b"v5", "g5")


def test_local_rejects_bad_keys(tmp_path: Path) -> None:
    store = open_conditional_store(tmp_path, RuntimeSettings())
    with pytest.raises(StoreError, match="invalid object key"):
        store.create("../escape", b"x")


def test_version_lease_key_is_one_safe_segment() -> None:
    assert version_lease_key("team/enc v2", "7") == "leases/model-versions/team%2Fenc%20v2/7"


def test_unreachable_s3_is_a_store_error_without_credentials() -> None:
    from tests.servers import free_port

    settings = RuntimeSettings(
        s3_endpoint=f"127.0.0.1:{free_port()}",
        s3_access_key="AKEXAMPLEACCESSKEY",  # type: ignore[arg-type]
        s3_secret_key="example-secret-key",  # type: ignore[arg-type]
        s3_secure=False,
        s3_region="us-east-1",
        store_retries=0,
    )
    store = open_conditional_store("s3://bucket-x/leases", settings)
    with pytest.raises(StoreUnavailableError) as info:  # transient: retried, never a verdict
        LeaseManager(store, "a", ttl_s=60).acquire("k")
    text = f"{info.value}\n{info.value.__cause__!r}\n{info.value.__context__!r}"
    assert "127.0.0.1" in text
    for leak in ("AKEXAMPLEACCESSKEY", "example-secret-key", "X-Amz-Signature"):
        assert leak not in text


def test_a_closed_fence_refuses_later_fences_and_the_lease_stays_ours_to_release(
    store: ConditionalStore,
) -> None:
    manager = LeaseManager(store, "a", ttl_s=60)
    lease = manager.acquire("leases/k")
    assert lease is not None
    renewer = LeaseRenewer(manager, lease, interval_s=10)
    assert renewer.publishing is False
    renewer.fence()  # not part of a result set
    assert renewer.publishing is False
    renewer.fence(publishing=True)
    assert renewer.publishing is True
    assert renewer.close_unless_publishing("shutting down") is False  # a result set is open
    renewer.fence()  # still passes: the result set goes on
    assert renewer.publishing is True  # a plain fence does not end it
    renewer.end_publishing()
    assert renewer.publishing is False
    assert renewer.close_unless_publishing("shutting down") is True
    with pytest.raises(LeaseLostError, match=r"is no longer ours: shutting down\n"):
        renewer.fence(publishing=True)
    assert renewer.publishing is False  # a refused fence opens nothing
    assert renewer.held() is not None  # closed, not lost
    assert not renewer.stopped.is_set()
    assert renewer.stop(release=True) is True
    assert renewer.stopped.is_set()
    assert manager.current("leases/k") is None


def test_a_fence_closed_without_a_reason_says_closed(store: ConditionalStore) -> None:
    manager = LeaseManager(store, "a", ttl_s=60)
    lease = manager.acquire("leases/k")
    assert lease is not None
    renewer = LeaseRenewer(manager, lease, interval_s=10)
    assert renewer.close_unless_publishing("") is True
    with pytest.raises(LeaseLostError, match=r"is no longer ours: closed\n"):
        renewer.fence()
    renewer.stop(release=True)
