"""The reconcile pass: walk the registry and queue whatever is not done.

Webhooks are fast but lossy (MLflow drops a delivery after a few failed retries, and a SQLite
store fires none at all), so every ``reconcile_interval_s`` the service lists every registered
model and its versions and queues:

* a **score** job for each version still to be scored
  (:func:`~sslmem.workflow.score_version.needs_scoring`: no status, ``pending``, ``training``,
  or ``running`` -- whose lease decides whether its holder is alive);
* a **judge** job for each scored version whose ``sslmem.judged_against`` is not the version
  the champion alias points at now (the alias moved, or was set after it was scored).

Each pass also keeps the per-version gauges true to MLflow: every model it reads has all its
exported records re-read (:func:`~sslmem.service.worker.refresh_model_records`), and a full pass
drops the models that are gone, so a re-judgement by another replica, a deleted version or a
deleted model shows here within one interval. A full pass ends by probing MLflow and the object
store (``sslmem_dependency_up``): after the pass, so a pass that found MLflow back never leaves
it exported as down until the next one. The first full pass runs at once in the background
thread, so it is also the start-up rebuild of the gauges; a full pass that MLflow stopped is
retried after a backoff (1 s doubling, up to the interval), so gauges appear soon after MLflow
returns.

Queueing is idempotent (the worker de-duplicates, the lease and the status make a repeated job
a no-op), so passes may overlap with webhook intake freely. A webhook about a model can
:meth:`Reconciler.poke` it for an immediate pass over that model alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from sslmem.errors import SSLMemError
from sslmem.service.metrics import model_policy
from sslmem.service.state import ModelState, list_models, read_model
from sslmem.service.worker import Worker, refresh_model_records
from sslmem.tracking import tags as T
from sslmem.workflow.scope import ModelScope
from sslmem.workflow.score_version import needs_scoring

__all__ = ["PassResult", "Reconciler", "plan_model"]

logger = logging.getLogger(__name__)


#: The first retry of a failed full pass waits this long (doubling up to the interval).
RETRY_INITIAL_S = 1.0
#: At shutdown, wait at most this long for a pass in flight (its thread is a daemon): the pod's
#: termination grace period budgets it (the chart's margin).
STOP_JOIN_S = 5.0


class PassResult:
    """What one pass did: models seen, records refreshed, jobs queued, and the error if any."""

    def __init__(self) -> None:
        self.models = 0
        self.records = 0
        self.score = 0
        self.judge = 0
        self.error: str | None = None

    def __repr__(self) -> str:
        return (
            f"PassResult(models={self.models}, records={self.records}, score={self.score}, "
            f"judge={self.judge}, error={self.error!r})"
        )


def plan_model(model: ModelState, champion_alias: str) -> tuple[list[str], list[str]]:
    """The versions of ``model`` to score and to re-judge, in version order.

    Returns:
        ``(to score, to judge)``.

    """
    champion = model.aliases.get(champion_alias)
    score, judge = [], []
    for version in sorted(model.versions, key=int):
        tags = model.versions[version]
        if needs_scoring(tags):
            score.append(version)
        elif tags.get(T.STATUS) == "scored" and tags.get(T.ROLE) != "reference":
            judged = tags.get(T.JUDGED_AGAINST)
            wanted = champion or "none"
            if judged != wanted and not (judged == version and champion == version):
                judge.append(version)
    return score, judge


class Reconciler:
    """Runs reconcile passes in a background thread, every interval or when poked.

    Args:
        worker: Where jobs are queued.
        interval_s: Seconds between full passes.
        champion_alias: The alias versions are judged against.
        probe: Called at the end of each full pass (dependency health); never raises.

    """

    def __init__(
        self,
        worker: Worker,
        interval_s: float,
        champion_alias: str,
        *,
        probe: Callable[[], object] | None = None,
    ) -> None:
        self.worker = worker
        self.interval_s = interval_s
        self.champion_alias = champion_alias
        self.probe = probe
        self.last: PassResult | None = None
        self.passes = 0  # completed full passes without error
        self._poked: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="sslmem-reconcile", daemon=True)

    def run_once(
        self, models: Iterable[ModelState] | None = None, *, queue_jobs: bool = True
    ) -> PassResult:
        """One pass over ``models`` (default: every registered model: a full pass); never raises.

        Args:
            models: Models already read (a poke), or ``None`` for a full pass, which, once the
                listing completed, drops the gauges of models that are gone, then probes the
                dependencies.
            queue_jobs: ``False`` refreshes the gauges only.
        """
        result = PassResult()
        metrics = self.worker.metrics
        defaults = self.worker.settings.judgement_policy()
        full = models is None
        started = time.time()
        seen: set[str] = set()
        try:
            # Lazy (list_models reads each model as it yields it): read_at is taken just before
            # a model's tags are read, so a record is never dated later than its data.
            scope = ModelScope.of(self.worker.settings.models)  # other teams' models: never read
            listing = iter(models if models is not None else list_models(scope))
            while True:
                read_at = time.time()
                model = next(listing, None)
                if model is None:
                    break
                result.models += 1
                seen.add(model.name)
                # Policy tags may change without a new version: keep the gauge current.
                metrics.set_policy(model.name, model_policy(model.name, model.tags, defaults))
                result.records += self._refresh(model, read_at)
                if queue_jobs:
                    score, judge = plan_model(model, self.champion_alias)
                    result.score += sum(self.worker.submit(model.name, v) for v in score)
                    result.judge += sum(self.worker.submit(model.name, v, "judge") for v in judge)
            if full:
                metrics.retain_models(seen, read_at=started)
        except SSLMemError as exc:
            result.error = exc.problem
            logger.warning("reconcile pass stopped: %s", exc.problem)
        logger.debug("reconcile pass: %r", result)
        if full and self.probe is not None:
            self.probe()
        if full and result.error is None:
            self.passes += 1
        self.last = result
        return result

    def _refresh(self, model: ModelState, read_at: float) -> int:
        """Re-read ``model``'s exported records; returns how many were read."""
        try:
            return refresh_model_records(self.worker.metrics, model, read_at)
        except (SSLMemError, ValueError) as exc:  # one unreadable model must not stop the pass
            problem = exc.problem if isinstance(exc, SSLMemError) else type(exc).__name__
            logger.warning("metrics of %s not refreshed: %s", model.name, problem)
            return 0

    def poke(self, name: str) -> None:
        """Reconcile model ``name`` soon (e.g. its champion alias moved)."""
        with self._lock:
            self._poked.add(name)
        self._wake.set()

    def start(self) -> Reconciler:
        """Start the background thread (a first full pass runs at once)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the background thread."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_JOIN_S)

    def _loop(self) -> None:
        last_full = -float("inf")
        wait_s = self.interval_s  # until the next full pass; shorter after a failed one
        failures = 0
        while not self._stop.is_set():
            if time.monotonic() - last_full >= wait_s:
                last_full = time.monotonic()
                with self._lock:
                    self._poked.clear()
                if self.run_once().error is None:
                    failures, wait_s = 0, self.interval_s
                else:  # MLflow did not answer: try again soon, backing off
                    failures += 1
                    wait_s = min(self.interval_s, RETRY_INITIAL_S * 2.0 ** min(failures - 1, 32))
            else:
                with self._lock:
                    names, self._poked = sorted(self._poked), set()
                if names:  # lazy: each model is read when the pass reaches it
                    self.run_once(read_model(name) for name in names)
            self._wake.clear()
            with self._lock:
                if self._poked:
                    continue
            self._wake.wait(max(0.0, wait_s - (time.monotonic() - last_full)))
