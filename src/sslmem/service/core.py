"""The scoring service's parts wired together: verifier, metrics, worker, reconcile.

:class:`ScoringService` is what the HTTP routes (:mod:`sslmem.service.app`) call; it holds no
state of its own beyond in-memory caches (replay ids, the metrics table) that are rebuilt from
MLflow.

:meth:`ScoringService.start` never waits for MLflow or the object store, so the port opens at
once however large the registry and whether or not they answer: the gauges are rebuilt by the
reconcile thread's first pass (retried with backoff while MLflow is down), and the clock skew
against the object store is measured by a background thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sslmem.config import RuntimeSettings
from sslmem.coordination.deliveries import DeliveryLedger
from sslmem.coordination.lease import LeaseManager
from sslmem.errors import SSLMemError
from sslmem.service.logs import log_context
from sslmem.service.metrics import LabelPolicy, ServiceMetrics
from sslmem.service.reconcile import Reconciler
from sslmem.service.secrets import api_token, webhook_secrets
from sslmem.service.settings import ServiceSettings
from sslmem.service.webhooks import DeliveryResult, EventKind, RegistryEvent, WebhookVerifier
from sslmem.service.worker import Worker
from sslmem.tracking import tags as T
from sslmem.workflow.scope import ModelOutOfScopeError, ModelScope

__all__ = ["Readiness", "ScoringService"]

logger = logging.getLogger(__name__)

#: ``sslmem.status`` values that (re)request scoring when a tag event sets them.
_REQUEST_STATUSES = ("pending", "training")


@dataclass(frozen=True)
class Readiness:
    """Whether this replica can accept intake (``GET /readyz``).

    Deliberately *not* whether MLflow and the object store answer: a blip of either would take
    every replica out of the Service at once, and MLflow would then drop its webhook deliveries
    after a few seconds of retries. An accepted job meeting an outage is retried with backoff;
    dependency health is exported instead (``sslmem_dependency_up``, ``SSLMemDependencyDown``).
    """

    stopping: bool
    accepting: bool
    webhook_secret: bool

    @property
    def ready(self) -> bool:
        """Not shutting down, the worker takes jobs and deliveries can be verified."""
        return not self.stopping and self.accepting and self.webhook_secret


class ScoringService:
    """One replica of the scoring service.

    Args:
        settings: Service settings.
        runtime: Runtime settings (MLflow, object store, device).
        metrics: The metrics (default: new).
        lease_manager: Lease manager (default: on ``runtime.store_uri``).

    """

    def __init__(
        self,
        settings: ServiceSettings,
        runtime: RuntimeSettings,
        *,
        metrics: ServiceMetrics | None = None,
        lease_manager: LeaseManager | None = None,
    ) -> None:
        from sslmem.tracking import configure_from_settings

        settings.judgement_policy()  # an invalid policy fails at start-up, not per version
        configure_from_settings(runtime)
        self.settings = settings
        self.runtime = runtime
        self.metrics = metrics or ServiceMetrics(
            labels=LabelPolicy(champion_alias=settings.champion_alias)
        )
        #: The bearer token of mutating endpoints now (re-read when API_TOKEN_FILE changes).
        self.api_token = api_token(settings)
        self.verifier = WebhookVerifier(
            webhook_secrets(settings),  # current and previous, re-read when their files change
            max_age_s=settings.webhook_max_age_s,
            dedup_size=settings.webhook_dedup_size,
            max_body_bytes=settings.webhook_max_body_bytes,
            ledger=self._first_seen,
        )
        self._ledger: DeliveryLedger | None = None  # made on first use
        self._pruned_at = time.monotonic()
        self.worker = Worker(settings, runtime, self.metrics, lease_manager=lease_manager)
        self.reconciler = Reconciler(
            self.worker,
            settings.reconcile_interval_s,
            settings.champion_alias,
            probe=self.probe_dependencies,
        )
        self._stopping = threading.Event()
        self._skew_thread = threading.Thread(
            target=self._measure_skew, name="sslmem-clock-skew", daemon=True
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker, the reconcile loop and the skew measurement; never blocks on I/O.

        The reconcile loop's first full pass (at once, in its thread) rebuilds the gauges from
        MLflow and probes the dependencies; it is retried with backoff while MLflow is down.
        """
        self.worker.start()
        self.reconciler.start()
        self._skew_thread.start()
        logger.info(
            "scoring service %s started (%d job(s) at once, reconcile every %g s)",
            self.settings.replica_id,
            self.settings.max_concurrent_jobs,
            self.settings.reconcile_interval_s,
        )

    def stop(self) -> None:
        """Stop intake; let running jobs finish within the grace period, then release leases."""
        self._stopping.set()
        self.reconciler.stop()
        left = self.worker.stop()
        if left:
            logger.warning("released %d in-flight lease(s) at shutdown", len(left))

    @property
    def stopping(self) -> bool:
        """Whether shutdown has begun (intake refused)."""
        return self._stopping.is_set()

    def rebuild_metrics(self) -> int:
        """Re-read every model's exported records and policy into the gauges (queues nothing).

        Returns:
            How many records were read (0 if MLflow did not answer: the reconcile loop retries).
        """
        return self.reconciler.run_once(queue_jobs=False).records

    def probe_dependencies(self) -> dict[str, str | None]:
        """Probe MLflow and the object store once each; export ``sslmem_dependency_up``.

        Returns:
            ``{dependency: None if it answered, else the problem}``; never raises.
        """
        from sslmem.tracking.connection import check_tracking_server

        problems: dict[str, str | None] = {"mlflow": None, "object_store": None}
        try:
            check_tracking_server()
        except SSLMemError as exc:
            problems["mlflow"] = exc.problem
        try:
            # A missing key is an answer: the store is up.
            self.worker.lease_manager.store.read(f"{self.settings.lease_prefix}/readiness-probe")
        except SSLMemError as exc:
            problems["object_store"] = exc.problem
        for dependency, problem in problems.items():
            self.metrics.set_dependency(dependency, problem is None)
            if problem is not None:
                logger.warning("%s did not answer: %s", dependency, problem)
        return problems

    def _measure_skew(self) -> None:
        """Measure this clock against the object store's, retrying until it answers."""
        from sslmem.coordination.skew import SKEW_WARNING_S, measure_clock_skew

        delay = 1.0
        while not self._stopping.is_set():
            try:
                skew = measure_clock_skew(self.worker.lease_manager.store)
            except SSLMemError as exc:
                logger.info("clock skew not measured yet (retry in %.0f s): %s", delay, exc.problem)
            else:
                if skew is None:  # a local store has no clock of its own: no series
                    return
                self.metrics.set_clock_skew(skew)
                if abs(skew) > SKEW_WARNING_S:
                    logger.warning(
                        "this replica's clock is %+.1f s off the object store's: leases stay "
                        "safe (expiry is judged by each reader's own clock) but webhook "
                        "timestamps and presigned URLs may be refused; fix the node's NTP",
                        skew,
                    )
                return
            self._stopping.wait(delay)
            delay = min(delay * 2.0, 300.0)

    # -- intake --------------------------------------------------------------------------------

    def handle_delivery(self, headers: dict[str, str], body: bytes) -> tuple[DeliveryResult, bool]:
        """Verify a webhook delivery, count it, and queue its event if accepted.

        The delivery id is checked in memory, then in the shared ledger in the object store
        (replays refused across replicas and restarts); when the store cannot be reached the
        answer is 503 ``unavailable`` and MLflow retries.

        Returns:
            The verifier's result and whether a job was queued.

        """
        delivery_id = next(
            (value for key, value in headers.items() if key.lower() == "x-mlflow-delivery-id"),
            None,
        )
        # An unverified id is logged only as a short prefix of printable characters.
        shown = "".join(c for c in (delivery_id or "")[:64] if c.isalnum() or c in "-_") or None
        with log_context(delivery_id=shown):
            result = self.verifier.verify(headers, body)
            self.metrics.webhook_delivery(result.outcome)
            if result.event is None:
                if result.outcome.http_status >= 400:
                    logger.warning(
                        "webhook delivery refused (%s): %s", result.outcome.value, result.reason
                    )
                return result, False
            event = result.event
            with log_context(model=event.name, version=event.version):
                queued = self.handle_event(event)
                logger.info(
                    "webhook delivery accepted: %s%s",
                    event.kind.value,
                    " (queued)" if queued else "",
                )
            return result, queued

    def _first_seen(self, delivery_id: str) -> bool:
        """The replay ledger's verdict (on the worker's lease store, created on first use)."""
        if self._ledger is None:
            self._ledger = DeliveryLedger(
                self.worker.lease_manager.store,
                self.settings.lease_prefix,  # markers under <lease prefix>/deliveries/
                self.verifier.replay_ttl_s,  # the whole ± window, not just max age
                clock=lambda: self.verifier.clock(),
            )
        first = self._ledger.first_seen(delivery_id)
        now = time.monotonic()
        if now - self._pruned_at > self.verifier.replay_ttl_s:  # at most once per TTL
            self._pruned_at = now
            threading.Thread(target=self._prune, args=(self._ledger,), daemon=True).start()
        return first

    @staticmethod
    def _prune(ledger: DeliveryLedger) -> None:
        """Delete expired delivery markers (a bounded sweep, off the request path)."""
        try:
            deleted = ledger.prune(limit=1000)
        except SSLMemError as exc:
            logger.warning("expired delivery markers not pruned: %s", exc.problem)
            return
        if deleted:
            logger.info("pruned %d expired delivery marker(s)", deleted)

    def handle_event(self, event: RegistryEvent) -> bool:
        """Act on a verified registry event; ``True`` if a job was queued."""
        if self.stopping:
            return False
        if event.kind is EventKind.VERSION_CREATED:
            return self._in_scope(event.name) and self.worker.submit(event.name, event.version)
        if event.kind is EventKind.VERSION_TAG_SET:
            if event.tag_key == T.STATUS and event.tag_value in _REQUEST_STATUSES:
                return self._in_scope(event.name) and self.worker.submit(event.name, event.version)
            return False
        if (
            event.kind is EventKind.VERSION_ALIAS_CREATED
            and event.alias == self.settings.champion_alias
            and self._in_scope(event.name)
        ):
            self.reconciler.poke(event.name)  # re-judge the model's versions against it
        return False

    def _in_scope(self, name: str) -> bool:
        """Whether the service acts on model ``name`` (:mod:`sslmem.workflow.scope`).

        Other teams' models (and names that do not exist) queue nothing and get no series. If
        MLflow cannot say, the job is queued: the worker asks again before touching anything.
        """
        try:
            return ModelScope.of(self.settings.models).allows(name)
        except SSLMemError:
            return True

    def request_score(self, name: str, version: str) -> bool:
        """Queue a version on request (``POST /v1/score``); ``False`` if already queued.

        Raises:
            ModelOutOfScopeError: The model is not managed by sslmem (a 404).
            TrackingError: No such version, or MLflow is unreachable.

        """
        from sslmem.tracking import get_version_tags

        if not ModelScope.of(self.settings.models).allows(name):
            raise ModelOutOfScopeError(name)  # 404, saying how to opt the model in
        get_version_tags(name, version)  # 404 for a version that does not exist
        return self.worker.submit(name, version)

    def readiness(self) -> Readiness:
        """Whether this replica can accept intake now (no I/O: see :class:`Readiness`)."""
        return Readiness(
            stopping=self.stopping,
            accepting=self.worker.accepting,
            webhook_secret=self.settings.webhook_secret is not None,
        )
