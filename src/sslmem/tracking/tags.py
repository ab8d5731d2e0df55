"""The tag schema of sslmem model versions: a short readable set plus one provenance JSON.

The registry UI shows version tags in one cell, so a version carries only what a user reads
and what a service filters on; everything else that is needed to score the version again sits
in one JSON tag, ``sslmem.provenance`` (parse it with :func:`parse_provenance`). Numbers a user
compares across versions (SSLMem per set, p-values, accuracies) are metrics of the version's
logged model as well (see :func:`sslmem.tracking.runs.version_metrics`).

Short tags (values are strings; floats with 10 significant digits)::

    sslmem.status                 training | pending | running | scored | failed
    sslmem.role                   candidate | reference
    sslmem.verdict                passed | failed | inconclusive (once scored)
    sslmem.sslmem_mean.candidate  mean SSLMem of S_C (once scored)
    sslmem.knn_accuracy           downstream kNN top-1 (when evaluated)
    sslmem.linear_probe_accuracy  downstream linear-probe top-1 (when evaluated)
    sslmem.reference_model        registered model of the reference (candidates)
    sslmem.reference_version      "7": resolved number, never an alias (candidates)
    sslmem.split_manifest_sha256  64 hex digits
    sslmem.split_manifest_uri     s3://bucket/splits/<sha256>.json
    sslmem.checkpoint_sha256      SHA-256 of the registered checkpoint (set on register)
    sslmem.pipeline_run_id        the pipeline run that registered the version
    sslmem.failure_reason         why (status failed only)
    sslmem.judgement              regression | improvement | neutral | incomparable (service)
    sslmem.judged_against         the champion version it was judged against (service)
    sslmem.judgement_json         the whole judgement as JSON (service)
    sslmem.provenance             JSON, see below

Registered-model tags (not version tags)::

    sslmem.managed                "true": the scoring service touches this model (its scope)

``sslmem.provenance`` (compact JSON, keys sorted; ``schema`` 1)::

    {"schema": 1, "role": "candidate", "augmentation": {AugmentationSpec}, "layer": "backbone",
     "seed": 0, "candidate_seeds": [0, 1], "reference_seeds": [0],
     "candidate_checkpoints_sha256": [...], "reference_checkpoints_sha256": [...],
     "code_version": "0.4.0", "pipeline_run_id": "...", "parent_run_id": "...",
     "train_run_id": "...", "register_run_id": "...",
     "score_run_id": "..." (once scored),
     "scoring": {"layer", "views", "estimator", "sslmem_version", "manifest_sha256", "sets"}
       (once scored),
     "scored_with": "models:/m/3" (references)}

A candidate can be scored again from its version alone: :data:`REQUIRED_PROVENANCE` tags
(reference version, split URI and hash, the provenance JSON) and the JSON's
:data:`REQUIRED_PROVENANCE_FIELDS` (augmentation, layer, seed) -- :func:`missing_provenance`
lists what is absent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from sslmem.augment import AugmentationSpec
from sslmem.errors import DataError, TrackingError
from sslmem.evaluation.evaluate import EvaluationResult
from sslmem.memorization.scoring import ScoreReport, ScoreSummary

PREFIX = "sslmem."
STATUS = "sslmem.status"
FAILURE_REASON = "sslmem.failure_reason"
REFERENCE_MODEL = "sslmem.reference_model"
REFERENCE_VERSION = "sslmem.reference_version"
SPLIT_MANIFEST_URI = "sslmem.split_manifest_uri"
SPLIT_MANIFEST_SHA256 = "sslmem.split_manifest_sha256"
CHECKPOINT_SHA256 = "sslmem.checkpoint_sha256"
VERDICT = "sslmem.verdict"
KNN_ACCURACY = "sslmem.knn_accuracy"
LINEAR_PROBE_ACCURACY = "sslmem.linear_probe_accuracy"
ROLE = "sslmem.role"
PIPELINE_RUN = "sslmem.pipeline_run_id"
#: The full provenance of a version, one JSON document (:func:`parse_provenance`).
PROVENANCE = "sslmem.provenance"
PROVENANCE_SCHEMA = 1

#: Registered-model tag: ``"true"`` opts the model in to the scoring service (its scope).
MANAGED = "sslmem.managed"
#: Registered-model tags overriding the service-wide judgement policy, one per field
#: (``sslmem.policy.alpha``...; :mod:`sslmem.tracking.policy`).
POLICY_PREFIX = "sslmem.policy."
MANAGED_VALUE = "true"
#: Version tags holding downstream accuracies: finite numbers in [0, 1] (:func:`parse_accuracy`).
ACCURACY_TAGS = (KNN_ACCURACY, LINEAR_PROBE_ACCURACY)

# Run tags (not version tags): which step of which pipeline run a run is, and its code version.
STEP = "sslmem.step"
CODE_VERSION = "sslmem.code_version"
CLAIMED_RUN = "sslmem.claimed_run_id"
MODEL_VERSION = "sslmem.model_version"
CANDIDATE_SHA256 = "sslmem.candidate_sha256"
REFERENCE_SHA256 = "sslmem.reference_sha256"
SEED = "sslmem.seed"
#: On a score run left incomplete (its lease lost between publishing steps): why. No version
#: points to such a run; it ends ``KILLED`` (``sslmem.tracking.runs.abandon_run``).
ABANDONED = "sslmem.abandoned"
#: Run tags of a curation study's retrain runs (nested under the study's run): how the training
#: set was reduced (``top``/``bottom``/``random``, or ``full`` for the control), by how many,
#: and which random draw (the derived split trained on: :data:`SPLIT_MANIFEST_SHA256`).
CURATION_STRATEGY = "sslmem.curation.strategy"
CURATION_K = "sslmem.curation.k"
CURATION_DRAW = "sslmem.curation.draw"
#: MLflow's own tags that sslmem sets: the run tag that nests a run under another in the UI, and
#: the experiment tag that selects the UI's view of an experiment.
MLFLOW_PARENT_RUN = "mlflow.parentRunId"
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"
#: Run tags of the device a step computed on: ``sslmem.compute.device``, ``.device_name``,
#: ``.compute_capability`` (CUDA), ``.torch``, ``.torch_cuda`` (``sslmem.device.describe_device``).
COMPUTE_PREFIX = "sslmem.compute."

# Keys inside the provenance JSON.
AUGMENTATION = "augmentation"
LAYER = "layer"
SEED_FIELD = "seed"
CANDIDATE_SEEDS = "candidate_seeds"
REFERENCE_SEEDS = "reference_seeds"
CANDIDATE_CHECKPOINTS = "candidate_checkpoints_sha256"
REFERENCE_CHECKPOINTS = "reference_checkpoints_sha256"
TRAIN_RUN = "train_run_id"
REGISTER_RUN = "register_run_id"
SCORE_RUN = "score_run_id"
PARENT_RUN = "parent_run_id"
PIPELINE_RUN_FIELD = "pipeline_run_id"
SCORED_WITH = "scored_with"
SCORING = "scoring"

# The judgement against the champion (written by the scoring service).
JUDGEMENT = "sslmem.judgement"
JUDGED_AGAINST = "sslmem.judged_against"
JUDGEMENT_JSON = "sslmem.judgement_json"

Status = Literal["training", "pending", "running", "scored", "failed"]
#: ``pending``: registered outside the pipeline, waiting for the service; ``running``: claimed.
STATUSES: tuple[Status, ...] = ("training", "pending", "running", "scored", "failed")
#: Version tags a candidate needs before it can be scored.
REQUIRED_PROVENANCE = (REFERENCE_VERSION, SPLIT_MANIFEST_URI, SPLIT_MANIFEST_SHA256, PROVENANCE)
#: Fields of the provenance JSON a candidate needs before it can be scored.
REQUIRED_PROVENANCE_FIELDS = (AUGMENTATION, LAYER, SEED_FIELD)
#: Every version tag sslmem writes (the short set); anything else is not sslmem's.
VERSION_TAGS = (
    STATUS,
    ROLE,
    VERDICT,
    f"{PREFIX}sslmem_mean.candidate",
    KNN_ACCURACY,
    LINEAR_PROBE_ACCURACY,
    REFERENCE_MODEL,
    REFERENCE_VERSION,
    SPLIT_MANIFEST_SHA256,
    SPLIT_MANIFEST_URI,
    CHECKPOINT_SHA256,
    PIPELINE_RUN,
    FAILURE_REASON,
    JUDGEMENT,
    JUDGED_AGAINST,
    JUDGEMENT_JSON,
    PROVENANCE,
)
MAX_REASON_CHARS = 5000
#: MLflow's limit on a model-version tag value is 100,000 characters; stay well below.
MAX_PROVENANCE_CHARS = 50_000

#: MLflow's version numbers: positive, no sign, no leading zero, ASCII digits, fits its int
#: column. The one definition of a canonical version (webhook intake, the read API, the tags).
CANONICAL_VERSION_PATTERN = r"^[1-9][0-9]{0,9}$"
_VERSION = re.compile(CANONICAL_VERSION_PATTERN)


class InvalidInputError(DataError):
    """An input bound to a model version is invalid: a tag value, or the score run it names.

    Permanent: the version is ``failed`` with this reason (never retried as an outage). The
    message names the tag and what is allowed, never the value (tags are user-editable and the
    reason is served unauthenticated).
    """


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sslmem_mean_key(set_name: str) -> str:
    """Tag key of the mean SSLMem of a scored set, e.g. ``sslmem.sslmem_mean.candidate``."""
    return f"{PREFIX}sslmem_mean.{set_name}"


def format_value(value: Any) -> str:
    """A tag value: floats with 10 significant digits, bools lower-case, the rest ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


