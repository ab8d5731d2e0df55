"""The scoring service's parts wired together: verifier, metrics, worker, reconcile.

:class:`ScoringService` is what the HTTP routes (:mod:`sslmem.service.app`) call; it holds no
state of its own beyond in-memory caches (replay ids, the metrics table) that are rebuilt from
MLflow at start-up.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sslmem.config import RuntimeSettings
from sslmem.errors import SSLMemError
from sslmem.service.lease import LeaseManager
from sslmem.service.metrics import ServiceMetrics, model_policy
from sslmem.service.reconcile import Reconciler
from sslmem.service.settings import ServiceSettings
from sslmem.service.webhooks import DeliveryResult, EventKind, RegistryEvent, WebhookVerifier
from sslmem.service.worker import Worker
from sslmem.tracking import tags as T

__all__ = ["Readiness", "ScoringService"]

logger = logging.getLogger(__name__)

#: ``sslmem.status`` values that (re)request scoring when a tag event sets them.
_REQUEST_STATUSES = ("pending", "training")


@dataclass(frozen=True)
class Readiness:
    """Whether the service can do its work: MLflow and the object store answer."""

    mlflow: str | None
    object_store: str | None
    stopping: bool

    @property
    def ready(self) -> bool:
        """Both reachable and not shutting down."""
        return self.mlflow is None and self.object_store is None and not self.stopping


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
        self.metrics = metrics or ServiceMetrics()
        self.verifier = WebhookVerifier(
            settings.webhook_secret,
            max_age_s=settings.webhook_max_age_s,
            dedup_size=settings.webhook_dedup_size,
            max_body_bytes=settings.webhook_max_body_bytes,
        )
        self.worker = Worker(settings, runtime, self.metrics, lease_manager=lease_manager)
        self.reconciler = Reconciler(
            self.worker, settings.reconcile_interval_s, settings.champion_alias
        )
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Rebuild the metrics from MLflow, then start the worker and the reconcile loop."""
        self.rebuild_metrics()
        self.worker.start()
        self.reconciler.start()
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
        """Re-read every model's labelled versions into the gauges; returns how many."""
        from sslmem.service.state import list_models, version_records

        records = []
        policies = {}
        defaults = self.settings.judgement_policy()
        try:
            for model in list_models():
                records.extend(version_records(model, self.metrics.label_policy))
                policies[model.name] = model_policy(model.name, model.tags, defaults)
        except SSLMemError as exc:
            logger.warning("metrics not rebuilt (reconcile will catch up): %s", exc.problem)
            return 0
        self.metrics.rebuild(records, policies)
        return len(records)

    # -- intake --------------------------------------------------------------------------------

    def handle_delivery(self, headers: dict[str, str], body: bytes) -> tuple[DeliveryResult, bool]:
        """Verify a webhook delivery, count it, and queue its event if accepted.

        Returns:
            The verifier's result and whether a job was queued.

        """
        result = self.verifier.verify(headers, body)
        self.metrics.webhook_delivery(result.outcome)
        if result.event is None:
            if result.outcome.http_status >= 400:
                logger.warning(
                    "webhook delivery refused (%s): %s", result.outcome.value, result.reason
                )
            return result, False
        return result, self.handle_event(result.event)

    def handle_event(self, event: RegistryEvent) -> bool:
        """Act on a verified registry event; ``True`` if a job was queued."""
        if self.stopping:
            return False
        if event.kind is EventKind.VERSION_CREATED:
            return self.worker.submit(event.name, event.version)
        if event.kind is EventKind.VERSION_TAG_SET:
            if event.tag_key == T.STATUS and event.tag_value in _REQUEST_STATUSES:
                return self.worker.submit(event.name, event.version)
            return False
        if (
            event.kind is EventKind.VERSION_ALIAS_CREATED
            and event.alias == self.settings.champion_alias
        ):
            self.reconciler.poke(event.name)  # re-judge the model's versions against it
        return False

    def request_score(self, name: str, version: str) -> bool:
        """Queue a version on request (``POST /v1/score``); ``False`` if already queued.

        Raises:
            TrackingError: No such version, or MLflow is unreachable.

        """
        from sslmem.tracking import get_version_tags

        get_version_tags(name, version)  # 404 for a version that does not exist
        return self.worker.submit(name, version)

    def readiness(self) -> Readiness:
        """Probe MLflow and the object store (one cheap request each)."""
        from sslmem.tracking.connection import check_tracking_server

        mlflow_error = store_error = None
        try:
            check_tracking_server()
        except SSLMemError as exc:
            mlflow_error = exc.problem
        try:
            self.worker.lease_manager.store.read(f"{self.settings.lease_prefix}/readiness-probe")
        except SSLMemError as exc:
            store_error = exc.problem
        return Readiness(mlflow_error, store_error, self.stopping)
