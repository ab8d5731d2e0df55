"""Fault injection on a real S3 server (SeaweedFS): skewed clocks and a paused holder.

* Two "replicas" whose wall clocks are 10 minutes ahead of and behind the server (and so 20
  minutes apart): every request is signed by the skewed clock, and the lease records carry the
  skewed times. Neither takes over the other's live, renewed lease.
* A holder in another process stopped with SIGSTOP is taken over only after the observer saw its
  lease unchanged for the TTL; resumed, its fence() reports the loss.
* The store frozen (SIGSTOP) past the TTL: the renewer gives the lease up, then it is taken.
* The store's ``Date`` gives the skew.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sslmem.coordination.lease import Lease, LeaseManager, LeaseObservations, LeaseRenewer
from sslmem.coordination.skew import measure_clock_skew
from sslmem.errors import LeaseLostError
from tests.coordination.helpers import FakeClock, local_store, new_bucket, s3_store, skewed
from tests.servers import S3Server, start_seaweedfs

pytestmark = [pytest.mark.s3, pytest.mark.slow]

TEN_MINUTES = 600.0


@pytest.mark.parametrize("holder_offset", [+TEN_MINUTES, -TEN_MINUTES], ids=["ahead", "behind"])
def test_replicas_ten_minutes_off_never_take_over_a_live_lease(
    s3_server: S3Server, holder_offset: float
) -> None:
    # The holder's clock is 10 min ahead of the server (or behind), the observer's 10 min the
    # other way. Wall-clock expiry would call the holder-behind lease "expired 20 min ago".
    bucket = new_bucket(s3_server)
    holder_store = s3_store(s3_server, bucket, skewed(holder_offset))
    observer_store = s3_store(s3_server, bucket, skewed(-holder_offset))
    a = LeaseManager(holder_store, "holder", 30, clock=skewed(holder_offset))
    mono = FakeClock()
    b = LeaseManager(
        observer_store,
        "observer",
        30,
        clock=skewed(-holder_offset),
        monotonic=mono,
        observations=LeaseObservations(),
    )
    lease = a.acquire("leases/k")
    assert lease is not None
    with LeaseRenewer(a, lease, interval_s=0.05) as renewer:
        # Five TTLs of b's clock: between b's looks, a renews (as a live holder does).
        for _ in range(10):
            held = renewer.held()
            assert held is not None
            assert b.acquire("leases/k") is None
            mono.advance(15)
            deadline = time.monotonic() + 60
            while (now := renewer.held()) is not None and now.etag == held.etag:
                assert time.monotonic() < deadline, "the holder stopped renewing"
                time.sleep(0.01)
        assert not renewer.lost.is_set()
        fenced = renewer.fence()
        assert fenced.generation == 1 and fenced.record.holder == "holder"
    # Released by a: b claims it at once, signing 20 minutes away from the previous writer.
    claimed = b.acquire("leases/k")
    assert claimed is not None and claimed.generation == 2
    assert a.acquire("leases/k") is None


def test_clock_skew_is_measured_against_the_store(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = new_bucket(s3_server)
    for offset in (+TEN_MINUTES, 0.0, -TEN_MINUTES):
        skew = measure_clock_skew(s3_store(s3_server, bucket, skewed(offset)))
        assert skew is not None and abs(skew - offset) < 5, (offset, skew)
    assert measure_clock_skew(local_store(tmp_path)) is None


_HOLDER = r"""
import json, sys
from sslmem.coordination.lease import LeaseManager, LeaseRenewer
from sslmem.errors import LeaseLostError
from tests.coordination.helpers import s3_store
from tests.servers import S3Server, start_seaweedfs

cfg = json.loads(sys.argv[1])
server = S3Server(**cfg["server"])
manager = LeaseManager(s3_store(server, cfg["bucket"]), "paused", cfg["ttl_s"])
lease = manager.acquire("leases/k")
renewer = LeaseRenewer(manager, lease, cfg["ttl_s"] / 8).start()
print("acquired", lease.generation, flush=True)
for line in sys.stdin:
    try:
        print("fenced", renewer.fence().generation, flush=True)
    except LeaseLostError as exc:
        print("lost", str(exc).splitlines()[0], flush=True)
"""


def test_a_paused_holder_is_taken_over_after_the_ttl_and_learns_it(
    s3_server: S3Server,
) -> None:
    bucket = new_bucket(s3_server)
    server = {
        name: getattr(s3_server, name)
        for name in ("endpoint", "access_key", "secret_key", "pid", "startup_s", "log_path")
    }
    server["log_path"] = str(server["log_path"])
    ttl_s = 8.0  # generous: a loaded machine must not starve the live holder's renewals
    cfg = json.dumps({"server": server, "bucket": bucket, "ttl_s": ttl_s})
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, cfg],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().split() == ["acquired", "1"]
        proc.stdin.write("fence\n")
        proc.stdin.flush()
        assert proc.stdout.readline().split() == ["fenced", "1"]  # alive: renewing
        observer = LeaseManager(s3_store(s3_server, bucket), "observer", 1.0)  # holder's TTL wins
        os.kill(proc.pid, signal.SIGSTOP)  # the holder stops mid-work, renewer and all
        first_look = time.monotonic()
        assert observer.acquire("leases/k") is None
        deadline = time.monotonic() + 120
        while (taken := observer.acquire("leases/k")) is None:
            assert time.monotonic() < deadline, "the paused holder's lease was never taken"
            time.sleep(0.1)
        # Taken over only after a full TTL of the observer's own clock.
        assert time.monotonic() - first_look >= ttl_s
        assert taken.generation == 2
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write("fence\n")
        proc.stdin.flush()
        answer = proc.stdout.readline()
        assert answer.startswith("lost"), answer
        found = observer.current("leases/k")
        assert found is not None and found[0] == taken.record  # the resumed holder wrote nothing
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=30)


def test_a_store_outage_past_the_ttl_loses_the_lease(tmp_path: Path) -> None:
    # A private SeaweedFS, frozen with SIGSTOP: every renewal times out. The holder gives the
    # lease up once its TTL passes (it does not retry forever), and after the outage another
    # replica takes it over.
    with start_seaweedfs(tmp_path / "weed") as server:
        bucket = new_bucket(server)
        store = s3_store(server, bucket, timeout=1.0, retries=0)
        holder = LeaseManager(store, "holder", 3.0)
        lease = holder.acquire("leases/k")
        assert lease is not None
        lost: list[Lease] = []
        renewer = LeaseRenewer(holder, lease, interval_s=0.3, on_lost=lost.append).start()
        try:
            deadline = time.monotonic() + 60
            while (held := renewer.held()) is not None and held.record.renewals < 1:
                assert time.monotonic() < deadline, "never renewed"
                time.sleep(0.05)
            os.kill(server.pid, signal.SIGSTOP)
            try:
                assert renewer.lost.wait(60), "the renewer kept retrying past the TTL"
                assert len(lost) == 1 and renewer.held() is None
                with pytest.raises(LeaseLostError):
                    renewer.fence()
            finally:
                os.kill(server.pid, signal.SIGCONT)
        finally:
            renewer.stop()
        observer = LeaseManager(s3_store(server, bucket), "observer", 3.0)
        deadline = time.monotonic() + 120
        while (taken := observer.acquire("leases/k")) is None:
            assert time.monotonic() < deadline, "the lost lease was never taken over"
            time.sleep(0.1)
        assert taken.generation == 2