def check_version_number(version: str | int, what: str = "model version") -> str:
    """Return ``version`` as a canonical version-number string.

    Raises:
        TrackingError: ``version`` is not a positive integer (e.g. a bare alias).

    """
    text = str(version).strip()
    if not is_canonical_version(text):
        raise TrackingError(
            f"{what} must be a resolved version number, got {version!r}",
            "resolve aliases first with sslmem.tracking.resolve_alias(name, alias)",
        )
    return text


def is_canonical_version(version: str) -> bool:
    """Whether ``version`` is a canonical version number (:data:`CANONICAL_VERSION_PATTERN`).

    ``0``, ``007``, ``+7``, ``²`` (a Unicode digit) and numbers of more than 10 digits are not:
    MLflow never numbers a version so, and a non-canonical alias of a real number (``007``)
    would otherwise be scored or looked up under a second name.
    """
    return _VERSION.fullmatch(version) is not None


def is_managed(model_tags: Mapping[str, str]) -> bool:
    """Whether a registered model's tags opt it in to the scoring service (:data:`MANAGED`)."""
    return str(model_tags.get(MANAGED, "")).strip().lower() == MANAGED_VALUE


def parse_accuracy(tags: Mapping[str, str], key: str) -> float | None:
    """A version's accuracy tag as a float (``None`` when absent).

    Raises:
        InvalidInputError: The value is not a finite number in [0, 1] (``nan``, ``inf``, ``-5``,
            text); the message names the tag and the range, never the value.

    """
    raw = tags.get(key)
    if raw is None or not str(raw).strip():
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidInputError(
            f"tag {key} must be a finite number in [0, 1]",
            f"set {key} to the encoder's downstream accuracy (`sslmem evaluate --out FILE`), or "
            "remove the tag",
        )
    return value


