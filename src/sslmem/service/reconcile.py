"""The reconcile pass: walk the registry and queue whatever is not done.

Webhooks are fast but lossy (MLflow drops a delivery after a few failed retries, and a SQLite
store fires none at all), so every ``reconcile_interval_s`` the service lists every registered
model and its versions and queues:

* a **score** job for each version still to be scored
  (:func:`~sslmem.workflow.score_version.needs_scoring`: no status, ``pending``, ``training``,
  or ``running`` -- whose lease decides whether its holder is alive);
* a **judge** job for each scored version whose ``sslmem.judged_against`` is not the version
  the champion alias points at now (the alias moved, or was set after it was scored).

Queueing is idempotent (the worker de-duplicates, the lease and the status make a repeated job
a no-op), so passes may overlap with webhook intake freely. A webhook about a model can
:meth:`Reconciler.poke` it for an immediate pass over that model alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from sslmem.errors import SSLMemError
from sslmem.service.metrics import model_policy
from sslmem.service.state import ModelState, list_models, read_model
from sslmem.service.worker import Worker
from sslmem.tracking import tags as T
from sslmem.workflow.score_version import needs_scoring

__all__ = ["PassResult", "Reconciler", "plan_model"]

logger = logging.getLogger(__name__)


class PassResult:
    """What one pass queued: ``score`` and ``judge`` job counts, models seen, and errors."""

    def __init__(self) -> None:
        self.models = 0
        self.score = 0
        self.judge = 0
        self.error: str | None = None

    def __repr__(self) -> str:
        return (
            f"PassResult(models={self.models}, score={self.score}, judge={self.judge}, "
            f"error={self.error!r})"
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

    """

    def __init__(self, worker: Worker, interval_s: float, champion_alias: str) -> None:
        self.worker = worker
        self.interval_s = interval_s
        self.champion_alias = champion_alias
        self.last: PassResult | None = None
        self._poked: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="sslmem-reconcile", daemon=True)

    def run_once(self, models: Iterable[ModelState] | None = None) -> PassResult:
        """One pass over ``models`` (default: every registered model); never raises."""
        result = PassResult()
        defaults = self.worker.settings.judgement_policy()
        try:
            for model in models if models is not None else list_models():
                result.models += 1
                self.worker.metrics.set_aliases(model.name, model.aliases)
                # Policy tags may change without a new version: keep the gauge current.
                self.worker.metrics.set_policy(
                    model.name, model_policy(model.name, model.tags, defaults)
                )
                score, judge = plan_model(model, self.champion_alias)
                result.score += sum(self.worker.submit(model.name, v) for v in score)
                result.judge += sum(self.worker.submit(model.name, v, "judge") for v in judge)
        except SSLMemError as exc:
            result.error = exc.problem
            logger.warning("reconcile pass stopped: %s", exc.problem)
        logger.debug("reconcile pass: %r", result)
        self.last = result
        return result

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
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        last_full = -float("inf")
        while not self._stop.is_set():
            if time.monotonic() - last_full >= self.interval_s:
                last_full = time.monotonic()
                with self._lock:
                    self._poked.clear()
                self.run_once()
            else:
                with self._lock:
                    names, self._poked = sorted(self._poked), set()
                if names:
                    try:
                        self.run_once([read_model(name) for name in names])
                    except SSLMemError as exc:
                        logger.warning("reconcile of %s failed: %s", ", ".join(names), exc.problem)
            self._wake.clear()
            with self._lock:
                if self._poked:
                    continue
            self._wake.wait(max(0.0, self.interval_s - (time.monotonic() - last_full)))
