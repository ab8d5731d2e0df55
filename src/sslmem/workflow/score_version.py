"""Score one registered model version, exactly once, and judge it against the champion.

The scoring service's unit of work (and what any other process that scores a registered version
should call). State lives in MLflow version tags only::

    (absent) | training | pending  ->  running  ->  scored | failed (+ sslmem.failure_reason)

1. **Claim**: a lease object in the object store
   (:func:`~sslmem.coordination.lease.version_lease_key`), renewed by a
   :class:`~sslmem.coordination.lease.LeaseRenewer` while scoring and released after.
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

Publishing is fenced: :meth:`VersionClaim.fence` renews the lease (``If-Match``) right before
each publishing step (score run, model metrics, version tags, reference tags) and the final
``sslmem.status=scored`` is written only right after a fence passed. A lost lease drops the
results (outcome ``lost``, nothing marked). The score run is keyed by version *and* lease
generation (``service/<name>/<version>/g<generation>``), so the one unavoidable race -- a fence
passes, then the lease is taken over before the next write -- leaves one coherent result set:
whichever run the version's provenance names is complete, with one entry per metric.

Failures are classified by type (:mod:`sslmem.errors`): a version whose provenance is missing,
whose weights are corrupt (or absent: a typed not-found) or whose reference does not exist ends
``failed`` with the reason, on the candidate only -- never on its reference. A
:class:`~sslmem.errors.TransientError` (MLflow or the object store unreachable, 5xx,
throttling, artifact writes failing), before or during publishing, is not a verdict on the
version: it propagates and the version is tried again later.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.errors import (
    CheckpointError,
    LeaseLostError,
    NotFoundError,
    SSLMemError,
    StoreError,
    TrackingError,
    is_transient,
)
from sslmem.tracking import tags as T
from sslmem.tracking.connection import is_not_found
from sslmem.tracking.reports import read_score_report
from sslmem.workflow._common import configure_tracking, process_settings
from sslmem.workflow.claim import VersionClaim, open_lease_manager, version_claim
from sslmem.workflow.failures import FailureReason, failure_reason
from sslmem.workflow.judge import judge_registered_version
from sslmem.workflow.scope import ModelScope
from sslmem.workflow.scoring_inputs import (
    MissingProvenanceError,
    check_bound_inputs,
    read_policy,
    scoring_inputs_from_tags,
)
from sslmem.workflow.scoring_settings import (
    VersionScoringSettings,
    lease_settings_from_env,
    service_config,
)
from sslmem.workflow.versions import VersionInfo

if TYPE_CHECKING:
    from sslmem.coordination.lease import LeaseManager, LeaseRenewer
    from sslmem.coordination.settings import LeaseSettings
    from sslmem.memorization.judgement import Judgement
    from sslmem.memorization.scoring import ScoreReport, ScoreSummary

__all__ = [  # the claim's names are re-exported: callers imported them from here
    "SCORABLE_STATUSES",
    "VersionClaim",
    "VersionResult",
    "needs_scoring",
    "open_lease_manager",
    "read_score_report",
    "score_pair_claimed",
    "score_registered_version",
    "service_config",
    "version_claim",
]

logger = logging.getLogger(__name__)

#: Statuses of a version still to be scored (``running``: its lease decides whether it is live).
SCORABLE_STATUSES = ("", "training", "pending", "running")
Outcome = Literal["scored", "failed", "skipped", "busy", "lost", "ignored"]


@dataclass(frozen=True)
class VersionResult:
    """How one attempt at a version ended.

    Attributes:
        name: Registered model name.
        version: Version number.
        outcome: ``scored``; ``failed`` (tagged, with ``reason`` and ``failure``); ``skipped``
            (already scored or failed, or a reference); ``ignored`` (the model is not managed
            by sslmem: nothing was read, written or counted, :mod:`~sslmem.workflow.scope`);
            ``busy`` (another process holds the lease); ``lost`` (our lease was taken over or
            expired before publishing finished: the results were dropped, nothing was marked).
        reason: Why it failed or was skipped.
        failure: The :class:`~sslmem.workflow.failures.FailureReason` value when failed.
        summary: The score summary when scored.
        judgement: The judgement, when one was made.
        seconds: Wall time of the attempt.
        report: The published report when scored (the caller needs not download it again).
        tags: The version's tags as read at the start of the job (before publishing).

    """

    name: str
    version: str
    outcome: Outcome
    reason: str = ""
    failure: str | None = None
    summary: ScoreSummary | None = None
    judgement: Judgement | None = None
    seconds: float = 0.0
    report: ScoreReport | None = None
    tags: dict[str, str] | None = None


def needs_scoring(tags: dict[str, str]) -> bool:
    """Whether a version with these tags is still to be scored (references never are)."""
    if tags.get(T.ROLE) == "reference":
        return False
    return tags.get(T.STATUS, "") in SCORABLE_STATUSES


def score_run_key(name: str, version: str, generation: int) -> str:
    """The pipeline-run id of a version's score run: one per version and lease generation."""
    return f"service/{quote(name, safe='')}/{version}/g{generation}"


