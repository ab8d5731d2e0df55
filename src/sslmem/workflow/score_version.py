"""Score one registered model version, exactly once, and judge it against the champion.

The scoring service's unit of work (and what any other process that scores a registered version
should call). State lives in MLflow version tags only::

    (absent) | training | pending  ->  running  ->  scored | failed (+ sslmem.failure_reason)

1. **Claim**: a lease object in the object store (:func:`~sslmem.service.lease.version_lease_key`),
   renewed by a :class:`~sslmem.service.lease.LeaseRenewer` while scoring and released after.
   A version another process holds is left alone (``busy``); a holder killed mid-scoring stops
   renewing, and after the TTL the next claim takes the lease over and scores the version again
   (its status is still ``running``).
2. **Score**: the provenance is read with
   :func:`~sslmem.workflow.scoring_inputs.read_scoring_inputs`, both encoders are downloaded
   weights-only from the registry, and the pipeline's own
   :func:`~sslmem.workflow.score.score_pair` scores them -- the run, artifacts and summary
   tags are exactly the pipeline's.
3. **Judge** (:func:`judge_registered_version`): against the version holding the champion alias,
   when that one is scored, under the model's policy (``sslmem.policy.*`` registered-model tags
   over the service defaults). Written as ``sslmem.judgement`` (the outcome),
   ``sslmem.judged_against`` (the champion version, ``none`` without one) and
   ``sslmem.judgement_json`` (the full :class:`~sslmem.memorization.judgement.Judgement`).

A version whose provenance is missing, whose weights are corrupt or whose reference does not
exist ends ``failed`` with the reason; MLflow or the object store being unreachable is not a
verdict on the version: the error propagates and the version is tried again later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from sslmem.config import ExperimentConfig, RuntimeSettings, load_experiment_config
from sslmem.errors import CheckpointError, SSLMemError, StoreError, TrackingError
from sslmem.tracking import tags as T
from sslmem.workflow._common import configure_tracking, process_settings
from sslmem.workflow.scoring_inputs import MissingProvenanceError, read_scoring_inputs
from sslmem.workflow.versions import VersionInfo

if TYPE_CHECKING:
    from sslmem.memorization.judgement import Judgement, JudgementPolicy, ScoredVersion
    from sslmem.memorization.scoring import ScoreReport, ScoreSummary
    from sslmem.service.lease import LeaseManager, LeaseRenewer
    from sslmem.service.settings import ServiceSettings

__all__ = [
    "SCORABLE_STATUSES",
    "VersionClaim",
    "VersionResult",
    "judge_registered_version",
    "needs_scoring",
    "open_lease_manager",
    "read_score_report",
    "score_pair_claimed",
    "score_registered_version",
    "version_claim",
]

logger = logging.getLogger(__name__)

#: Statuses of a version still to be scored (``running``: its lease decides whether it is live).
SCORABLE_STATUSES = ("", "training", "pending", "running")
Outcome = Literal["scored", "failed", "skipped", "busy", "lost"]
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "not found", "does not exist", "404")


@dataclass(frozen=True)
class VersionResult:
    """How one attempt at a version ended.

    Attributes:
        name: Registered model name.
        version: Version number.
        outcome: ``scored``; ``failed`` (tagged, with ``reason`` and ``failure``); ``skipped``
            (already scored or failed, or a reference); ``busy`` (another process holds the
            lease); ``lost`` (our lease was taken over while scoring).
        reason: Why it failed or was skipped.
        failure: The :class:`~sslmem.service.metrics.FailureReason` value when failed.
        summary: The score summary when scored.
        judgement: The judgement, when one was made.
        seconds: Wall time of the attempt.

    """

    name: str
    version: str
    outcome: Outcome
    reason: str = ""
    failure: str | None = None
    summary: ScoreSummary | None = None
    judgement: Judgement | None = None
    seconds: float = 0.0


def needs_scoring(tags: dict[str, str]) -> bool:
    """Whether a version with these tags is still to be scored (references never are)."""
    if tags.get(T.ROLE) == "reference":
        return False
    return tags.get(T.STATUS, "") in SCORABLE_STATUSES


def open_lease_manager(settings: ServiceSettings, runtime: RuntimeSettings) -> LeaseManager:
    """The lease manager on the object store of ``runtime`` (``SSLMEM_STORE_URI``)."""
    from sslmem.service.lease import LeaseManager
    from sslmem.service.lease_store import open_conditional_store

    store = open_conditional_store(runtime.store_uri, runtime)
    return LeaseManager(store, settings.replica_id, settings.lease_ttl_s)


def service_config(settings: ServiceSettings) -> ExperimentConfig:
    """The experiment config the service scores with (recipe + overrides)."""
    return load_experiment_config(settings.recipe, list(settings.config_overrides) or None)


def _is_permanent(exc: StoreError) -> bool:
    """Whether a store error is about the input (a missing object), not the store's health."""
    return "does not exist" in exc.problem or "invalid" in exc.problem


