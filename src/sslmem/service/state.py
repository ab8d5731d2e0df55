"""The service's view of the registry, read from MLflow (the only state there is).

What ``GET /v1/models/{name}/versions/{version}`` answers, what the metrics are rebuilt from at
start-up, and the listing the reconcile pass walks. Everything here only reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sslmem.errors import TrackingError
from sslmem.memorization.judgement import Judgement
from sslmem.memorization.scoring import ScoreSummary
from sslmem.service.metrics import LabelPolicy, VersionRecord, label_eligibility
from sslmem.tracking import tags as T
from sslmem.workflow.scope import ModelScope

__all__ = [
    "ModelState",
    "VersionState",
    "list_models",
    "read_model",
    "read_version_state",
    "version_records",
]

logger = logging.getLogger(__name__)
_PAGE = 200


@dataclass(frozen=True)
class ModelState:
    """A registered model: its versions' tags and where its aliases point.

    Attributes:
        name: Registered model name.
        versions: ``{version: tags}`` of every version.
        aliases: ``{alias: version}``.
        tags: The registered model's own tags (``sslmem.policy.*``).

    """

    name: str
    versions: dict[str, dict[str, str]]
    aliases: dict[str, str]
    tags: dict[str, str]


@dataclass(frozen=True)
class VersionState:
    """One version as the API shows it.

    Attributes:
        name: Registered model name.
        version: Version number.
        status: ``sslmem.status`` (``""`` when the version has none).
        failure_reason: Why it failed (status ``failed``).
        aliases: Aliases pointing at it.
        summary: Its score summary (scored versions).
        judgement: Its judgement against the champion, if judged.
        tags: Every ``sslmem.*`` tag except the judgement JSON.

    """

    name: str
    version: str
    status: str
    failure_reason: str | None
    aliases: tuple[str, ...]
    summary: ScoreSummary | None
    judgement: Judgement | None
    tags: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status or None,
            "failure_reason": self.failure_reason,
            "aliases": list(self.aliases),
            "summary": None if self.summary is None else self.summary.model_dump(mode="json"),
            "judgement": None if self.judgement is None else self.judgement.model_dump(mode="json"),
            "tags": self.tags,
        }


def _client() -> Any:
    from sslmem.tracking.connection import client

    return client()


def list_models(scope: ModelScope | None = None) -> Iterator[ModelState]:
    """Every registered model in ``scope`` with its versions (paged through).

    Args:
        scope: Only models in it are read and yielded (``None``: every model). Other models'
            versions are never listed, and they are skipped without a log line above debug.

    Raises:
        TrackingError: MLflow is unreachable.

    """
    from sslmem.tracking.connection import tracking_errors

    mlflow_client = _client()
    token = None
    while True:
        with tracking_errors("list registered models"):
            page = mlflow_client.search_registered_models(max_results=_PAGE, page_token=token)
        for model in page:
            name = str(model.name)
            if any(c in name for c in "'\\"):
                logger.warning("skipping registered model %r: quotes in its name", name)
                continue
            if scope is not None and not scope.includes(name, dict(model.tags or {})):
                logger.debug("skipping registered model %r: not managed by sslmem", name)
                continue
            yield read_model(name)
        token = page.token
        if not token:
            return


def read_model(name: str) -> ModelState:
    """One registered model with its versions and aliases.

    Raises:
        TrackingError: No such model, or MLflow is unreachable.

    """
    from sslmem.tracking.connection import tracking_errors

    with tracking_errors(f"read registered model {name!r}"):
        model = _client().get_registered_model(name)  # search results may lack aliases
    return ModelState(
        name=name,
        versions=_versions(name),
        aliases={str(k): str(v) for k, v in (model.aliases or {}).items()},
        tags=dict(model.tags or {}),
    )


def _versions(name: str) -> dict[str, dict[str, str]]:
    from sslmem.tracking.connection import tracking_errors

    mlflow_client = _client()
    out: dict[str, dict[str, str]] = {}
    token = None
    while True:
        with tracking_errors(f"list the versions of model {name!r}"):
            page = mlflow_client.search_model_versions(
                f"name = '{name}'", max_results=_PAGE, page_token=token
            )
        for version in page:
            out[str(version.version)] = dict(version.tags or {})
        token = page.token
        if not token:
            return out


def _summary(run_id: str | None) -> ScoreSummary | None:
    from sslmem.tracking.reports import read_score_summary

    if not run_id:
        return None
    return read_score_summary(run_id)


def _judgement(tags: dict[str, str]) -> Judgement | None:
    raw = tags.get(T.JUDGEMENT_JSON)
    if not raw:
        return None
    try:
        return Judgement.model_validate_json(raw)
    except ValueError:
        logger.warning("unreadable %s tag; ignoring it", T.JUDGEMENT_JSON)
        return None


def read_version_state(name: str, version: str) -> VersionState:
    """A version's status, summary and judgement.

    Raises:
        TrackingError: No such version, or MLflow is unreachable.

    """
    from sslmem.tracking import get_version_tags
    from sslmem.tracking.connection import tracking_errors

    tags = get_version_tags(name, version)
    with tracking_errors(f"read the aliases of model {name!r}"):
        aliases = dict(_client().get_registered_model(name).aliases or {})
    scored = tags.get(T.STATUS) == "scored" and tags.get(T.ROLE) != "reference"
    return VersionState(
        name=name,
        version=str(version),
        status=tags.get(T.STATUS, ""),
        failure_reason=tags.get(T.FAILURE_REASON),
        aliases=tuple(sorted(a for a, v in aliases.items() if str(v) == str(version))),
        summary=_bound_summary(name, str(version), tags) if scored else None,
        judgement=_judgement(tags),
        tags={k: v for k, v in tags.items() if k.startswith(T.PREFIX) and k != T.JUDGEMENT_JSON},
    )


def _bound_summary(name: str, version: str, tags: dict[str, str]) -> ScoreSummary | None:
    """The summary of the version's score run, once shown to have scored its checkpoint.

    A run of other weights (a hand-edited provenance tag) gives ``None`` with a warning: its
    numbers are never shown or exported as this version's.

    Raises:
        TrackingError: The run's summary cannot be read.

    """
    summary = _summary(T.score_run_id(tags))
    if summary is None:
        return None
    try:
        T.check_score_binding(tags, summary, f"model {name!r} version {version}")
    except T.InvalidInputError as exc:
        logger.warning("%s", exc.problem)
        return None
    return summary


def _accuracy(tags: dict[str, str], key: str) -> float | None:
    """An accuracy tag, or ``None`` unless it is a finite number in [0, 1] (never exported)."""
    try:
        return T.parse_accuracy(tags, key)
    except T.InvalidInputError:
        return None


def regressed_versions(model: ModelState) -> set[str]:
    """The scored candidate versions whose judgement tag says regression (no download)."""
    out = set()
    for version, tags in model.versions.items():
        if tags.get(T.STATUS) != "scored" or tags.get(T.ROLE) == "reference":
            continue
        judgement = _judgement(tags)
        if judgement is not None and judgement.regression:
            out.add(version)
    return out


def held_aliases(model: ModelState) -> dict[str, list[str]]:
    """Every version of the model -> the aliases it holds."""
    held: dict[str, list[str]] = {v: [] for v in model.versions}
    for alias, version in model.aliases.items():
        if version in held:
            held[version].append(alias)
    return held


def labelled_versions(model: ModelState, labels: LabelPolicy) -> dict[str, tuple[str, ...]]:
    """:func:`~sslmem.service.metrics.label_eligibility` of a model as read from MLflow."""
    return label_eligibility(held_aliases(model), labels, regressed_versions(model))


def version_records(model: ModelState, labels: LabelPolicy) -> list[VersionRecord]:
    """The metric records of a model's scored versions that get labels (see ``metrics``).

    Only labelled versions' summaries are downloaded, so a model with many versions costs a
    bounded number of reads. A summary that cannot be read is skipped with a warning.
    """
    held = held_aliases(model)
    eligible = labelled_versions(model, labels)
    records = []
    for version in eligible:
        tags = model.versions[version]
        if tags.get(T.STATUS) != "scored" or tags.get(T.ROLE) == "reference":
            continue
        try:
            summary = _summary(T.score_run_id(tags))
            if summary is not None:  # never another version's numbers under this one's labels
                T.check_score_binding(tags, summary, f"model {model.name!r} version {version}")
        except (TrackingError, T.InvalidInputError) as exc:
            logger.warning("no summary for %s/%s: %s", model.name, version, exc.problem)
            continue
        records.append(
            VersionRecord(
                model=model.name,
                version=version,
                aliases=tuple(sorted(held[version])),
                summary=summary,
                judgement=_judgement(tags),
                knn_accuracy=_accuracy(tags, T.KNN_ACCURACY),
                linear_probe_accuracy=_accuracy(tags, T.LINEAR_PROBE_ACCURACY),
            )
        )
    return records
