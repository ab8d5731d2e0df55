"""The delivery ledger: one "first seen" per delivery id across replicas and restarts."""

from __future__ import annotations

import threading
from collections import Counter

from sslmem.coordination.conditional_store import ConditionalStore
from sslmem.coordination.deliveries import DeliveryLedger
from tests.coordination.helpers import FakeClock, race


def test_two_replicas_racing_on_the_same_ids_see_each_exactly_once(
    store: ConditionalStore,
) -> None:
    ids = [f"delivery-{i}" for i in range(20)]
    firsts: list[str] = []
    lock = threading.Lock()

    def replica(i: int) -> None:
        ledger = DeliveryLedger(store, "leases", ttl_s=600)  # one ledger per replica
        for delivery in ids:
            if ledger.first_seen(delivery):
                with lock:
                    firsts.append(delivery)

    race(8, replica)
    assert Counter(firsts) == Counter(ids)  # every id exactly once
    restarted = DeliveryLedger(store, "leases", ttl_s=600)  # a replica after a restart
    assert not any(restarted.first_seen(delivery) for delivery in ids)


def test_a_marker_counts_as_new_only_after_its_ttl(store: ConditionalStore) -> None:
    wall = FakeClock(1_000_000.0)
    a = DeliveryLedger(store, "leases", ttl_s=600, clock=wall)
    b = DeliveryLedger(store, "leases", ttl_s=600, clock=wall)
    assert a.first_seen("d") is True
    wall.advance(600)
    assert b.first_seen("d") is False  # exactly the TTL: still a replay
    wall.advance(1)
    assert b.first_seen("d") is True  # forgotten: new again, for one replica only
    assert a.first_seen("d") is False


def test_an_unreadable_marker_counts_as_seen(store: ConditionalStore) -> None:
    ledger = DeliveryLedger(store, "leases", ttl_s=600)
    assert store.create(ledger.key("d"), b"not json") is not None
    assert ledger.first_seen("d") is False


def test_keys_are_hashed_and_the_id_never_stored(store: ConditionalStore) -> None:
    ledger = DeliveryLedger(store, "leases/", ttl_s=600)
    key = ledger.key("../../etc/passwd secret-id")
    assert key.startswith("leases/deliveries/") and len(key.rsplit("/", 1)[1]) == 64
    assert ledger.first_seen("../../etc/passwd secret-id")
    found = store.read(key)
    assert found is not None and b"secret-id" not in found[0]


def test_prune_deletes_only_markers_past_twice_the_ttl(store: ConditionalStore) -> None:
    wall = FakeClock(1_000_000.0)
    ledger = DeliveryLedger(store, "leases", ttl_s=100, clock=wall)
    for i in range(5):
        assert ledger.first_seen(f"old-{i}")
    wall.advance(150)
    assert ledger.first_seen("young")
    wall.advance(60)  # old: 210 s (> 2 TTL); young: 60 s
    assert ledger.prune(limit=3) == 3
    assert ledger.prune(limit=100) == 2
    assert ledger.prune(limit=100) == 0
    assert store.read(ledger.key("young")) is not None
    assert ledger.first_seen("young") is False