def score_registered_version(
    name: str,
    version: str | int,
    *,
    settings: VersionScoringSettings,
    lease_manager: LeaseManager | None = None,
    runtime: RuntimeSettings | None = None,
    config: ExperimentConfig | None = None,
    on_claim: Callable[[LeaseRenewer | None], None] | None = None,
    on_publish: Callable[[str], None] | None = None,
) -> VersionResult:
    """Claim, score, publish (fenced) and judge one registered version (module docstring).

    Args:
        name: Registered model name.
        version: Version number.
        settings: Scoring settings (lease, experiment, device, champion alias, policy, recipe);
            the service's ``ServiceSettings`` is one.
        lease_manager: Lease manager (default: on ``runtime.store_uri``).
        runtime: Runtime settings (MLflow, object store; default from the environment).
        config: Experiment config to score with (default: :func:`service_config`).
        on_claim: Called with the lease renewer once the version is claimed, and with ``None``
            once it is released (lets the service release leases on shutdown).
        on_publish: Called with each publishing step's name (``running`` and
            :data:`~sslmem.workflow.score.PUBLISH_STEPS`) right after its fence passed and
            before it is written (fault injection in tests, progress in logs).

    Returns:
        How the attempt ended.

    Raises:
        TrackingError: MLflow is unreachable (nothing decided: try again later).
        StoreError: The object store is unreachable (likewise).

    """
    from sslmem.tracking import get_version_tags, set_version_tags

    started = time.monotonic()
    number = T.check_version_number(version)
    runtime = process_settings(runtime)
    configure_tracking(runtime)

    def done(outcome: Outcome, reason: str = "", **fields: Any) -> VersionResult:
        return VersionResult(
            name, number, outcome, reason, seconds=time.monotonic() - started, **fields
        )

    if not ModelScope.of(settings.models).allows(name):  # another team's model: hands off
        return done("ignored", "the model is not managed by sslmem")
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
        try:
            # Read once per job, under the claim (someone may have finished before it).
            tags = get_version_tags(name, number)
        except TrackingError as exc:
            if is_not_found(exc):  # nothing to tag: the version itself does not exist
                return done("failed", exc.problem, failure=FailureReason.UNKNOWN_MODEL.value)
            raise
        if not needs_scoring(tags):
            return done(
                "skipped", f"status {tags.get(T.STATUS)!r}, role {tags.get(T.ROLE)!r}", tags=tags
            )

        fence = _fence_of(claim, on_publish)
        try:
            fence("running")
            set_version_tags(name, number, {T.STATUS: "running"})
            report, failure = _score_claimed(
                name, number, tags, settings, runtime, config, claim.generation, fence
            )
            claim.published()
        except LeaseLostError as exc:
            logger.warning("lease of %s/%s lost while scoring: %s", name, number, exc.problem)
            return done("lost", "the lease was lost before publishing finished", tags=tags)
        if failure is not None:
            return done("failed", failure[1], failure=failure[0], tags=tags)
        assert report is not None
        judgement = None
        try:  # under the claim: one judge of a freshly scored version at a time
            judgement = judge_registered_version(
                name, number, settings=settings, runtime=runtime, claim=claim
            )
        except SSLMemError as exc:  # the score stands; reconcile judges again later
            logger.warning("could not judge %s/%s: %s", name, number, exc.problem)
    return done("scored", summary=report.summary, judgement=judgement, report=report, tags=tags)