def check_score_binding(tags: Mapping[str, str], summary: ScoreSummary, what: str) -> None:
    """Check that a score run belongs to the version: it scored the version's checkpoint.

    Args:
        tags: The version's tags (its :data:`CHECKPOINT_SHA256`).
        summary: The summary of the score run its provenance names.
        what: The version, for the message (e.g. ``"model 'enc' version 3"``).

    Raises:
        InvalidInputError: The version has no checkpoint hash, or the run scored other weights.

    """
    expected = tags.get(CHECKPOINT_SHA256)
    scored = {ref.sha256 for ref in summary.candidates}
    if not expected or expected not in scored:
        raise InvalidInputError(
            f"the score run named by the {PROVENANCE} tag of {what} did not score its checkpoint "
            f"(its {CHECKPOINT_SHA256}): the run belongs to another version",
            "score the version again (set sslmem.status=pending)",
        )


def dump_provenance(provenance: Mapping[str, Any]) -> str:
    """The ``sslmem.provenance`` tag value: compact JSON with sorted keys and ``schema``.

    Raises:
        TrackingError: A value is not JSON-serialisable, or the JSON is too long for a tag.

    """
    try:
        text = json.dumps(
            {"schema": PROVENANCE_SCHEMA, **provenance}, sort_keys=True, separators=(",", ":")
        )
    except (TypeError, ValueError) as exc:
        raise TrackingError(f"provenance is not JSON-serialisable: {exc}") from exc
    if len(text) > MAX_PROVENANCE_CHARS:
        raise TrackingError(
            f"the provenance JSON is {len(text)} characters, over the {MAX_PROVENANCE_CHARS} "
            "a version tag may hold",
            "register fewer seeds per version",
        )
    return text


