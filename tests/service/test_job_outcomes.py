"""``sslmem_jobs_total{outcome="taken_over"}``: a version scored after taking over a stalled lease.

The lease manager flags a claim that replaced another holder's unreleased lease
(:attr:`~sslmem.coordination.lease.Lease.taken_over`); the worker counts a job scored under such
a claim ``taken_over`` (:func:`~sslmem.service.worker.job_outcome`). Real lease objects in a
local conditional store; expiry by an injected monotonic clock (the observer's own).
"""

from __future__ import annotations

from pathlib import Path

from sslmem.coordination.conditional_store import LocalConditionalStore
from sslmem.coordination.lease import LeaseManager, LeaseObservations
from sslmem.data.store import LocalStore
from sslmem.service.metrics import JOB_OUTCOMES
from sslmem.service.worker import job_outcome


def test_job_outcome_of_a_score_result() -> None:
    assert job_outcome("scored", taken_over=False) == "scored"
    assert job_outcome("scored", taken_over=True) == "taken_over"
    for outcome in ("failed", "busy", "lost", "skipped"):
        assert job_outcome(outcome, taken_over=True) == outcome  # only a score counts as one
        assert outcome in JOB_OUTCOMES
    # Another team's model: counted as a skipped job, never a label of its own.
    assert "ignored" not in JOB_OUTCOMES
    assert job_outcome("ignored", taken_over=False) == "skipped"
    assert job_outcome("something new", taken_over=False) == "skipped"  # never a new label


def test_a_claim_that_takes_over_a_stalled_lease_is_flagged_a_fresh_or_released_one_not(
    tmp_path: Path,
) -> None:
    store = LocalConditionalStore(LocalStore(tmp_path))
    stalled = LeaseManager(store, "stalled", 10, observations=LeaseObservations())
    first = stalled.acquire("leases/k")
    assert first is not None and not first.taken_over  # a fresh key
    now = [0.0]
    other = LeaseManager(
        store, "other", 10, monotonic=lambda: now[0], observations=LeaseObservations()
    )
    assert other.acquire("leases/k") is None  # first sight starts the observer's timer
    now[0] = 10.5  # unchanged for a TTL of the observer's own clock
    taken = other.acquire("leases/k")
    assert taken is not None and taken.taken_over and taken.generation == 2
    assert other.release(taken)
    again = stalled.acquire("leases/k")
    assert again is not None and not again.taken_over  # a released key is no take-over
    assert again.generation == 3
