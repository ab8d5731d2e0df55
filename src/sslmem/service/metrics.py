"""The Prometheus metrics of the scoring service (``GET /metrics``), prefix ``sslmem_``.

Every metric lives in one dedicated :class:`~prometheus_client.CollectorRegistry` per
:class:`ServiceMetrics` (never the process-global one), so tests and several apps in one process
do not collide. Labels are low-cardinality by construction:

* ``model`` -- a registered model name;
* ``version`` and ``alias`` -- only for versions that :func:`label_eligibility` selects (the
  versions holding an alias, and the latest few), so a model contributes a bounded number of
  series however many versions it has; a version that loses eligibility loses its series;
* ``setting`` -- a judgement-policy field (:data:`POLICY_SETTINGS`), on the per-model
  ``sslmem_model_policy`` gauge (one series per model and setting);
* small fixed enums: ``reason`` (:class:`FailureReason`), ``outcome`` (webhook deliveries,
  :data:`WEBHOOK_OUTCOMES`; jobs, :data:`JOB_OUTCOMES`; judgements,
  :class:`~sslmem.memorization.judgement.JudgementOutcome`), ``kind`` (:data:`JOB_KINDS`),
  ``dependency`` (:data:`DEPENDENCIES`),
  ``verdict`` (:data:`VERDICT_STATES`), ``set`` (the protocol's sets), ``quantity``
  (:data:`DELTA_QUANTITIES`). Never a sample id, a run id or free text.

Per-version gauges are produced at scrape time from a small in-memory table
(:class:`VersionRecord` per version) by a custom collector, so a scrape sees one consistent
state and the bound on series holds by construction. The callers keep the table true to MLflow
(this module never talks to it): every reconcile pass re-reads each model
(:meth:`ServiceMetrics.update_model`) and drops the models that are gone
(:meth:`ServiceMetrics.retain_models`), and a job re-reads its model when it ends. Each record
carries the time its data was read (``sslmem_version_refreshed_timestamp_seconds``), so the
alert rules pick, among replicas, the newest reading of a version, and an older reading never
replaces a newer one here.
Likewise ``sslmem_model_policy`` shows each model's effective judgement policy (service defaults
overridden by its ``sslmem.policy.*`` tags), so alert rules and dashboards can compare a version
with its own model's budget and draw ``min_delta``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sslmem.errors import ConfigError
from sslmem.memorization.judgement import (
    Judgement,
    JudgementOutcome,
    JudgementPolicy,
    verdict_state,
)
from sslmem.memorization.scoring import ScoreSummary
from sslmem.tracking.policy import policy_from_tags
from sslmem.workflow.failures import RETRY_REASONS, FailureReason, failure_reason

__all__ = [
    "DELTA_QUANTITIES",
    "DEPENDENCIES",
    "JOB_KINDS",
    "JOB_OUTCOMES",
    "POLICY_SETTINGS",
    "RETRY_REASONS",
    "SCORING_BUCKETS",
    "VERDICT_STATES",
    "VERSION_LABELS",
    "WEBHOOK_OUTCOMES",
    "FailureReason",
    "LabelPolicy",
    "ServiceMetrics",
    "VersionRecord",
    "failure_reason",
    "label_eligibility",
    "model_policy",
]

logger = logging.getLogger(__name__)

#: How a webhook delivery ended (the values of ``sslmem.service.webhooks.DeliveryOutcome``).
WEBHOOK_OUTCOMES = (
    "accepted",
    "duplicate",
    "forged",
    "unsigned",
    "unconfigured",
    "stale",
    "malformed",
    "oversized",
    "ignored",
    "unavailable",
)
#: Kinds of worker jobs (``sslmem.service.worker.JobKind``).
JOB_KINDS = ("score", "judge")
#: How a worker job ended: ``scored``/``judged`` (done), ``failed`` (a permanent problem, tagged on
#: the version), ``skipped`` (nothing to do: already done, a reference, out of scope), ``busy``
#: (another holder has the lease), ``taken_over`` (scored after taking over an expired lease),
#: ``lost`` (the lease moved on while working: results dropped), ``retried`` (a dependency did
#: not answer: re-queued after a backoff), ``crashed`` (an unexpected exception: a bug).
JOB_OUTCOMES = (
    "scored",
    "judged",
    "failed",
    "skipped",
    "busy",
    "taken_over",
    "lost",
    "retried",
    "crashed",
)
#: The dependencies whose health ``sslmem_dependency_up`` shows.
DEPENDENCIES = ("mlflow", "object_store")
#: States of a version's protocol verdict.
VERDICT_STATES = ("passed", "failed", "inconclusive")
#: What ``sslmem_version_champion_delta`` reports (candidate − champion).
DELTA_QUANTITIES = (
    "sslmem_mean",
    "fraction_above_threshold",
    "knn_accuracy",
    "linear_probe_accuracy",
)
#: The ``setting`` label of ``sslmem_model_policy``: the judgement-policy fields (budgets only
#: exported when the model has one).
POLICY_SETTINGS = (
    "alpha",
    "min_delta",
    "accuracy_gain",
    "threshold",
    "budget_mean",
    "budget_fraction",
)
#: Labels of every per-version gauge (some add one enum label).
VERSION_LABELS = ("model", "version", "alias")
#: Scoring takes seconds (tiny encoders on a GPU) to hours (ImageNet-scale S_C on a CPU).
SCORING_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, float("inf"))


@dataclass(frozen=True)
class LabelPolicy:
    """Which versions of a model get ``version``/``alias`` labels.

    Attributes:
        latest: The newest this many versions (by version number) get labels.
        aliases: Aliases that give a version labels (``None``: any alias). Other aliases are
            ignored, so a version holding only those is labelled only if among the latest.
        max_aliases: At most this many alias names per model (the first in sorted order),
            bounding series even if a team creates aliases freely.
        regressions: At most this many *open* regressions per model keep their labels after
            newer versions push them out of the latest (the newest first). A regression is open
            while the version is judged one and is newer than the champion: without this, a
            team that registers versions faster than an alert's ``for:`` would never be told
            (seen: 7 of 12 regressions never fired with ``latest=3``). Promoting a newer
            champion, re-judging, or deleting the version closes it.
        champion_alias: The alias regressions are judged against.
    """

    latest: int = 3
    aliases: frozenset[str] | None = None
    max_aliases: int = 5
    regressions: int = 5
    champion_alias: str = "champion"

    def __post_init__(self) -> None:
        if self.latest < 0 or self.max_aliases < 0 or self.regressions < 0:
            raise ConfigError(
                f"label policy needs latest, max_aliases and regressions >= 0, got "
                f"{self.latest}, {self.max_aliases} and {self.regressions}",
                "use small non-negative limits, e.g. latest=3, max_aliases=5, regressions=5",
            )


def model_policy(
    model: str, tags: Mapping[str, str], defaults: JudgementPolicy
) -> JudgementPolicy | None:
    """The effective judgement policy of one registered model, for ``sslmem_model_policy``.

    Args:
        model: Registered model name (for the warning).
        tags: The registered model's tags (its ``sslmem.policy.*`` overrides).
        defaults: The service-wide policy.

    Returns:
        :func:`~sslmem.tracking.policy.policy_from_tags` of the tags, or ``None`` (no
        series) when they are invalid. Its versions are then not judged (each attempt logs the
        tag), and a model with scored versions but no policy series is what the
        ``SSLMemModelPolicyInvalid`` alert detects; exporting the defaults instead would show a
        policy that is not applied.
    """
    try:
        return policy_from_tags(tags, defaults)
    except ConfigError as exc:
        logger.warning("no policy metric for model %r: %s", model, exc.problem)
        return None


def _version_number(version: str) -> int:
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"model version must be a positive integer string, got {version!r}")
    return int(version)


def label_eligibility(
    versions: Mapping[str, Collection[str]],
    policy: LabelPolicy,
    regressions: Collection[str] = (),
) -> dict[str, tuple[str, ...]]:
    """Which versions get labels, and their ``alias`` label values.

    Args:
        versions: Every known version of one model -> the aliases it holds.
        policy: The limits.
        regressions: The versions whose current judgement is a regression (from their tags);
            the newest ``policy.regressions`` of those newer than the champion stay labelled
            (see :class:`LabelPolicy`).

    Returns:
        ``{version: alias values}`` for each labelled version: one value per kept alias it
        holds, or ``("",)`` for an unaliased version among the latest or an open regression. A
        version both aliased and among the latest appears once per alias (not also with ``""``).

    Raises:
        ValueError: A version is not a positive integer string.
    """
    ordered = sorted(versions, key=_version_number)
    held = sorted(
        {a for v in ordered for a in versions[v] if policy.aliases is None or a in policy.aliases}
    )
    kept = set(held[: policy.max_aliases])
    latest = set(ordered[-policy.latest :]) if policy.latest else set()
    champions = [_version_number(v) for v in ordered if policy.champion_alias in versions[v]]
    open_regressions = [
        v for v in ordered if v in regressions and champions and _version_number(v) > max(champions)
    ]
    if policy.regressions:
        latest |= set(open_regressions[-policy.regressions :])
    out: dict[str, tuple[str, ...]] = {}
    for version in ordered:
        aliases = tuple(sorted(a for a in versions[version] if a in kept))
        if aliases:
            out[version] = aliases
        elif version in latest:
            out[version] = ("",)
    return out


@dataclass(frozen=True)
class VersionRecord:
    """What the per-version gauges show for one model version.

    Attributes:
        model: Registered model name.
        version: Version number (a string, as MLflow gives it).
        aliases: Aliases the version holds.
        summary: Its score summary (``None``: not scored yet -- no SSLMem gauges).
        judgement: Its judgement against the champion (``None``: not judged).
        knn_accuracy: Downstream kNN accuracy (``None``: take it from the judgement, if any).
        linear_probe_accuracy: Linear-probe accuracy (likewise).
        refreshed_at: Unix time at which the reading of these values from MLflow *began* (so a
            write that happened before it is in them); 0 when unknown.
    """

    model: str
    version: str
    aliases: tuple[str, ...] = ()
    summary: ScoreSummary | None = None
    judgement: Judgement | None = None
    knn_accuracy: float | None = None
    linear_probe_accuracy: float | None = None
    refreshed_at: float = 0.0

    def __post_init__(self) -> None:
        _version_number(self.version)


@dataclass
class _Family:
    name: str
    help: str
    extra: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def metric(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.help, labels=[*VERSION_LABELS, *self.extra])
        for labels, value in self.samples:
            family.add_metric(list(labels), value)
        return family


def _families() -> dict[str, _Family]:
    families = [
        _Family("sslmem_version_sslmem_mean", "Mean raw SSLMem of a scored set.", ("set",)),
        _Family(
            "sslmem_version_fraction_above_threshold",
            "Fraction of S_C with raw SSLMem above the model's policy threshold.",
        ),
        _Family(
            "sslmem_version_verdict",
            "Protocol verdict of the version: 1 for its state, 0 for the others.",
            ("verdict",),
        ),
        _Family("sslmem_version_knn_accuracy", "Downstream kNN top-1 accuracy (0-1)."),
        _Family("sslmem_version_linear_probe_accuracy", "Linear-probe top-1 accuracy (0-1)."),
        _Family(
            "sslmem_version_champion_delta",
            "Candidate minus champion of a quantity (present when comparable).",
            ("quantity",),
        ),
        _Family(
            "sslmem_version_judgement",
            "Judgement against the champion: 1 for the outcome, 0 for the others.",
            ("outcome",),
        ),
        _Family(
            "sslmem_version_regression",
            "1 if the version is judged a regression against the champion, else 0.",
        ),
        _Family(
            "sslmem_version_refreshed_timestamp_seconds",
            "Unix time at which this replica began reading the version's record from MLflow "
            "(the alert rules follow the newest reading among replicas).",
        ),
    ]
    return {f.name: f for f in families}


def _record_samples(record: VersionRecord, alias: str, families: Mapping[str, _Family]) -> None:
    base = (record.model, record.version, alias)

    def add(name: str, value: float | None, *extra: str) -> None:
        if value is not None:
            families[name].samples.append(((*base, *extra), float(value)))

    judgement = record.judgement
    accuracy = judgement.accuracy if judgement else None
    add("sslmem_version_refreshed_timestamp_seconds", record.refreshed_at)
    if record.summary is not None:
        for set_name, stats in record.summary.sets.items():
            add("sslmem_version_sslmem_mean", stats.mean, set_name)
        state = verdict_state(record.summary)
        for verdict in VERDICT_STATES:
            add("sslmem_version_verdict", float(verdict == state), verdict)
    knn = record.knn_accuracy
    probe = record.linear_probe_accuracy
    if accuracy is not None:
        knn = knn if knn is not None else accuracy.knn_candidate
        probe = probe if probe is not None else accuracy.linear_probe_candidate
    add("sslmem_version_knn_accuracy", knn)
    add("sslmem_version_linear_probe_accuracy", probe)
    if judgement is None:
        return
    add("sslmem_version_fraction_above_threshold", judgement.candidate_fraction_above)
    deltas = {
        "sslmem_mean": judgement.mean.delta if judgement.mean else None,
        "fraction_above_threshold": judgement.fraction.delta if judgement.fraction else None,
        "knn_accuracy": accuracy.knn_delta if accuracy else None,
        "linear_probe_accuracy": accuracy.linear_probe_delta if accuracy else None,
    }
    for quantity in DELTA_QUANTITIES:
        add("sslmem_version_champion_delta", deltas[quantity], quantity)
    for outcome in JudgementOutcome:
        add("sslmem_version_judgement", float(outcome is judgement.outcome), outcome.value)
    add("sslmem_version_regression", float(judgement.regression))


class _VersionCollector(Collector):
    """Per-version gauges, computed at scrape time from the owner's table."""

    def __init__(self, owner: ServiceMetrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        return [family.metric() for family in _families().values()]

    def collect(self) -> Iterable[Metric]:
        families = _families()
        for record, alias in self._owner.labelled():
            _record_samples(record, alias, families)
        return [family.metric() for family in families.values()]


class _PolicyCollector(Collector):
    """``sslmem_model_policy``, computed at scrape time from the owner's policy table."""

    def __init__(self, owner: ServiceMetrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for model, policy in self._owner.policies().items():
            for setting in POLICY_SETTINGS:
                value = getattr(policy, setting)
                if value is not None:  # an unset budget has no series
                    family.add_metric([model, setting], float(value))
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "sslmem_model_policy",
            "Effective judgement policy of a model: service defaults overridden by its "
            "sslmem.policy.* tags (budgets only when set).",
            labels=["model", "setting"],
        )


class _ClockSkewCollector(Collector):
    """``sslmem_clock_skew_seconds``: present only once measured."""

    def __init__(self, owner: ServiceMetrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        skew = self._owner.clock_skew()
        if skew is not None:
            family.add_metric([], skew)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "sslmem_clock_skew_seconds",
            "This replica's wall clock minus the object store's (its Date header), measured at "
            "start-up; absent until measured, and for a local store.",
        )


class ServiceMetrics:
    """The service's metric catalogue in its own registry.

    Args:
        registry: Where to register (default: a new :class:`CollectorRegistry`).
        labels: Which versions get ``version``/``alias`` labels.

    Raises:
        ValueError: (from the recording methods) an outcome, reason or version outside the
            fixed enums -- a programming error that would otherwise add unbounded series.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, labels: LabelPolicy | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.label_policy = labels or LabelPolicy()
        self._lock = threading.Lock()
        self._versions: dict[str, dict[str, VersionRecord]] = {}
        self._aliases: dict[str, dict[str, str]] = {}  # model -> {alias: version}
        self._policies: dict[str, JudgementPolicy] = {}
        r = self.registry
        self.scoring_duration = Histogram(
            "sslmem_scoring_duration_seconds",
            "Wall time of scoring one model version (load, score, record).",
            buckets=SCORING_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "sslmem_queue_depth",
            "Jobs waiting on this replica: queued, or waiting out a retry backoff (not running).",
            registry=r,
        )
        self.jobs = Counter(
            "sslmem_jobs",
            "Worker jobs of this replica by kind and how they ended.",
            ["kind", "outcome"],
            registry=r,
        )
        for kind in JOB_KINDS:  # every series exported from the start (rate() works)
            for job_outcome in JOB_OUTCOMES:
                self.jobs.labels(kind=kind, outcome=job_outcome)
        self.dependency_up = Gauge(
            "sslmem_dependency_up",
            "1 if the dependency answered this replica's last probe, 0 if not (no series: "
            "not probed yet).",
            ["dependency"],
            registry=r,
        )
        self._clock_skew: float | None = None  # no series until measured (0 would be a claim)
        r.register(_ClockSkewCollector(self))
        self.versions_scored = Counter(
            "sslmem_versions_scored", "Versions scored by this replica.", ["model"], registry=r
        )
        self.versions_failed = Counter(
            "sslmem_versions_failed",
            "Versions whose scoring failed, by reason.",
            ["model", "reason"],
            registry=r,
        )
        self.scoring_retries = Counter(
            "sslmem_scoring_retries",
            "Scoring jobs re-queued after a backoff because MLflow or the store did not answer.",
            ["reason"],
            registry=r,
        )
        for retry_reason in RETRY_REASONS:
            self.scoring_retries.labels(reason=retry_reason.value)
        self.webhook_deliveries = Counter(
            "sslmem_webhook_deliveries",
            "MLflow webhook deliveries received, by outcome.",
            ["outcome"],
            registry=r,
        )
        for outcome in WEBHOOK_OUTCOMES:  # every outcome exported from the start (rate() works)
            self.webhook_deliveries.labels(outcome=outcome)
        self.last_success = Gauge(
            "sslmem_last_success_timestamp_seconds",
            "Unix time of the last version this replica scored successfully (0: none yet).",
            registry=r,
        )
        r.register(_VersionCollector(self))
        r.register(_PolicyCollector(self))

    # -- service-wide --------------------------------------------------------------------------

    def observe_scoring(self, seconds: float) -> None:
        """Record the wall time of scoring one version."""
        self.scoring_duration.observe(seconds)

    def set_queue_depth(self, depth: int) -> None:
        """Set the number of versions waiting to be scored."""
        self.queue_depth.set(depth)

    def job_done(self, kind: str, outcome: str) -> None:
        """Count a worker job under one of :data:`JOB_KINDS` and :data:`JOB_OUTCOMES`."""
        if kind not in JOB_KINDS or outcome not in JOB_OUTCOMES:
            raise ValueError(
                f"unknown job kind/outcome {kind!r}/{outcome!r}; one of {JOB_KINDS}/{JOB_OUTCOMES}"
            )
        self.jobs.labels(kind=kind, outcome=outcome).inc()

    def set_dependency(self, dependency: str, up: bool) -> None:
        """Record the last probe of one of :data:`DEPENDENCIES`."""
        if dependency not in DEPENDENCIES:
            raise ValueError(f"unknown dependency {dependency!r}; one of {DEPENDENCIES}")
        self.dependency_up.labels(dependency=dependency).set(1.0 if up else 0.0)

    def set_clock_skew(self, seconds: float) -> None:
        """Record this replica's clock minus the object store's, in seconds."""
        with self._lock:
            self._clock_skew = float(seconds)

    def clock_skew(self) -> float | None:
        """The measured clock skew (``None``: not measured yet)."""
        with self._lock:
            return self._clock_skew

    def version_scored(self, model: str, *, now: float | None = None) -> None:
        """Count a successfully scored version and set the last-success time."""
        self.versions_scored.labels(model=model).inc()
        self.last_success.set(time.time() if now is None else now)

    def version_failed(self, model: str, reason: FailureReason | str) -> None:
        """Count a failed version under one :class:`FailureReason`."""
        value = FailureReason(reason).value  # ValueError for a reason outside the enum
        self.versions_failed.labels(model=model, reason=value).inc()

    def scoring_retry(self, reason: FailureReason | str) -> None:
        """Count a job re-queued after a backoff under one of :data:`RETRY_REASONS`."""
        value = FailureReason(reason)  # ValueError for a reason outside the enum
        if value not in RETRY_REASONS:
            raise ValueError(f"{value.value!r} is not retried; one of {RETRY_REASONS}")
        self.scoring_retries.labels(reason=value.value).inc()

    def webhook_delivery(self, outcome: str | Enum) -> None:
        """Count a webhook delivery under one of :data:`WEBHOOK_OUTCOMES`."""
        value = outcome.value if isinstance(outcome, Enum) else outcome
        if value not in WEBHOOK_OUTCOMES:
            raise ValueError(f"unknown webhook outcome {value!r}; one of {WEBHOOK_OUTCOMES}")
        self.webhook_deliveries.labels(outcome=value).inc()

    # -- per version ---------------------------------------------------------------------------

    def set_version(
        self,
        model: str,
        version: str,
        *,
        summary: ScoreSummary | None,
        judgement: Judgement | None = None,
        aliases: Iterable[str] = (),
        knn_accuracy: float | None = None,
        linear_probe_accuracy: float | None = None,
    ) -> None:
        """Set (or replace) the per-version gauges of one version from its summary + judgement.

        Whether they are exported depends on :func:`label_eligibility` over the model's known
        versions; a version pushed out (a newer one arrived, an alias moved) loses its series.
        """
        record = VersionRecord(
            model=model,
            version=str(version),
            aliases=tuple(sorted(set(aliases))),
            summary=summary,
            judgement=judgement,
            knn_accuracy=knn_accuracy,
            linear_probe_accuracy=linear_probe_accuracy,
        )
        with self._lock:
            self._versions.setdefault(model, {})[record.version] = record

    def set_aliases(self, model: str, aliases: Mapping[str, str]) -> None:
        """Record where a model's aliases point now (``{alias: version}``), e.g. after a move.

        Known versions take the aliases that point at them and lose the others; an alias
        pointing at a version not yet known here gives no series until :meth:`set_version`.
        """
        with self._lock:
            # Kept for the champion's version even when it has no record (not scored, or its
            # summary unreadable this pass): open regressions are defined against it.
            self._aliases[model] = {a: str(v) for a, v in aliases.items()}
            known = self._versions.get(model, {})
            for version, record in known.items():
                held = tuple(sorted(a for a, v in aliases.items() if str(v) == version))
                known[version] = replace(record, aliases=held)

    def forget_version(self, model: str, version: str) -> None:
        """Drop a version (deleted from the registry); its series disappear."""
        with self._lock:
            self._versions.get(model, {}).pop(str(version), None)

    def update_model(
        self,
        model: str,
        records: Iterable[VersionRecord],
        *,
        read_at: float,
        keep: Collection[str] = (),
    ) -> None:
        """Replace one model's records with a fresh reading from MLflow.

        Args:
            model: Registered model name.
            records: Its records as read (every other version of the model loses its series:
                deleted, no longer scored, or no longer eligible for labels).
            read_at: Unix time at which the reading began (each record's ``refreshed_at``).
            keep: Versions whose reading failed this time: their previous record stays.

        A version whose current record is newer than ``read_at`` (a job re-read it meanwhile)
        keeps it: an older reading never replaces a newer one.
        """
        fresh = {r.version: replace(r, refreshed_at=read_at) for r in records if r.model == model}
        with self._lock:
            old = self._versions.get(model, {})
            table = {v: r for v, r in old.items() if v in keep or r.refreshed_at > read_at}
            for version, record in fresh.items():
                current = table.get(version)
                if current is None or current.refreshed_at <= read_at:
                    table[version] = record
            self._versions[model] = table

    def retain_models(self, models: Collection[str], *, read_at: float) -> None:
        """Drop every model not in ``models`` (deleted, or out of scope) with its series.

        A model whose records were all read before ``read_at`` -- the start of the listing that
        did not contain it -- is dropped; one a job read meanwhile stays until the next pass.
        """
        with self._lock:
            for model in [m for m in self._versions if m not in models]:
                records = self._versions[model].values()
                if all(r.refreshed_at <= read_at for r in records):
                    del self._versions[model]
                    self._aliases.pop(model, None)
            for model in [m for m in self._policies if m not in models]:
                del self._policies[model]

    def set_policy(self, model: str, policy: JudgementPolicy | None) -> None:
        """Set (or, with ``None``, drop) the ``sslmem_model_policy`` series of one model.

        Args:
            model: Registered model name.
            policy: Its effective policy (:func:`model_policy`).
        """
        with self._lock:
            if policy is None:
                self._policies.pop(model, None)
            else:
                self._policies[model] = policy

    def policies(self) -> dict[str, JudgementPolicy]:
        """A copy of the exported ``{model: effective policy}`` table."""
        with self._lock:
            return dict(self._policies)

    def rebuild(
        self,
        records: Iterable[VersionRecord],
        policies: Mapping[str, JudgementPolicy | None] | None = None,
    ) -> None:
        """Replace every per-version gauge with ``records`` (e.g. read from MLflow at start-up).

        Models and versions not in ``records`` lose their series; likewise every model's
        policy series is replaced by ``policies`` (``None`` values and absent models: none).
        """
        table: dict[str, dict[str, VersionRecord]] = {}
        for record in records:
            table.setdefault(record.model, {})[record.version] = record
        kept = {m: p for m, p in (policies or {}).items() if p is not None}
        with self._lock:
            self._versions = table
            self._policies = kept
            self._aliases = {}

    def labelled(self) -> Iterator[tuple[VersionRecord, str]]:
        """``(record, alias label)`` of every exported series, under the label policy."""
        champion_alias = self.label_policy.champion_alias
        with self._lock:
            table = {model: dict(versions) for model, versions in self._versions.items()}
            champions = {m: a.get(champion_alias) for m, a in self._aliases.items()}
        for model in sorted(table):
            versions = table[model]
            held: dict[str, tuple[str, ...]] = {v: r.aliases for v, r in versions.items()}
            champion = champions.get(model)
            if champion is not None and champion not in held:
                held[champion] = (champion_alias,)
            eligible = label_eligibility(
                held,
                self.label_policy,
                {v for v, r in versions.items() if r.judgement and r.judgement.regression},
            )
            for version, aliases in eligible.items():
                if version not in versions:  # the champion known only by its alias
                    continue
                for alias in aliases:
                    yield versions[version], alias

    def render(self) -> bytes:
        """The text exposition of this registry (what ``GET /metrics`` returns)."""
        return generate_latest(self.registry)
