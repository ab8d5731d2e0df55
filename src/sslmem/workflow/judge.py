"""Judge a scored model version against the champion and write the judgement tags.

The judgement step of a registered version (:func:`judge_registered_version`), called by the
scoring service after it scores a version (and when the champion alias moves) and by anything
else that judges registered versions. The statistics are pure
(:func:`sslmem.memorization.judgement.judge`); this module reads both versions' scores from
MLflow, re-scores a champion scored under another protocol
(:mod:`sslmem.workflow.rescoring`), and writes, under the version's lease and fenced,
``sslmem.judgement_json`` (the source of truth), the version's Markdown description
(:mod:`sslmem.tracking.description`) and then the display tags ``sslmem.judged_against`` and
``sslmem.judgement``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from sslmem.config import RuntimeSettings
from sslmem.errors import TrackingError
from sslmem.tracking import tags as T
from sslmem.tracking.connection import is_not_found
from sslmem.tracking.description import write_version_description
from sslmem.workflow._common import configure_tracking, process_settings

if TYPE_CHECKING:
    from sslmem.memorization.judgement import Judgement, JudgementPolicy, ScoredVersion
    from sslmem.memorization.reference_cache import ReferenceLossCache
    from sslmem.memorization.scoring import ScoreSummary
    from sslmem.workflow.claim import VersionClaim
    from sslmem.workflow.scoring_settings import VersionScoringSettings

__all__ = ["champion_version", "judge_registered_version"]

logger = logging.getLogger(__name__)


def _scored_version(
    name: str, version: str, tags: dict[str, str]
) -> tuple[ScoredVersion, ScoreSummary]:
    """A scored version's per-point scores and its summary, from its score run's artifacts."""
    from sslmem.memorization.judgement import ScoredVersion
    from sslmem.tracking.reports import read_score_report

    run_id = T.score_run_id(tags)
    if not run_id:
        raise TrackingError(
            f"model {name!r} version {version} is scored but its {T.PROVENANCE} names no "
            f"{T.SCORE_RUN}"
        )
    report = read_score_report(run_id)
    # Bound to the version: the run scored its checkpoint, its accuracies are in [0, 1] (a NaN
    # would make every comparison false and turn a regression into "neutral").
    T.check_score_binding(tags, report.summary, f"model {name!r} version {version}")

    def accuracy(key: str) -> float | None:
        return T.parse_accuracy(tags, key)

    scored = ScoredVersion.from_scores(
        version,
        report.columns,
        report.summary,
        knn_accuracy=accuracy(T.KNN_ACCURACY),
        linear_probe_accuracy=accuracy(T.LINEAR_PROBE_ACCURACY),
    )
    return scored, report.summary


def _model_policy(name: str, defaults: JudgementPolicy) -> JudgementPolicy:
    from sslmem.tracking.connection import client, tracking_errors
    from sslmem.tracking.policy import policy_from_tags

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
    settings: VersionScoringSettings,
    runtime: RuntimeSettings | None = None,
    claim: VersionClaim | None = None,
    rescore: bool = True,
    reference_cache: ReferenceLossCache | None = None,
) -> Judgement | None:
    """Judge a scored version against the champion, under the version's lease; write the tags.

    The judgement is made and written while holding the version's claim (``claim``, or one
    taken here: :func:`~sslmem.workflow.score_version.version_claim`), and the claim is fenced
    (renewed, If-Match) right before each write, so two replicas never interleave judgements
    of one version and a replica that lost the lease writes nothing. The source of truth is
    written first, as one tag: ``sslmem.judgement_json`` (outcome, champion, Δ, CI, p, policy,
    reasons); the short display tags ``sslmem.judged_against`` and ``sslmem.judgement`` follow.

    When the champion's published scores were made under another protocol (reference
    checkpoint, precision, sslmem version, K, layer, ...), the champion is scored again under
    the candidate's (:func:`~sslmem.workflow.rescoring.rescore_champion`, cached), so the
    judgement is a valid paired test rather than ``incomparable``.

    Args:
        name: Registered model name.
        version: The version to judge.
        settings: Champion alias, default policy, lease, device, weights cache.
        runtime: MLflow and the object store (default: from the environment).
        claim: The version's claim when the caller holds it (the scoring step); ``None``:
            claimed here, and ``None`` is returned if another process holds it.
        rescore: Re-score a champion scored under another protocol (``False``: judge it
            ``incomparable``, naming the differences).
        reference_cache: The references' losses cache for a re-scoring (default: on the
            runtime's object store).

    Returns:
        The judgement, or ``None`` when there is nothing to judge yet (the version is not
        scored, or the champion is not) or another process holds the version's claim.

    Raises:
        TrackingError: MLflow is unreachable, or the scores cannot be read.
        StoreError: The object store is unreachable.
        ConfigError: The model's ``sslmem.policy.*`` tags are invalid.
        LeaseLostError: The claim was lost before the judgement was written (nothing, or only
            the JSON tag, was written; the next judge overwrites it).

    """
    number = T.check_version_number(version)
    runtime = process_settings(runtime)
    configure_tracking(runtime)
    if claim is not None:
        return _judge_claimed(name, number, settings, runtime, claim, rescore, reference_cache)
    from sslmem.workflow.claim import version_claim

    with version_claim(name, number, settings=settings, runtime=runtime) as own:
        if own is None:
            logger.info("%s/%s is claimed by another process; judged later", name, number)
            return None
        return _judge_claimed(name, number, settings, runtime, own, rescore, reference_cache)


def _judge_claimed(
    name: str,
    number: str,
    settings: VersionScoringSettings,
    runtime: RuntimeSettings,
    claim: VersionClaim,
    rescore: bool,
    reference_cache: ReferenceLossCache | None,
) -> Judgement | None:
    from sslmem.memorization.judgement import judge, protocol_differences
    from sslmem.tracking import get_version_tags, set_version_tags

    tags = get_version_tags(name, number)
    if tags.get(T.STATUS) != "scored" or tags.get(T.ROLE) == "reference":
        return None
    champion_number = champion_version(name, settings.champion_alias)
    candidate, summary = _scored_version(name, number, tags)
    champion = None
    rescored_note = None
    if champion_number is not None and champion_number != number:
        champion_tags = get_version_tags(name, champion_number)
        if champion_tags.get(T.STATUS) != "scored":
            return None  # judged once the champion is scored (reconcile sees the mismatch)
        champion, _ = _scored_version(name, champion_number, champion_tags)
        differences = protocol_differences(candidate.protocol, champion.protocol)
        if differences and rescore:
            champion, rescored_note = _rescored(
                name,
                champion,
                champion_tags,
                number,
                tags,
                summary,
                settings=settings,
                runtime=runtime,
                reference_cache=reference_cache,
                differences=differences,
            )
    policy = _model_policy(name, settings.judgement_policy())
    if champion_number == number:  # the champion itself: its own budget only
        no_champion = (
            f"this version is the champion (alias {settings.champion_alias!r}); it is not "
            "judged against itself"
        )
        judgement = judge(candidate, None, policy, no_champion=no_champion)
    else:
        judgement = judge(candidate, champion, policy)
    if rescored_note is not None:
        judgement = judgement.model_copy(
            update={
                "champion_rescored": judgement.differences == [],
                "reasons": [*judgement.reasons, rescored_note],
            }
        )
    against = champion_number or "none"
    claim.fence(publishing=True)  # still ours: the source of truth first, as one tag
    set_version_tags(
        name,
        number,
        {T.JUDGEMENT_JSON: json.dumps(judgement.model_dump(mode="json"), separators=(",", ":"))},
    )
    # The description says the same in Markdown; before judged_against, which reconcile reads
    # as "judged" (a failed description write is retried with the judgement)
    claim.fence(publishing=True)
    write_version_description(
        name,
        number,
        summary=summary,
        judgement=judgement,
        judged_against=against,
        champion_alias=settings.champion_alias,
        tags=tags,
    )
    claim.fence(publishing=True)
    set_version_tags(
        name, number, {T.JUDGED_AGAINST: against, T.JUDGEMENT: judgement.outcome.value}
    )
    claim.published()
    logger.info(
        "judged %s/%s against %s: %s", name, number, champion_number, judgement.outcome.value
    )
    return judgement


def _rescored(
    name: str,
    champion: ScoredVersion,
    champion_tags: dict[str, str],
    number: str,
    tags: dict[str, str],
    summary: ScoreSummary,
    *,
    settings: VersionScoringSettings,
    runtime: RuntimeSettings,
    reference_cache: ReferenceLossCache | None,
    differences: list[str],
) -> tuple[ScoredVersion, str]:
    """The champion re-scored under the candidate's protocol, and a note for the reasons.

    A champion that cannot be scored that way (trained on another split or recipe, weights
    gone) keeps its published scores: the judgement is then ``incomparable`` with both notes.
    Outages (MLflow, the store) propagate: the judgement is retried, never made on a guess.
    """
    from sslmem.errors import NotFoundError, SSLMemError, StoreError, is_transient
    from sslmem.workflow.rescoring import rescore_champion

    published = "; ".join(differences)
    try:
        rescored = rescore_champion(
            name,
            champion.version,
            champion_tags,
            number,
            tags,
            summary,
            settings=settings,
            runtime=runtime,
            reference_cache=reference_cache,
        )
    except SSLMemError as exc:
        outage = isinstance(exc, TrackingError | StoreError) and not isinstance(exc, NotFoundError)
        if is_transient(exc) or outage:
            raise
        note = (
            f"champion version {champion.version} was scored under another protocol "
            f"({published}) and could not be re-scored under this version's: {exc.problem}"
        )
        return champion, note
    note = (
        f"champion version {champion.version} re-scored under this version's protocol (its "
        f"published scores differ in {published}): paired on the same points and views"
    )
    return rescored, note
