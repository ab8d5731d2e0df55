"""Shutdown never cuts a result set in two: the worker's grace against the lease's fence.

At the end of ``SHUTDOWN_GRACE_S`` a job still scoring is fenced off (its next fence raises, so
it publishes nothing: no score run left behind) and its lease released at once; a job between
two publishing steps gets up to ``PUBLISH_GRACE_S`` to finish its result set before the lease
goes. Both run on the real worker and real leases (a local conditional store); the job's
scoring and publishing are stand-ins that only fence and record.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sslmem.coordination.lease import version_lease_key
from sslmem.errors import LeaseLostError
from sslmem.service.metrics import ServiceMetrics
from sslmem.service.worker import PUBLISH_GRACE_S, Job, Worker
from sslmem.workflow.score_version import VersionResult, version_claim
from tests.service.scoring_setup import runtime_settings, service_settings

#: Seconds the stand-in publishing step takes: well inside PUBLISH_GRACE_S.
STEP_S = 1.5


class StandInWorker(Worker):
    """Runs each job under its real claim; the test drives what happens inside it."""

    def __init__(self, tmp_path: Path, script: str) -> None:
        runtime = runtime_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "store")
        super().__init__(service_settings(lease_ttl_s=60.0), runtime, ServiceMetrics())
        self.script = script
        self.inside = threading.Event()  # the job is where the test wants the shutdown
        self.resume = threading.Event()  # set by the test once stop() returned
        self.steps: list[str] = []
        self.refused: list[LeaseLostError] = []
        self.finished = threading.Event()

    def _run(self, job: Job) -> tuple[VersionResult | None, str]:
        try:
            with version_claim(
                job.name, job.version, settings=self.settings, lease_manager=self.lease_manager,
                on_claim=self._track(job),
            ) as claim:  # fmt: skip
                assert claim is not None
                claim.fence()  # "running": not part of a result set
                if self.script == "scoring":
                    self.inside.set()
                    self.resume.wait(30)  # still scoring when the grace ends
                for step in ("score_run", "version_tags", "status"):
                    claim.fence(publishing=True)
                    if self.script == "publishing" and step == "score_run":
                        self.inside.set()
                    self.resume.wait(STEP_S)  # the step's MLflow writes
                    self.steps.append(step)
                claim.published()
            return None, "scored"
        except LeaseLostError as exc:
            self.refused.append(exc)
            return None, "lost"
        finally:
            self.finished.set()

    def lease_held(self, job: Job) -> bool:
        key = version_lease_key(job.name, job.version, self.settings.lease_settings().prefix)
        return self.lease_manager.current(key) is not None


def test_a_job_still_scoring_is_fenced_off_and_its_lease_released_at_once(
    tmp_path: Path,
) -> None:
    worker = StandInWorker(tmp_path, "scoring").start()
    assert worker.submit("enc", "1") and worker.inside.wait(30)
    stuck = worker.stop(0)
    assert [job.name for job in stuck] == ["enc"]
    assert not worker.lease_held(stuck[0])  # free for another replica now, not after the TTL
    assert not worker.finished.is_set()
    worker.resume.set()
    assert worker.finished.wait(30)
    # The job's first publishing fence was refused: it published nothing.
    assert worker.steps == []
    assert len(worker.refused) == 1 and "shutting down" in worker.refused[0].problem


def test_a_job_between_publishing_steps_finishes_its_result_set_before_the_lease_goes(
    tmp_path: Path,
) -> None:
    assert STEP_S * 3 < PUBLISH_GRACE_S
    worker = StandInWorker(tmp_path, "publishing").start()
    assert worker.submit("enc", "1") and worker.inside.wait(30)
    stuck = worker.stop(0)
    assert [job.name for job in stuck] == ["enc"]
    # stop() returned once the result set was complete: every step, then the release.
    assert worker.finished.wait(5)
    assert worker.steps == ["score_run", "version_tags", "status"], worker.refused
    assert worker.refused == []
    assert not worker.lease_held(stuck[0])


@pytest.mark.parametrize("publishing", [False, True])
def test_closing_the_fence_depends_only_on_an_open_result_set(
    tmp_path: Path, publishing: bool
) -> None:
    worker = StandInWorker(tmp_path, "unused")
    settings = worker.settings
    with version_claim("enc", "2", settings=settings, lease_manager=worker.lease_manager) as claim:
        assert claim is not None
        claim.fence(publishing=publishing)
        assert claim.renewer.close_unless_publishing("closing") is (not publishing)
        if publishing:
            claim.fence(publishing=True)  # still open: the result set goes on
            claim.published()
            assert claim.renewer.close_unless_publishing("closing") is True  # ended: closes
        with pytest.raises(LeaseLostError, match="closing"):
            claim.fence()
    assert claim.still_ours is True  # closed, yet still ours: released by the block's end
    assert not worker.lease_held(Job("enc", "2"))
