"""A curation study's inputs from a registered model version instead of local files.

A version the scoring service (or the pipeline) has scored records everything a study needs:
its score run (the report), the split it was trained on and the reference it was scored
against (:mod:`sslmem.workflow.scoring_inputs`). They are fetched here into a local directory:
the score report's files exactly as logged (so their hash, which a study directory remembers,
is the same on every resume), the reference checkpoint through the registry's verified,
weights-only download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sslmem.errors import ConfigError
from sslmem.tracking import tags as T


@dataclass(frozen=True)
class ScoredCandidate:
    """Where a study reads its candidate's scores, split and reference from.

    Attributes:
        report_dir: The score report directory (``summary.json`` and the score table).
        manifest: The split manifest (local path or store URI).
        reference: The reference checkpoint file.

    """

    report_dir: Path
    manifest: str
    reference: Path


def scored_candidate_from_version(model_uri: str, into: Path) -> ScoredCandidate:
    """Fetch a scored version's report and reference into ``into``; name its split.

    Args:
        model_uri: ``models:/NAME/N`` or ``models:/NAME@alias`` of a scored candidate.
        into: A local directory for the downloads.

    Raises:
        ConfigError: The version is not scored (or is a reference).
        TrackingError: No such version, its provenance tags are missing, or MLflow is
            unreachable.
        CheckpointError: The reference's weights do not match its registered hash.

    """
    from mlflow.artifacts import download_artifacts

    from sslmem.tracking import get_model_version, get_version_tags, load_registered_encoder
    from sslmem.tracking.connection import tracking_errors
    from sslmem.tracking.runs import SCORING_ARTIFACT_DIR
    from sslmem.workflow.scoring_inputs import scoring_inputs_from_tags

    version = get_model_version(model_uri)
    tags = get_version_tags(version.name, version.version)
    status = tags.get(T.STATUS, "unscored")
    if tags.get(T.ROLE) == "reference":
        raise ConfigError(
            f"{version.uri} is a reference encoder; a curation study retrains a candidate",
            "pass the candidate version that was scored against it",
        )
    run_id = T.score_run_id(tags)
    if status != "scored" or run_id is None:
        raise ConfigError(
            f"{version.uri} is not scored (status {status!r})",
            "score it first (the scoring service or the pipeline), or pass a local score "
            "report with --scores, --split and --reference",
        )
    inputs = scoring_inputs_from_tags(version.name, version.version, tags)
    into.mkdir(parents=True, exist_ok=True)
    with tracking_errors(f"download the score report of {version.uri}"):
        report_dir = Path(
            download_artifacts(
                run_id=run_id, artifact_path=SCORING_ARTIFACT_DIR, dst_path=str(into)
            )
        )
    reference = load_registered_encoder(inputs.reference_uri, cache_dir=into / "models")
    return ScoredCandidate(
        report_dir=report_dir,
        manifest=inputs.split_manifest_uri,
        reference=reference.path,
    )