def parse_provenance(tags: Mapping[str, str]) -> dict[str, Any]:
    """The provenance JSON of a version's tags as a dict.

    Raises:
        TrackingError: The tag is absent, not a JSON object, or of an unknown schema.

    """
    raw = tags.get(PROVENANCE)
    if not raw:
        raise TrackingError(
            f"the version has no {PROVENANCE} tag",
            "register the encoder with sslmem.workflow.register_candidate (sslmem run)",
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TrackingError(f"tag {PROVENANCE} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise TrackingError(f"tag {PROVENANCE} must be a JSON object, got {type(value).__name__}")
    if value.get("schema") != PROVENANCE_SCHEMA:
        raise TrackingError(
            f"tag {PROVENANCE} has schema {value.get('schema')!r}; this sslmem reads schema "
            f"{PROVENANCE_SCHEMA}",
            "upgrade sslmem, or re-register the version",
        )
    return value


def provenance_augmentation(tags: Mapping[str, str]) -> AugmentationSpec:
    """The augmentation spec recorded in a version's provenance.

    Raises:
        TrackingError: No provenance, or no valid augmentation spec in it.

    """
    provenance = parse_provenance(tags)
    try:
        return AugmentationSpec.model_validate(provenance[AUGMENTATION])
    except (KeyError, ValueError) as exc:
        raise TrackingError(f"tag {PROVENANCE} holds no valid augmentation spec: {exc}") from exc


def score_run_id(tags: Mapping[str, str]) -> str | None:
    """The MLflow run holding a scored version's report (``None``: not scored yet).

    Raises:
        TrackingError: The provenance tag is present but unreadable.

    """
    if not tags.get(PROVENANCE):
        return None
    run_id = parse_provenance(tags).get(SCORE_RUN)
    return str(run_id) if run_id else None


def merge_provenance(tags: Mapping[str, str], update: Mapping[str, Any]) -> str:
    """The provenance tag value of ``tags`` with ``update``'s keys added or replaced."""
    current = parse_provenance(tags) if tags.get(PROVENANCE) else {}
    current.pop("schema", None)
    return dump_provenance({**current, **update})


def validate_version_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Check and stringify tags for a model version.

    Keys under ``sslmem.`` with a known meaning are checked: the reference version is a
    resolved number, the status one of :data:`STATUSES`, hashes 64 lower-case hex digits, the
    provenance a JSON object of the known schema, accuracies finite numbers in [0, 1].

    Returns:
        ``{key: str value}``.

    Raises:
        TrackingError: A key is empty or a known tag has an invalid value.
        InvalidInputError: An accuracy tag is not a finite number in [0, 1].

    """
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key.strip():
            raise TrackingError(f"tag keys must be non-empty strings, got {key!r}")
        text = format_value(value)
        if key == REFERENCE_VERSION:
            text = check_version_number(text, "tag sslmem.reference_version")
        elif key == STATUS and text not in STATUSES:
            raise TrackingError(f"tag {STATUS} must be one of {', '.join(STATUSES)}, got {text!r}")
        elif key in (SPLIT_MANIFEST_SHA256, CHECKPOINT_SHA256) and not _SHA256.match(text):
            raise TrackingError(f"tag {key} must be a hex SHA-256 digest, got {text!r}")
        elif key == PROVENANCE:
            parse_provenance({PROVENANCE: text})
        elif key in ACCURACY_TAGS:
            parse_accuracy({key: text}, key)
        out[key] = text
    return out


def provenance_tags(
    *,
    reference_version: str | int,
    split_manifest_uri: str,
    split_manifest_sha256: str,
    augmentation: AugmentationSpec,
    layer: str,
    seed: int,
    reference_model: str | None = None,
    status: Status = "training",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The tags of a candidate version when it is registered: short tags plus provenance JSON.

    Args:
        reference_version: The reference encoder's version number (resolved, never an alias).
        split_manifest_uri: Where the split manifest is stored.
        split_manifest_sha256: The manifest's ``manifest_sha256``.
        augmentation: The augmentation spec the encoders were trained (and are scored) with.
        layer: The representation layer SSLMem is computed on.
        seed: The training seed.
        reference_model: Registered model name of the reference, if not the candidate's.
        status: Lifecycle status.
        extra: More provenance for the JSON (seeds, checkpoint hashes, run ids, code version).

    Returns:
        ``{tag: value}`` (validated).

    Raises:
        TrackingError: An invalid value (e.g. an alias as reference version).

    """
    provenance = {
        "role": "candidate",
        **(extra or {}),
        AUGMENTATION: augmentation.model_dump(mode="json"),
        LAYER: layer,
        SEED_FIELD: int(seed),
    }
    tags: dict[str, Any] = {
        ROLE: "candidate",
        REFERENCE_VERSION: reference_version,
        SPLIT_MANIFEST_URI: split_manifest_uri,
        SPLIT_MANIFEST_SHA256: split_manifest_sha256,
        PROVENANCE: dump_provenance(provenance),
        STATUS: status,
    }
    if reference_model is not None:
        tags[REFERENCE_MODEL] = reference_model
    return validate_version_tags(tags)


def summarize_for_tags(
    report: ScoreReport, evaluation: EvaluationResult | None = None
) -> dict[str, str]:
    """Short summary tags of a scored version: status, verdict, S_C mean, accuracies.

    Every other number (SSLMem and CI of every set, p-values) is a metric of the version's
    logged model (:func:`sslmem.tracking.runs.version_metrics`); how it was scored goes into
    the provenance JSON (:func:`scoring_provenance`).

    Args:
        report: The scoring report of the version (candidate vs its reference).
        evaluation: Downstream evaluation of the candidate, if measured.

    Returns:
        ``{tag: value}`` with ``sslmem.status = scored``; the split hash recorded by the report
        is included so the tags state what was actually scored.

    """
    summary = report.summary
    tags: dict[str, Any] = {STATUS: "scored"}
    if "candidate" in summary.sets:
        tags[sslmem_mean_key("candidate")] = summary.sets["candidate"].mean
    tags[VERDICT] = summary.verdict.outcome
    tags[SPLIT_MANIFEST_SHA256] = summary.manifest_sha256
    if evaluation is not None:
        tags[KNN_ACCURACY] = evaluation.knn_accuracy
        tags[LINEAR_PROBE_ACCURACY] = evaluation.linear_probe_accuracy
    return validate_version_tags(tags)


def scoring_provenance(report: ScoreReport) -> dict[str, Any]:
    """How a version was scored, for its provenance JSON (``{"scoring": {...}}``)."""
    summary = report.summary
    return {
        SCORING: {
            "layer": summary.scoring.layer,
            "views": summary.scoring.views,
            "estimator": summary.scoring.estimator,
            "sslmem_version": summary.sslmem_version,
            "manifest_sha256": summary.manifest_sha256,
            "sets": sorted(summary.sets),
        }
    }


def missing_provenance(tags: Mapping[str, str]) -> list[str]:
    """What a version lacks to be scored again (empty: ready to score).

    Returns:
        The absent :data:`REQUIRED_PROVENANCE` tags, then the absent
        :data:`REQUIRED_PROVENANCE_FIELDS` of the JSON as ``sslmem.provenance.<field>``.

    """
    missing = [key for key in REQUIRED_PROVENANCE if not tags.get(key)]
    if PROVENANCE in missing:
        return missing
    try:
        provenance = parse_provenance(tags)
    except TrackingError:
        return [*missing, PROVENANCE]
    return missing + [
        f"{PROVENANCE}.{name}"
        for name in REQUIRED_PROVENANCE_FIELDS
        if provenance.get(name) in (None, "")
    ]
