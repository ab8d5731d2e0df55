"""The tag schema of sslmem model versions: provenance, status and score summaries.

Every candidate version carries what is needed to score it again, exactly -- the resolved
reference version (a number, never a bare alias), the split manifest's URI and hash, the
augmentation spec, the representation layer and the seed -- plus its status and, once scored,
the SSLMem and downstream-accuracy summaries the service compares with the champion::

    sslmem.status                      training | pending | running | scored | failed
    sslmem.failure_reason              why (status failed)
    sslmem.reference_model             registered model of the reference (default: same name)
    sslmem.reference_version           "7"
    sslmem.split_manifest_uri          s3://bucket/splits/split.json
    sslmem.split_manifest_sha256       64 hex digits
    sslmem.augmentation                AugmentationSpec as compact JSON
    sslmem.layer                       backbone
    sslmem.seed                        0
    sslmem.checkpoint_sha256           SHA-256 of the registered checkpoint (set on register)
    sslmem.sslmem_mean.<set>           per scored set, e.g. sslmem.sslmem_mean.candidate
    sslmem.sslmem_ci95_low.<set>       ... and sslmem.sslmem_ci95_high.<set>, sslmem.sslmem_n.<set>
    sslmem.welch_p.<control>           one-sided Welch p-value of S_C > control
    sslmem.verdict                     passed | failed
    sslmem.knn_accuracy                downstream kNN top-1
    sslmem.linear_probe_accuracy       downstream linear-probe top-1

Values are strings (MLflow tags); floats are written with 10 significant digits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from sslmem.augment import AugmentationSpec
from sslmem.errors import TrackingError
from sslmem.evaluation.evaluate import EvaluationResult
from sslmem.memorization.scoring import ScoreReport

PREFIX = "sslmem."
STATUS = "sslmem.status"
FAILURE_REASON = "sslmem.failure_reason"
REFERENCE_MODEL = "sslmem.reference_model"
REFERENCE_VERSION = "sslmem.reference_version"
SPLIT_MANIFEST_URI = "sslmem.split_manifest_uri"
SPLIT_MANIFEST_SHA256 = "sslmem.split_manifest_sha256"
AUGMENTATION = "sslmem.augmentation"
LAYER = "sslmem.layer"
SEED = "sslmem.seed"
CHECKPOINT_SHA256 = "sslmem.checkpoint_sha256"
VERDICT = "sslmem.verdict"
KNN_ACCURACY = "sslmem.knn_accuracy"
LINEAR_PROBE_ACCURACY = "sslmem.linear_probe_accuracy"

# Bookkeeping tags of runs and versions (where a version came from and which runs hold its data).
ROLE = "sslmem.role"
PIPELINE_RUN = "sslmem.pipeline_run_id"
STEP = "sslmem.step"
CODE_VERSION = "sslmem.code_version"
CANDIDATE_SEEDS = "sslmem.candidate_seeds"
REFERENCE_SEEDS = "sslmem.reference_seeds"
CANDIDATE_CHECKPOINTS = "sslmem.candidate_checkpoints_sha256"
REFERENCE_CHECKPOINTS = "sslmem.reference_checkpoints_sha256"
TRAIN_RUN = "sslmem.train_run_id"
REGISTER_RUN = "sslmem.register_run_id"
SCORE_RUN = "sslmem.score_run_id"
SCORED_WITH = "sslmem.scored_with"
# The judgement against the champion (written by the scoring service).
JUDGEMENT = "sslmem.judgement"
JUDGED_AGAINST = "sslmem.judged_against"
JUDGEMENT_JSON = "sslmem.judgement_json"

Status = Literal["training", "pending", "running", "scored", "failed"]
#: ``pending``: registered outside the pipeline, waiting for the service; ``running``: claimed.
STATUSES: tuple[Status, ...] = ("training", "pending", "running", "scored", "failed")
#: Tags a candidate version needs before it can be scored.
REQUIRED_PROVENANCE = (
    REFERENCE_VERSION,
    SPLIT_MANIFEST_URI,
    SPLIT_MANIFEST_SHA256,
    AUGMENTATION,
    LAYER,
    SEED,
)
MAX_REASON_CHARS = 5000

_VERSION = re.compile(r"^[1-9][0-9]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sslmem_mean_key(set_name: str) -> str:
    """Tag key of the mean SSLMem of a scored set, e.g. ``sslmem.sslmem_mean.candidate``."""
    return f"{PREFIX}sslmem_mean.{set_name}"


def welch_p_key(control: str) -> str:
    """Tag key of the Welch p-value of S_C against ``control``."""
    return f"{PREFIX}welch_p.{control}"


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
    if not _VERSION.match(text):
        raise TrackingError(
            f"{what} must be a resolved version number, got {version!r}",
            "resolve aliases first with sslmem.tracking.resolve_alias(name, alias)",
        )
    return text


def validate_version_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Check and stringify tags for a model version.

    Keys under ``sslmem.`` with a known meaning are checked: the reference version is a
    resolved number, the status one of :data:`STATUSES`, hashes 64 lower-case hex digits.

    Returns:
        ``{key: str value}``.

    Raises:
        TrackingError: A key is empty or a known tag has an invalid value.

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
) -> dict[str, str]:
    """The provenance tags of a candidate version (set when it is registered).

    Args:
        reference_version: The reference encoder's version number (resolved, never an alias).
        split_manifest_uri: Where the split manifest is stored.
        split_manifest_sha256: The manifest's ``manifest_sha256``.
        augmentation: The augmentation spec the encoders were trained (and are scored) with.
        layer: The representation layer SSLMem is computed on.
        seed: The training seed.
        reference_model: Registered model name of the reference, if not the candidate's.
        status: Lifecycle status.

    Returns:
        ``{tag: value}`` (validated).

    Raises:
        TrackingError: An invalid value (e.g. an alias as reference version).

    """
    tags: dict[str, Any] = {
        REFERENCE_VERSION: reference_version,
        SPLIT_MANIFEST_URI: split_manifest_uri,
        SPLIT_MANIFEST_SHA256: split_manifest_sha256,
        AUGMENTATION: augmentation.model_dump_json(),
        LAYER: layer,
        SEED: seed,
        STATUS: status,
    }
    if reference_model is not None:
        tags[REFERENCE_MODEL] = reference_model
    return validate_version_tags(tags)


def summarize_for_tags(
    report: ScoreReport, evaluation: EvaluationResult | None = None
) -> dict[str, str]:
    """Summary tags of a scored version: SSLMem per set, tests, verdict, accuracies, status.

    Args:
        report: The scoring report of the version (candidate vs its reference).
        evaluation: Downstream evaluation of the candidate, if measured.

    Returns:
        ``{tag: value}`` with ``sslmem.status = scored``; the split hash and layer recorded by
        the report are included so the tags state what was actually scored.

    """
    summary = report.summary
    tags: dict[str, Any] = {STATUS: "scored"}
    for name, stats in summary.sets.items():
        tags[sslmem_mean_key(name)] = stats.mean
        tags[f"{PREFIX}sslmem_ci95_low.{name}"] = stats.ci95_low
        tags[f"{PREFIX}sslmem_ci95_high.{name}"] = stats.ci95_high
        tags[f"{PREFIX}sslmem_n.{name}"] = stats.n
    for control, test in summary.welch_tests.items():
        tags[welch_p_key(control)] = test.p_value
    tags[VERDICT] = "passed" if summary.verdict.passed else "failed"
    tags[SPLIT_MANIFEST_SHA256] = summary.manifest_sha256
    tags[LAYER] = summary.scoring.layer
    tags[f"{PREFIX}scoring_views"] = summary.scoring.views
    tags[f"{PREFIX}sslmem_version"] = summary.sslmem_version
    if evaluation is not None:
        tags[KNN_ACCURACY] = evaluation.knn_accuracy
        tags[LINEAR_PROBE_ACCURACY] = evaluation.linear_probe_accuracy
    return validate_version_tags(tags)


def missing_provenance(tags: Mapping[str, str]) -> list[str]:
    """The :data:`REQUIRED_PROVENANCE` tags absent from ``tags`` (empty: ready to score)."""
    return [key for key in REQUIRED_PROVENANCE if not tags.get(key)]