def is_not_found(exc: SSLMemError) -> bool:
    """Whether MLflow said the thing does not exist (not that it could not be asked)."""
    if getattr(exc.__cause__, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
        return True
    if "unreachable" in exc.problem or "did not answer" in exc.problem:
        return False
    text = f"{exc.problem} {exc.__cause__ or ''}"
    return any(marker in text for marker in _NOT_FOUND)


class VersionClaim:
    """A held claim on a model version (see :func:`version_claim`).

    Attributes:
        renewer: Renews the lease while the claim is held; check ``renewer.lost`` before
            publishing results.
        still_ours: Set when the claim ends: whether the lease was still ours when released.

    """

    def __init__(self, renewer: LeaseRenewer) -> None:
        self.renewer = renewer
        self.still_ours: bool | None = None


@contextlib.contextmanager
def version_claim(
    name: str,
    version: str | int,
    *,
    settings: ServiceSettings,
    lease_manager: LeaseManager | None = None,
    runtime: RuntimeSettings | None = None,
    on_claim: Callable[[LeaseRenewer | None], None] | None = None,
) -> Iterator[VersionClaim | None]:
    """Hold the exactly-once claim on a version for the block; ``None`` if another holds it.

    The same claim for every scorer of registered versions (the service, the pipeline's
    scoring step): the lease :func:`~sslmem.service.lease.version_lease_key` in the object
    store, renewed every ``settings.lease_renew_s`` and released when the block ends.

    Example:
        >>> with version_claim("enc", "3", settings=settings) as claim:  # doctest: +SKIP
        ...     if claim is not None:
        ...         score_pair(...)

    Raises:
        StoreError: The object store is unreachable.

    """
    from sslmem.service.lease import LeaseRenewer, version_lease_key

    manager = lease_manager or open_lease_manager(settings, process_settings(runtime))
    lease = manager.acquire(version_lease_key(name, version, settings.lease_prefix))
    if lease is None:
        yield None
        return
    claim = VersionClaim(LeaseRenewer(manager, lease, settings.lease_renew_s).start())
    if on_claim is not None:
        on_claim(claim.renewer)
    try:
        yield claim
    finally:
        claim.still_ours = claim.renewer.stop(release=True)
        if on_claim is not None:
            on_claim(None)


def score_registered_version(
    name: str,
    version: str | int,
    *,
    settings: ServiceSettings,
    lease_manager: LeaseManager | None = None,
    runtime: RuntimeSettings | None = None,
    config: ExperimentConfig | None = None,
    on_claim: Callable[[LeaseRenewer | None], None] | None = None,
) -> VersionResult:
    """Claim, score and judge one registered version (see the module docstring).

    Args:
        name: Registered model name.
        version: Version number.
        settings: Service settings (lease TTL and renewal, experiment, device, champion alias,
            policy, recipe).
        lease_manager: Lease manager (default: on ``runtime.store_uri``).
        runtime: Runtime settings (MLflow, object store; default from the environment).
        config: Experiment config to score with (default: :func:`service_config`).
        on_claim: Called with the lease renewer once the version is claimed, and with ``None``
            once it is released (lets the service release leases on shutdown).

    Returns:
        How the attempt ended.

    Raises:
        TrackingError: MLflow is unreachable (nothing decided: try again later).
        StoreError: The object store is unreachable (likewise).

    """
    from sslmem.tracking import get_version_tags

    started = time.monotonic()
    number = T.check_version_number(version)
    runtime = process_settings(runtime)
    configure_tracking(runtime)

    def done(outcome: Outcome, reason: str = "", **fields: Any) -> VersionResult:
        return VersionResult(
            name, number, outcome, reason, seconds=time.monotonic() - started, **fields
        )

    try:
        tags = get_version_tags(name, number)
    except TrackingError as exc:
        if is_not_found(exc):  # nothing to tag: the version itself does not exist
            return done("failed", exc.problem, failure="unknown_model")
        raise
    if not needs_scoring(tags):
        return done("skipped", f"status {tags.get(T.STATUS)!r}, role {tags.get(T.ROLE)!r}")
    with version_claim(
        name,
        number,
        settings=settings,
        lease_manager=lease_manager,
        runtime=runtime,
        on_claim=on_claim,
    ) as claim:
        if claim is None:
            return done("busy", "another process holds the lease")
        tags = get_version_tags(name, number)  # someone may have finished before our claim
        if not needs_scoring(tags):
            return done("skipped", f"status {tags.get(T.STATUS)!r}")
        from sslmem.tracking import set_version_tags

        set_version_tags(name, number, {T.STATUS: "running"})
        summary, failure = _score_claimed(name, number, settings, runtime, config)
    still_ours = bool(claim.still_ours)
    if failure is not None:
        return done("failed", failure[1], failure=failure[0])
    if not still_ours:
        logger.warning("lease of %s/%s was lost while scoring", name, number)
        return done("lost", "the lease was taken over while scoring", summary=summary)
    judgement = None
    try:
        judgement = judge_registered_version(name, number, settings=settings, runtime=runtime)
    except SSLMemError as exc:  # the score stands; reconcile judges again later
        logger.warning("could not judge %s/%s: %s", name, number, exc.problem)
    return done("scored", summary=summary, judgement=judgement)


def _fail(name: str, version: str, kind: str, reason: str) -> tuple[None, tuple[str, str]]:
    from sslmem.tracking import mark_version_failed

    logger.warning("model %s version %s failed (%s): %s", name, version, kind, reason)
    mark_version_failed(name, version, reason)
    return None, (kind, reason)


def _score_claimed(
    name: str,
    version: str,
    settings: ServiceSettings,
    runtime: RuntimeSettings,
    config: ExperimentConfig | None,
) -> tuple[ScoreSummary | None, tuple[str, str] | None]:
    """Score a claimed version; ``(summary, None)`` or ``(None, (failure kind, reason))``."""
    from sslmem.service.metrics import failure_reason
    from sslmem.tracking import load_registered_encoder
    from sslmem.workflow.score import score_pair

    try:
        inputs = read_scoring_inputs(name, version)
    except MissingProvenanceError as exc:
        return _fail(name, version, "missing_provenance", exc.problem)
    device = settings.device or runtime.device
    cache = settings.model_cache_dir
    try:
        candidate = load_registered_encoder(f"models:/{name}/{version}", cache_dir=cache)
    except CheckpointError as exc:
        return _fail(name, version, "invalid_checkpoint", f"candidate weights: {exc.problem}")
    except TrackingError as exc:
        if "checkpoint artifact" in exc.problem or is_not_found(exc):
            return _fail(name, version, "invalid_checkpoint", exc.problem)
        raise
    try:
        reference = load_registered_encoder(inputs.reference_uri, cache_dir=cache)
    except CheckpointError as exc:
        return _fail(name, version, "invalid_checkpoint", f"reference weights: {exc.problem}")
    except TrackingError as exc:
        if is_not_found(exc) or "checkpoint artifact" in exc.problem:
            return _fail(
                name, version, "unknown_model", f"reference {inputs.reference_uri}: {exc.problem}"
            )
        raise
    base = config if config is not None else service_config(settings)
    scoring = base.scoring.model_copy(update={"layer": inputs.layer})
    run_config = base.model_copy(update={"augmentation": inputs.augmentation, "scoring": scoring})
    with tempfile.TemporaryDirectory(prefix="sslmem-service-") as tmp:
        try:
            report = score_pair(
                candidate_checkpoints=[candidate],
                reference_checkpoints=[reference],
                manifest_path=inputs.split_manifest_uri,
                config=run_config,
                out_dir=Path(tmp),
                candidate=VersionInfo(name, version),
                reference=VersionInfo(inputs.reference_name, inputs.reference_version),
                experiment=settings.experiment,
                # One score run per version, whichever replica (or takeover) gets there.
                pipeline_run_id=f"service/{quote(name, safe='')}/{version}",
                device=device,
                settings=runtime,
            )
        except TrackingError:
            raise  # MLflow down: not a verdict on the version
        except StoreError as exc:
            if not _is_permanent(exc):
                raise  # the object store is down: try again later
            return _fail(name, version, "data", exc.problem)
        except SSLMemError as exc:
            return _fail(name, version, failure_reason(exc).value, exc.problem)
    return report.summary, None


# -- judgement ---------------------------------------------------------------------------------


def _scored_version(name: str, version: str, tags: dict[str, str]) -> ScoredVersion:
    """A scored version's per-point scores and summary, from its score run's artifacts."""
    import pyarrow.parquet as pq
    from mlflow.artifacts import download_artifacts

    from sslmem.memorization.judgement import ScoredVersion
    from sslmem.memorization.scoring import ScoreSummary
    from sslmem.tracking.connection import tracking_errors
    from sslmem.tracking.runs import SCORING_ARTIFACT_DIR

    run_id = T.score_run_id(tags)
    if not run_id:
        raise TrackingError(
            f"model {name!r} version {version} is scored but its {T.PROVENANCE} names no "
            f"{T.SCORE_RUN}"
        )
    with tempfile.TemporaryDirectory(prefix="sslmem-judge-") as tmp:
        with tracking_errors(f"download the scores of model {name!r} version {version}"):
            folder = Path(
                download_artifacts(run_id=run_id, artifact_path=SCORING_ARTIFACT_DIR, dst_path=tmp)
            )
        summary = ScoreSummary.model_validate_json((folder / "summary.json").read_text())
        columns = pq.read_table(folder / "scores.parquet").to_pydict()

    def accuracy(key: str) -> float | None:
        return float(tags[key]) if tags.get(key) else None

    return ScoredVersion.from_scores(
        version,
        columns,
        summary,
        knn_accuracy=accuracy(T.KNN_ACCURACY),
        linear_probe_accuracy=accuracy(T.LINEAR_PROBE_ACCURACY),
    )


def _model_policy(name: str, defaults: JudgementPolicy) -> JudgementPolicy:
    from sslmem.memorization.judgement import policy_from_tags
    from sslmem.tracking.connection import client, tracking_errors

    with tracking_errors(f"read the tags of registered model {name!r}"):
        model_tags = dict(client().get_registered_model(name).tags)
    return policy_from_tags(model_tags, defaults)


def champion_version(name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or ``None`` if the alias is not set.

    Raises:
        TrackingError: MLflow is unreachable.

    """
    from sslmem.tracking import resolve_alias

    try:
        return resolve_alias(name, alias)
    except TrackingError as exc:
        if is_not_found(exc):
            return None
        raise


def judge_registered_version(
    name: str,
    version: str | int,
    *,
    settings: ServiceSettings,
    runtime: RuntimeSettings | None = None,
) -> Judgement | None:
    """Judge a scored version against the champion and write the judgement tags.

    Returns:
        The judgement, or ``None`` when there is nothing to judge yet (the version is not
        scored, or the champion is not).

    Raises:
        TrackingError: MLflow is unreachable, or the scores cannot be read.
        ConfigError: The model's ``sslmem.policy.*`` tags are invalid.

    """
    from sslmem.memorization.judgement import judge
    from sslmem.tracking import get_version_tags, set_version_tags

    number = T.check_version_number(version)
    configure_tracking(process_settings(runtime))
    tags = get_version_tags(name, number)
    if tags.get(T.STATUS) != "scored" or tags.get(T.ROLE) == "reference":
        return None
    champion_number = champion_version(name, settings.champion_alias)
    champion = None
    if champion_number is not None and champion_number != number:
        champion_tags = get_version_tags(name, champion_number)
        if champion_tags.get(T.STATUS) != "scored":
            return None  # judged once the champion is scored (reconcile sees the mismatch)
        champion = _scored_version(name, champion_number, champion_tags)
    policy = _model_policy(name, settings.judgement_policy())
    judgement = judge(_scored_version(name, number, tags), champion, policy)
    set_version_tags(
        name,
        number,
        {
            T.JUDGEMENT_JSON: json.dumps(judgement.model_dump(mode="json"), separators=(",", ":")),
            T.JUDGED_AGAINST: champion_number or "none",
            T.JUDGEMENT: judgement.outcome.value,
        },
    )
    logger.info(
        "judged %s/%s against %s: %s", name, number, champion_number, judgement.outcome.value
    )
    return judgement


def read_score_report(run_id: str) -> ScoreReport:
    """The report a score run logged (per-point table and summary), read back from MLflow.

    Raises:
        TrackingError: The run or its artifacts are missing, or MLflow is unreachable.

    """
    import pyarrow.parquet as pq
    from mlflow.artifacts import download_artifacts

    from sslmem.memorization.scoring import SCORE_COLUMNS, ScoreReport, ScoreSummary
    from sslmem.tracking.connection import tracking_errors
    from sslmem.tracking.runs import SCORING_ARTIFACT_DIR

    with tempfile.TemporaryDirectory(prefix="sslmem-report-") as tmp:
        with tracking_errors(f"download the score report of run {run_id}"):
            local = Path(
                download_artifacts(run_id=run_id, artifact_path=SCORING_ARTIFACT_DIR, dst_path=tmp)
            )
        try:
            summary = ScoreSummary.model_validate_json((local / "summary.json").read_text())
            table = pq.read_table(local / "scores.parquet")
            columns = {name: table.column(name).to_numpy() for name in SCORE_COLUMNS}
        except (OSError, ValueError, KeyError) as exc:
            raise TrackingError(
                f"the score report of run {run_id} is incomplete or unreadable: {exc}",
                "re-score the version",
            ) from exc
    return ScoreReport(columns=columns, summary=summary)


def score_pair_claimed(
    *,
    candidate: VersionInfo,
    out_dir: Path,
    wait_s: float = 3600.0,
    poll_s: float = 5.0,
    service_settings: ServiceSettings | None = None,
    **score_pair_args: Any,
) -> ScoreReport:
    """:func:`~sslmem.workflow.score.score_pair` of a registered candidate, exactly once.

    The pipeline's scoring step and the scoring service score a version under the same claim
    (:func:`version_claim`). Whoever gets the claim first scores; the other waits for the
    claim to be released and then uses that result, read back from the score run into
    ``out_dir`` -- so a version gets one score run whichever gets there first.

    Args:
        candidate: The registered candidate version.
        out_dir: Where the report is written (as by ``score_pair``).
        wait_s: How long to wait for another scorer holding the claim.
        poll_s: How often to try the claim while waiting.
        service_settings: Lease settings (default: ``SSLMEM_SERVICE_*`` from the environment).
        **score_pair_args: Everything else ``score_pair`` takes (checkpoints, manifest, config,
            reference, experiment, pipeline run, device, settings).

    Raises:
        ScoringError: Another scorer held the claim past ``wait_s``, or it failed the version.
        See :func:`~sslmem.workflow.score.score_pair` for the rest.

    """
    from sslmem.errors import ScoringError
    from sslmem.memorization.scoring import write_score_report
    from sslmem.service.settings import ServiceSettings
    from sslmem.tracking import get_version_tags
    from sslmem.workflow.score import score_pair

    lease_settings = service_settings or ServiceSettings.load()
    runtime = score_pair_args.get("settings")
    deadline = time.monotonic() + wait_s
    while True:
        with version_claim(
            candidate.name, candidate.version, settings=lease_settings, runtime=runtime
        ) as claim:
            if claim is not None:
                configure_tracking(process_settings(runtime))
                tags = get_version_tags(candidate.name, candidate.version)
                status, run_id = tags.get(T.STATUS), T.score_run_id(tags)
                if status == "scored" and run_id:  # another scorer finished it first
                    logger.info(
                        "%s was scored by another scorer; using run %s", candidate.uri, run_id
                    )
                    report = read_score_report(run_id)
                    write_score_report(report, Path(out_dir))
                    return report
                if status == "failed":
                    raise ScoringError(
                        f"{candidate.uri} was failed by another scorer: "
                        f"{tags.get(T.FAILURE_REASON, '?')}",
                        "fix the cause, then re-run the pipeline",
                    )
                return score_pair(candidate=candidate, out_dir=out_dir, **score_pair_args)
        if time.monotonic() >= deadline:
            raise ScoringError(
                f"{candidate.uri} is being scored by another scorer (its claim was held for "
                f"{wait_s:.0f} s)",
                "wait for the scoring service to finish it, or raise the wait",
            )
        time.sleep(poll_s)
