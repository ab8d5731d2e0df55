"""Fast unit tests of the claim and fence around publishing (sslmem.workflow.score_version).

They kill mutants of the claim code without an MLflow server: the lease lives in a local
directory store (docs/service.md#mutation-testing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sslmem.coordination.lease import LeaseManager, LeaseObservations, version_lease_key
from sslmem.coordination.settings import LeaseSettings
from sslmem.errors import LeaseLostError
from sslmem.workflow.score_version import needs_scoring, score_run_key, version_claim
from tests.coordination.helpers import FakeClock, local_store

SETTINGS = LeaseSettings(prefix="leases", ttl_s=10.0, renew_s=5.0, holder="replica-a")


def manager(tmp_path: Path, holder: str, mono: FakeClock) -> LeaseManager:
    return LeaseManager(
        local_store(tmp_path / "store"),
        holder,
        10.0,
        monotonic=mono,
        observations=LeaseObservations(),
    )


def test_a_claim_is_held_under_the_versions_key_and_released_at_the_end(tmp_path: Path) -> None:
    mono = FakeClock()
    mine, other = manager(tmp_path, "replica-a", mono), manager(tmp_path, "replica-b", mono)
    key = version_lease_key("enc/odd name", "3", "leases")
    claimed: list[object] = []
    with version_claim(
        "enc/odd name", "3", settings=SETTINGS, lease_manager=mine, on_claim=claimed.append
    ) as claim:
        assert claim is not None and claim.generation == 1 and claim.lease.key == key
        assert claimed == [claim.renewer]  # the caller learns the renewer (to stop it early)
        found = other.current(key)
        assert found is not None and found[0] is not None and found[0].holder == "replica-a"
        with version_claim("enc/odd name", "3", settings=SETTINGS, lease_manager=other) as busy:
            assert busy is None  # one claim per version
        fenced = claim.fence()
        assert fenced.record.renewals == 1 and fenced.generation == 1
    assert claimed[-1] is None and claim.still_ours is True
    assert other.current(key) is None  # released: the next claim may take it at once
    with version_claim("enc/odd name", "3", settings=SETTINGS, lease_manager=other) as next_:
        assert next_ is not None and next_.generation == 2


def test_a_claim_whose_lease_expired_fences_and_ends_not_ours(tmp_path: Path) -> None:
    mono = FakeClock()
    mine = manager(tmp_path, "replica-a", mono)
    with version_claim("enc", "4", settings=SETTINGS, lease_manager=mine) as claim:
        assert claim is not None
        mono.advance(10)  # paused past the TTL: another replica may publish now
        with pytest.raises(LeaseLostError):
            claim.fence()
    assert claim.still_ours is False


def test_score_run_key_names_the_version_and_the_generation() -> None:
    assert score_run_key("enc/odd name", "3", 2) == "service/enc%2Fodd%20name/3/g2"
    assert score_run_key("enc", "3", 1) != score_run_key("enc", "3", 2)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({}, True),
        ({"sslmem.status": "pending"}, True),
        ({"sslmem.status": "running"}, True),
        ({"sslmem.status": "training"}, True),
        ({"sslmem.status": "scored"}, False),
        ({"sslmem.status": "failed"}, False),
        ({"sslmem.status": "pending", "sslmem.role": "reference"}, False),
        ({"sslmem.status": "pending", "sslmem.role": "candidate"}, True),
    ],
)
def test_needs_scoring(tags: dict[str, str], expected: bool) -> None:
    assert needs_scoring(tags) is expected
