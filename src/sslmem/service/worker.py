"""The scoring worker: a de-duplicated queue of model versions and a bounded set of threads.

Both intakes (webhooks and the reconcile pass) :meth:`Worker.submit` ``(name, version)`` jobs;
a job already queued or running is not queued twice. ``max_concurrent_jobs`` threads (default
one per replica: scoring saturates the CPU or GPU it is given) each run
:func:`~sslmem.workflow.score_version.score_registered_version` (kind ``score``) or
:func:`~sslmem.workflow.judge.judge_registered_version` (kind ``judge``) and record the
outcome in :class:`~sslmem.service.metrics.ServiceMetrics`. The worker keeps no state that
matters: a job lost with the process is found again by the next reconcile pass.

A scoring job that meets an unreachable MLflow or object store (a
:data:`~sslmem.service.metrics.RETRY_REASONS` error: nothing was decided about the version) is
re-queued by the worker itself after an exponential backoff with jitter (:func:`retry_delay`:
1 s doubling up to ``retry_max_s``). It stays pending meanwhile, so intakes cannot queue it a
second time; its lease was released when the attempt ended, and its status is left as it was.

Every job ends counted in ``sslmem_jobs_total{kind, outcome}`` (:data:`JOB_OUTCOMES
<sslmem.service.metrics.JOB_OUTCOMES>`), and ``sslmem_queue_depth`` counts the jobs queued or
waiting out a retry backoff (not those running).

Shutdown (:meth:`Worker.stop`): intake stops at once, queued jobs are dropped, running jobs
get ``grace_s`` seconds to finish. Then a job that has not begun publishing is fenced off (its
next fence raises, so it publishes nothing) and one that has gets :data:`PUBLISH_GRACE_S` more
to finish its result set; the leases still held are released, so another replica can take them
over without waiting for the TTL.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.coordination.lease import LeaseManager, LeaseRenewer
from sslmem.errors import SSLMemError
from sslmem.service.logs import bind_job
from sslmem.service.metrics import (
    JOB_OUTCOMES,
    RETRY_REASONS,
    ServiceMetrics,
    failure_reason,
    model_policy,
)
from sslmem.service.settings import ServiceSettings
from sslmem.tracking import tags as T
from sslmem.workflow.score_version import VersionResult

if TYPE_CHECKING:
    from sslmem.service.state import ModelState

__all__ = [
    "RETRY_INITIAL_S",
    "Job",
    "JobKind",
    "Worker",
    "job_outcome",
    "refresh_model_records",
    "retry_delay",
]

logger = logging.getLogger(__name__)

JobKind = Literal["score", "judge"]

#: The first retry's wait before jitter (capped by ``retry_max_s``).
RETRY_INITIAL_S = 1.0


#: Seconds a job that had begun publishing when the shutdown grace ran out may still take to
#: finish (its publishing steps are a few MLflow requests); the chart's termination grace period
#: includes it.
PUBLISH_GRACE_S = 10.0


def retry_delay(attempt: int, *, initial_s: float, max_s: float, jitter: float) -> float:
    """Seconds to wait before retry number ``attempt`` (exponential backoff, "equal jitter").

    The base wait doubles from ``initial_s`` with each attempt, capped at ``max_s``; the wait is
    a uniform fraction of it in ``[1/2, 1]`` so replicas that met the same outage do not all
    retry in the same instant, yet none retries sooner than half the base.

    Args:
        attempt: 1 for the first retry.
        initial_s: Base wait of the first retry.
        max_s: Cap of the base wait.
        jitter: A number in ``[0, 1]`` (``random.random()``): 0 gives half the base, 1 all of it.

    Raises:
        ValueError: ``attempt < 1`` or ``jitter`` outside ``[0, 1]``.

    """
    if attempt < 1 or not 0.0 <= jitter <= 1.0:
        raise ValueError(f"need attempt >= 1 and 0 <= jitter <= 1, got {attempt} and {jitter}")
    base = min(max_s, initial_s * 2.0 ** min(attempt - 1, 64))  # the exponent bound avoids overflow
    return base * (0.5 + 0.5 * jitter)


@dataclass(frozen=True)
class Job:
    """One unit of work: score (or re-judge) one model version."""

    name: str
    version: str
    kind: JobKind = "score"


class Worker:
    """Runs scoring jobs from a de-duplicated queue on a bounded number of threads.

    Args:
        settings: Service settings (``max_concurrent_jobs``, lease and scoring settings).
        runtime: Runtime settings (MLflow, object store).
        metrics: Where outcomes are recorded.
        lease_manager: Shared lease manager (default: one on ``runtime.store_uri``).
        config: Experiment config to score with (default: from the settings' recipe).
        on_result: Called after each job with its result (tests, benchmarks).

    """

    def __init__(
        self,
        settings: ServiceSettings,
        runtime: RuntimeSettings,
        metrics: ServiceMetrics,
        *,
        lease_manager: LeaseManager | None = None,
        config: ExperimentConfig | None = None,
        on_result: Callable[[Job, VersionResult | None], None] | None = None,
    ) -> None:
        from sslmem.workflow.score_version import open_lease_manager, service_config

        self.settings = settings
        self.runtime = runtime
        self.metrics = metrics
        self.lease_manager = lease_manager or open_lease_manager(settings, runtime)
        self.config = config or service_config(settings)
        self.on_result = on_result
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._pending: set[Job] = set()
        self._lock = threading.Lock()
        self._accepting = False
        self._threads: list[threading.Thread] = []
        self._claims: dict[Job, LeaseRenewer] = {}
        self._took_over: set[Job] = set()  # jobs whose claim took over a stalled holder's lease
        self._running = 0
        self._idle = threading.Condition(self._lock)
        self._attempts: dict[Job, int] = {}  # consecutive retried attempts of a pending job
        self._retries: dict[Job, threading.Timer] = {}  # jobs waiting out their backoff
        self._random = random.Random()

    # -- intake --------------------------------------------------------------------------------

    def submit(self, name: str, version: str | int, kind: JobKind = "score") -> bool:
        """Queue a job; ``False`` if the same job is already queued or running, or stopping."""
        job = Job(name, str(version), kind)
        with self._lock:
            if not self._accepting or job in self._pending:
                return False
            self._pending.add(job)
            self._queue.put(job)
            self._publish_depth()
        return True

    def depth(self) -> int:
        """Jobs queued, running or waiting to be retried."""
        with self._lock:
            return len(self._pending)

    def waiting(self) -> int:
        """Jobs queued or waiting out a retry backoff (what ``sslmem_queue_depth`` shows)."""
        with self._lock:
            return len(self._pending) - self._running

    @property
    def accepting(self) -> bool:
        """Whether intake is open (started and not stopping)."""
        with self._lock:
            return self._accepting

    def _publish_depth(self) -> None:
        # Under self._lock. Pending jobs are queued, running or waiting on a retry timer.
        self.metrics.set_queue_depth(len(self._pending) - self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, *, run_jobs: bool = True) -> Worker:
        """Open intake and start the worker threads; returns ``self``.

        Args:
            run_jobs: ``False`` opens intake only (jobs wait in the queue): for inspection.

        """
        with self._lock:
            self._accepting = True
        if not run_jobs:
            return self
        for index in range(self.settings.max_concurrent_jobs):
            thread = threading.Thread(target=self._loop, name=f"sslmem-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, grace_s: float | None = None) -> list[Job]:
        """Stop intake, drop queued jobs and retries, give running ones ``grace_s``, then release.

        Returns:
            The jobs still running after the grace period (their leases were released; their
            versions stay ``running`` until someone claims them again).

        """
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        with self._lock:
            self._accepting = False
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    self._pending.discard(job)
            for job, timer in self._retries.items():
                timer.cancel()
                self._pending.discard(job)
            self._retries.clear()
            self._attempts.clear()
            self._publish_depth()
            self._idle.notify_all()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            stuck = list(self._claims.items())
        for job, renewer in stuck:
            if not renewer.close_unless_publishing("the replica is shutting down"):
                # Cut between two publishing steps, a result set would be left half-written
                # (a score run no version points to): publishing takes seconds, so let it end.
                logger.info("%s/%s is publishing: waiting for it", job.name, job.version)
                renewer.stopped.wait(PUBLISH_GRACE_S)
            if not renewer.stopped.is_set():
                logger.warning("releasing the lease of %s/%s at shutdown", job.name, job.version)
                renewer.stop(release=True)
        return [job for job, _ in stuck]

    # -- jobs ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            bind_job(job.kind, job.name, job.version)  # job id, model, version on every log line
            with self._lock:
                self._running += 1
                self._publish_depth()
            retrying = False
            outcome = "crashed"
            try:
                result, outcome = self._run(job)
            except SSLMemError as exc:  # MLflow or the store unreachable: retry after a backoff
                result = None
                retrying = self._defer(job, exc)
                # An outage in a judge job is retried by the next reconcile pass.
                outage = retrying or failure_reason(exc) in RETRY_REASONS
                outcome = "retried" if outage else "failed"
            except Exception:  # a bug must not kill the worker thread
                logger.exception("job %s failed unexpectedly", job)
                result = None
            self.metrics.job_done(job.kind, outcome)
            with self._idle:
                self._running -= 1
                if not retrying:
                    self._pending.discard(job)
                    self._attempts.pop(job, None)
                self._publish_depth()
                self._idle.notify_all()
            if self.on_result is not None:
                self.on_result(job, result)

    def _defer(self, job: Job, exc: SSLMemError) -> bool:
        """Schedule ``job`` again after a backoff if ``exc`` is transient; ``True`` if so."""
        reason = failure_reason(exc)
        if job.kind != "score" or reason not in RETRY_REASONS:
            # Judge jobs (and errors that are no outage) are left to the next reconcile pass.
            logger.warning("%s of %s/%s deferred: %s", job.kind, job.name, job.version, exc.problem)
            return False
        with self._lock:
            if not self._accepting:
                return False
            attempt = self._attempts.get(job, 0) + 1
            self._attempts[job] = attempt
            delay = retry_delay(
                attempt,
                initial_s=min(RETRY_INITIAL_S, self.settings.retry_max_s),
                max_s=self.settings.retry_max_s,
                jitter=self._random.random(),
            )
            timer = threading.Timer(delay, self._requeue, args=(job,))
            timer.daemon = True
            self._retries[job] = timer
            timer.start()
        self.metrics.scoring_retry(reason)
        logger.warning(
            "%s of %s/%s deferred (%s: %s); retry %d in %.1f s",
            job.kind,
            job.name,
            job.version,
            reason.value,
            exc.problem,
            attempt,
            delay,
        )
        return True

    def _requeue(self, job: Job) -> None:
        """Put a job whose backoff ended back on the queue (it never left ``_pending``)."""
        with self._idle:
            self._retries.pop(job, None)
            if not self._accepting:  # stopped meanwhile
                self._pending.discard(job)
                self._publish_depth()
                self._idle.notify_all()
                return
            self._queue.put(job)

    def _track(self, job: Job) -> Callable[[LeaseRenewer | None], None]:
        def on_claim(renewer: LeaseRenewer | None) -> None:
            with self._lock:
                if renewer is None:
                    self._claims.pop(job, None)
                else:
                    self._claims[job] = renewer
                    held = renewer.held()
                    if held is not None and held.taken_over:
                        self._took_over.add(job)

        return on_claim

    def _run(self, job: Job) -> tuple[VersionResult | None, str]:
        """Run one job; returns its result and its ``sslmem_jobs_total`` outcome."""
        from sslmem.workflow.judge import judge_registered_version
        from sslmem.workflow.score_version import score_registered_version

        # SSLMemError here means MLflow or the store did not answer: _loop retries or defers.
        if job.kind == "judge":
            judgement = judge_registered_version(
                job.name, job.version, settings=self.settings, runtime=self.runtime
            )
            if judgement is None:
                return None, "skipped"
            self._refresh(job)
            return None, "judged"
        result = score_registered_version(
            job.name,
            job.version,
            settings=self.settings,
            lease_manager=self.lease_manager,
            runtime=self.runtime,
            config=self.config,
            on_claim=self._track(job),
        )
        self._record(result)
        with self._lock:
            took_over = job in self._took_over
            self._took_over.discard(job)
        return result, job_outcome(str(result.outcome), taken_over=took_over)

    def _record(self, result: VersionResult) -> None:
        logger.info(
            "%s/%s: %s%s",
            result.name,
            result.version,
            result.outcome,
            f" ({result.reason})" if result.reason else "",
        )
        if result.outcome == "scored":
            self.metrics.observe_scoring(result.seconds)
            # Gauges first: a scrape that counts the version scored also sees its numbers.
            self._refresh(Job(result.name, result.version))
            self.metrics.version_scored(result.name)
        elif result.outcome == "failed" and result.failure is not None:
            self.metrics.version_failed(result.name, result.failure)

    def _refresh(self, job: Job) -> None:
        """Re-read the model's labelled versions into the per-version gauges."""
        from sslmem.service.state import read_model

        read_at = time.time()  # before the reading: a write before it is in what is read
        try:
            model = read_model(job.name)
            refresh_model_records(self.metrics, model, read_at)
        except (SSLMemError, ValueError) as exc:  # the next reconcile pass catches up
            problem = exc.problem if isinstance(exc, SSLMemError) else type(exc).__name__
            logger.warning("metrics of %s not refreshed: %s", job.name, problem)
            return
        self.metrics.set_policy(
            model.name, model_policy(model.name, model.tags, self.settings.judgement_policy())
        )


def job_outcome(outcome: str, *, taken_over: bool) -> str:
    """The ``sslmem_jobs_total`` outcome of a score job from its result's outcome.

    Args:
        outcome: :attr:`VersionResult.outcome`.
        taken_over: Whether the job's claim took over another holder's stalled lease.

    Returns:
        ``taken_over`` for a version scored after a take-over, the outcome itself when it is
        one of :data:`~sslmem.service.metrics.JOB_OUTCOMES`, else ``skipped``.
    """
    if outcome == "scored" and taken_over:
        return "taken_over"
    return outcome if outcome in JOB_OUTCOMES else "skipped"


def refresh_model_records(metrics: ServiceMetrics, model: ModelState, read_at: float) -> int:
    """Replace ``model``'s per-version records with what MLflow holds now.

    Versions gone from the registry, no longer scored or no longer eligible for labels lose
    their series; a labelled scored version whose summary could not be read this time keeps its
    previous record (an artifact-store blip must not make a firing alert's series vanish).

    Args:
        metrics: Where the records live.
        model: The model as just read from MLflow.
        read_at: Unix time at which that reading began.

    Returns:
        How many records were read.
    """
    from sslmem.service.state import labelled_versions, version_records

    records = version_records(model, metrics.label_policy)
    read = {r.version for r in records}
    unread = {
        v
        for v in labelled_versions(model, metrics.label_policy)
        if v not in read
        and model.versions[v].get(T.STATUS) == "scored"
        and model.versions[v].get(T.ROLE) != "reference"
    }
    metrics.update_model(model.name, records, read_at=read_at, keep=unread)
    metrics.set_aliases(model.name, model.aliases)  # kept records follow moved aliases too
    return len(records)