def _fail(name: str, version: str, kind: str, reason: str) -> tuple[None, tuple[str, str]]:
    """Mark the *candidate* failed (never its reference) and say why."""
    from sslmem.tracking import mark_version_failed

    logger.warning("model %s version %s failed (%s): %s", name, version, kind, reason)
    mark_version_failed(name, version, reason)
    return None, (kind, reason)


def _score_claimed(
    name: str,
    version: str,
    tags: dict[str, str],
    settings: VersionScoringSettings,
    runtime: RuntimeSettings,
    config: ExperimentConfig | None,
    generation: int,
    fence: Callable[[str], None],
) -> tuple[ScoreReport | None, tuple[str, str] | None]:
    """Score a claimed version; ``(report, None)`` or ``(None, (failure kind, reason))``.

    Only permanent, typed input errors fail the version; transient errors and a lost lease
    propagate (nothing is marked).
    """
    from sslmem.tracking import load_registered_encoder
    from sslmem.workflow.rescoring import open_reference_cache
    from sslmem.workflow.score import score_pair

    try:
        inputs = scoring_inputs_from_tags(name, version, tags)
    except MissingProvenanceError as exc:
        return _fail(name, version, FailureReason.MISSING_PROVENANCE.value, exc.problem)
    try:  # accuracies, locations and the reference's scope, before anything is read
        policy = read_policy(runtime, settings.allowed_uri_prefixes)
        check_bound_inputs(
            inputs, tags, policy=policy, runtime=runtime, scope=ModelScope.of(settings.models)
        )
    except TrackingError:
        raise  # MLflow down or refusing: not a verdict on the version
    except SSLMemError as exc:
        if is_transient(exc):
            raise
        return _fail(name, version, FailureReason.DATA.value, exc.problem)
    device = settings.device or runtime.device
    cache = settings.model_cache_dir
    try:
        candidate = load_registered_encoder(f"models:/{name}/{version}", cache_dir=cache)
    except CheckpointError as exc:
        return _fail(name, version, "invalid_checkpoint", f"candidate weights: {exc.problem}")
    except TrackingError as exc:
        if isinstance(exc, NotFoundError):  # typed: no such version or checkpoint artifact
            return _fail(name, version, "invalid_checkpoint", f"candidate weights: {exc.problem}")
        raise  # MLflow down, 5xx, refused: not a verdict on the version
    try:
        reference = load_registered_encoder(inputs.reference_uri, cache_dir=cache)
    except CheckpointError as exc:
        return _fail(name, version, "invalid_checkpoint", f"reference weights: {exc.problem}")
    except TrackingError as exc:
        if isinstance(exc, NotFoundError):
            return _fail(
                name, version, "unknown_model", f"reference {inputs.reference_uri}: {exc.problem}"
            )
        raise
    base = config if config is not None else service_config(settings)
    scoring = base.scoring.model_copy(update={"layer": inputs.layer})
    run_config = base.model_copy(update={"augmentation": inputs.augmentation, "scoring": scoring})
    with tempfile.TemporaryDirectory(prefix="sslmem-score-") as tmp:
        try:
            report = score_pair(
                candidate_checkpoints=[candidate],
                reference_checkpoints=[reference],
                manifest_path=inputs.split_manifest_uri,
                config=run_config,
                out_dir=Path(tmp),
                candidate=VersionInfo(name, version, tags),
                reference=VersionInfo(inputs.reference_name, inputs.reference_version),
                experiment=settings.experiment,
                # One score run per version and claim: a take-over publishes to its own run.
                pipeline_run_id=score_run_key(name, version, generation),
                device=device,
                settings=runtime,
                fence=fence,
                # The reference's losses are computed once per protocol, not per version.
                reference_cache=open_reference_cache(runtime),
            )
        except (LeaseLostError, TrackingError):
            raise  # lease lost, or MLflow down or refusing: not a verdict on the version
        except StoreError as exc:
            if is_transient(exc):
                raise  # the object store is down: try again later
            return _fail(name, version, FailureReason.DATA.value, exc.problem)
        except SSLMemError as exc:
            if is_transient(exc):
                raise
            return _fail(name, version, failure_reason(exc).value, exc.problem)
    return report, None


def _fence_of(
    claim: VersionClaim, on_publish: Callable[[str], None] | None = None
) -> Callable[[str], None]:
    """The fence ``score_pair`` calls before each step: the service's and the pipeline's.

    A step of :data:`~sslmem.workflow.score.PUBLISH_STEPS` opens the result set that shutdown
    lets finish (``running`` does not: it only says the version is being worked on).
    """
    from sslmem.workflow.score import PUBLISH_STEPS  # torch-importing: loaded when needed

    def fence(step: str) -> None:
        claim.fence(publishing=step in PUBLISH_STEPS)
        if on_publish is not None:
            on_publish(step)

    return fence


def score_pair_claimed(
    *,
    candidate: VersionInfo,
    out_dir: Path,
    wait_s: float = 3600.0,
    poll_s: float = 5.0,
    lease_settings: LeaseSettings | None = None,
    service_settings: VersionScoringSettings | None = None,
    on_publish: Callable[[str], None] | None = None,
    **score_pair_args: Any,
) -> ScoreReport:
    """:func:`~sslmem.workflow.score.score_pair` of a registered candidate, exactly once.

    The pipeline's scoring step and the scoring service score a version under the same claim
    (:func:`version_claim`). Whoever gets the claim first scores, fenced like the service
    (:meth:`VersionClaim.fence` before each publishing step); the other waits for the claim
    to be released and then uses that result, read back from the score run into ``out_dir``
    -- so a version gets one score run whichever gets there first.

    Args:
        candidate: The registered candidate version.
        out_dir: Where the report is written (as by ``score_pair``).
        wait_s: How long to wait for another scorer holding the claim.
        poll_s: How often to try the claim while waiting.
        lease_settings: Lease settings (default: ``SSLMEM_SERVICE_LEASE_*`` from the
            environment, as the service reads them).
        service_settings: Anything with ``lease_settings()`` (the service's settings), used
            when ``lease_settings`` is not given.
        on_publish: Called with each publishing step's name right after its fence passed, as
            by :func:`score_registered_version`.
        **score_pair_args: Everything else ``score_pair`` takes (checkpoints, manifest, config,
            reference, experiment, pipeline run, device, settings).

    Raises:
        ScoringError: Another scorer held the claim past ``wait_s``, or it failed the version.
        LeaseLostError: The claim was lost before publishing finished (nothing more written).
        See :func:`~sslmem.workflow.score.score_pair` for the rest.

    """
    from sslmem.errors import ScoringError
    from sslmem.memorization.scoring import write_score_report
    from sslmem.tracking import get_version_tags
    from sslmem.workflow.score import score_pair

    if lease_settings is None:
        lease_settings = (
            service_settings.lease_settings()
            if service_settings is not None
            else lease_settings_from_env()
        )
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
                return score_pair(
                    candidate=VersionInfo(candidate.name, candidate.version, tags),
                    out_dir=out_dir,
                    fence=_fence_of(claim, on_publish),
                    **score_pair_args,
                )
        if time.monotonic() >= deadline:
            raise ScoringError(
                f"{candidate.uri} is being scored by another scorer (its claim was held for "
                f"{wait_s:.0f} s)",
                "wait for the scoring service to finish it, or raise the wait",
            )
        time.sleep(poll_s)
