"""Step 5: SSLMem of the candidates vs the references; report logged, version tagged."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.data.datasets import ImageDataset
from sslmem.data.splits import SplitManifest, load_manifest, manifest_dataset
from sslmem.errors import (
    ConfigError,
    ManifestMismatchError,
    ScoringError,
    SSLMemError,
)
from sslmem.memorization.scoring import (
    ScoreReport,
    check_report_dir,
    score_split,
    write_score_report,
)
from sslmem.memorization.sharding import (
    merge_shards,
    plan_shards,
    read_shards,
    score_shard,
    write_shard,
)
from sslmem.models.checkpoint import (
    LoadedCheckpoint,
)
from sslmem.tracking import tags as T
from sslmem.workflow._common import (
    checkpoint_augmentation,
    configure_tracking,
    loaded_checkpoint,
    process_settings,
)
from sslmem.workflow.versions import VersionInfo

logger = logging.getLogger(__name__)

#: The score summary inside a score run's artifacts.
SCORE_SUMMARY_ARTIFACT = "scoring/summary.json"


def _check_version(
    name: str, version: str, manifest: SplitManifest, checkpoints: Sequence[LoadedCheckpoint]
) -> dict[str, str]:
    """The version's tags, after checking it is the encoder and split being scored."""
    from sslmem.tracking import get_version_tags

    tags = get_version_tags(name, version)
    recorded = tags.get(T.CHECKPOINT_SHA256)
    if recorded is not None and recorded not in {c.sha256 for c in checkpoints}:
        raise ScoringError(
            f"model {name!r} version {version} holds checkpoint {recorded}, which is not among "
            "the encoders being scored",
            "score a version with the checkpoints it was registered from",
        )
    split = tags.get(T.SPLIT_MANIFEST_SHA256)
    if split is not None and split != manifest.manifest_sha256:
        raise ManifestMismatchError(
            f"model {name!r} version {version} was registered with split {split}, not "
            f"{manifest.manifest_sha256}",
            "score a version with its own split manifest",
        )
    return tags


def _manifest_uri(manifest_path: Path | str, candidate: VersionInfo) -> str:
    """The split's URI for the dataset input: the version's tag, else the path scored."""
    from sslmem.tracking import get_version_tags

    recorded = get_version_tags(candidate.name, candidate.version).get(T.SPLIT_MANIFEST_URI)
    if recorded:
        return recorded
    text = str(manifest_path)
    return text if "://" in text else Path(text).resolve().as_uri()


def _checked_inputs(
    candidate_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    reference_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    manifest_path: Path | str,
    config: ExperimentConfig,
    settings: RuntimeSettings,
    candidate: VersionInfo | None,
    reference: VersionInfo | None,
) -> tuple[SplitManifest, ImageDataset, list[LoadedCheckpoint], list[LoadedCheckpoint]]:
    """Split, dataset and encoders loaded; with a ``candidate``, the versions checked.

    Shared by :func:`score_pair` and :func:`plan_score_shards` so both refuse the same
    mismatches (:func:`_check_version`) before any work.
    """
    manifest = load_manifest(manifest_path, settings)
    dataset = manifest_dataset(manifest, config.data.root)
    candidates = [loaded_checkpoint(item) for item in candidate_checkpoints]
    references = [loaded_checkpoint(item) for item in reference_checkpoints]
    if candidate is not None:
        configure_tracking(settings)
        _check_version(candidate.name, candidate.version, manifest, candidates)
        if reference is not None:
            _check_version(reference.name, reference.version, manifest, references)
    return manifest, dataset, candidates, references


def score_pair(
    *,
    candidate_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    reference_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    manifest_path: Path | str,
    config: ExperimentConfig,
    out_dir: Path,
    alpha: float = 0.01,
    candidate: VersionInfo | None = None,
    reference: VersionInfo | None = None,
    experiment: str | None = None,
    pipeline_run_id: str | None = None,
    device: str | None = None,
    settings: RuntimeSettings | None = None,
    shards: Sequence[Path] | None = None,
) -> ScoreReport:
    """SSLMem of the candidates vs the references on the split; report written and tracked.

    Views are drawn with the candidates' training augmentation (checkpoint metadata). The
    report (``scores.parquet``, ``summary.json``) is written to ``out_dir``. With a
    ``candidate`` version, the version is first checked to hold one of the candidate
    checkpoints and this split; then the report is logged to the MLflow run of
    ``(pipeline_run_id, "score")`` and the summary tags are set on the version, with
    ``sslmem.status=scored`` written last; the reference version is tagged too. If scoring
    fails after that check, both versions are marked ``failed`` with the error.

    Args:
        candidate_checkpoints: Candidate encoders (paths or loaded, e.g. from the registry).
        reference_checkpoints: Reference encoders.
        manifest_path: The split manifest (path or store URI).
        config: Experiment config (``scoring``, ``augmentation``, ``data.root`` apply).
        out_dir: Where the report is written.
        alpha: Significance level of the verdict.
        candidate: The registered candidate version being scored (``None``: untracked).
        reference: Its reference version.
        experiment: MLflow experiment of the score run.
        pipeline_run_id: Groups the score run with the other steps of the pipeline run.
        device: Compute device; default ``SSLMEM_DEVICE``.
        settings: Runtime settings (default: from the environment).
        shards: Shard tables (directories or files, :func:`score_pair_shard`) covering every
            scored point: merged instead of scoring (sharded scoring's merge step).

    Raises:
        ScoringError, CheckpointError: Incompatible or mismatched encoders, or a version that
            does not hold the scored checkpoint; shards that do not cover the points once.
        ManifestMismatchError: The split is not the one the encoders or version were made on.
        TrackingError: MLflow is unreachable (only with a version).

    """
    from sslmem.device import resolve_device

    settings = process_settings(settings)
    if candidate is not None and (experiment is None or pipeline_run_id is None):
        raise ConfigError("scoring a registered version needs experiment and pipeline_run_id")
    check_report_dir(Path(out_dir))  # before the work, not after it
    manifest, dataset, candidates, references = _checked_inputs(
        candidate_checkpoints,
        reference_checkpoints,
        manifest_path,
        config,
        settings,
        candidate,
        reference,
    )
    if not candidates:
        raise ScoringError("no candidate checkpoint to score", "pass at least one")
    augment_spec = checkpoint_augmentation(candidates[0], config.augmentation)
    try:
        if shards is not None:
            report = merge_shards(
                read_shards([Path(s) for s in shards]),
                candidates,
                references,
                manifest,
                scoring=config.scoring,
                augment_spec=augment_spec,
                alpha=alpha,
            )
        else:
            report = score_split(
                candidates,
                references,
                dataset,
                manifest,
                scoring=config.scoring,
                augment_spec=augment_spec,
                device=resolve_device(device or settings.device),
                alpha=alpha,
            )
        write_score_report(report, Path(out_dir))
        if candidate is not None and experiment is not None and pipeline_run_id is not None:
            _track_score(
                report,
                dataset,
                manifest,
                _manifest_uri(manifest_path, candidate),
                config,
                candidate,
                reference,
                experiment,
                pipeline_run_id,
            )
    except Exception as exc:
        if candidate is not None:
            problem = exc.problem if isinstance(exc, SSLMemError) else str(exc)
            reason = f"scoring failed: {type(exc).__name__}: {problem}"
            _mark_failed_quietly([candidate, *([reference] if reference else [])], reason)
        raise
    return report


def plan_score_shards(
    *,
    candidate_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    reference_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    manifest_path: Path | str,
    config: ExperimentConfig,
    shard_size: int,
    candidate: VersionInfo | None = None,
    reference: VersionInfo | None = None,
    settings: RuntimeSettings | None = None,
) -> list[str]:
    """Sharded scoring's plan step: every check once, then the shards' ranges.

    The encoders are checked against each other and the split
    (:func:`~sslmem.memorization.sharding.plan_shards`) and, with a ``candidate`` version,
    the versions against the checkpoints and split (as :func:`score_pair` does), before any
    shard runs.

    Returns:
        ``"START:STOP"`` per shard, in order (what ``sslmem score --shard`` takes).

    Raises:
        ConfigError: ``shard_size < 1``.
        ScoringError, ManifestMismatchError: See :func:`score_pair`.
    """
    settings = process_settings(settings)
    manifest, dataset, candidates, references = _checked_inputs(
        candidate_checkpoints,
        reference_checkpoints,
        manifest_path,
        config,
        settings,
        candidate,
        reference,
    )
    ranges = plan_shards(
        candidates, references, dataset, manifest, scoring=config.scoring, shard_size=shard_size
    )
    return [f"{start}:{stop}" for start, stop in ranges]


def score_pair_shard(
    *,
    candidate_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    reference_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    manifest_path: Path | str,
    config: ExperimentConfig,
    shard: str,
    out_dir: Path,
    device: str | None = None,
    settings: RuntimeSettings | None = None,
) -> Path:
    """One shard of sharded scoring: the points ``START:STOP``, table written to ``out_dir``.

    Untracked: the merge step (:func:`score_pair` with ``shards``) logs and tags the report.

    Returns:
        The shard table written.
    """
    from sslmem.device import resolve_device
    from sslmem.memorization.sharding import parse_range

    start, stop = parse_range(shard)
    settings = process_settings(settings)
    manifest = load_manifest(manifest_path, settings)
    candidates = [loaded_checkpoint(item) for item in candidate_checkpoints]
    references = [loaded_checkpoint(item) for item in reference_checkpoints]
    if not candidates:
        raise ScoringError("no candidate checkpoint to score", "pass at least one")
    table = score_shard(
        candidates,
        references,
        manifest_dataset(manifest, config.data.root),
        manifest,
        start=start,
        stop=stop,
        scoring=config.scoring,
        augment_spec=checkpoint_augmentation(candidates[0], config.augmentation),
        device=resolve_device(device or settings.device),
    )
    return write_shard(table, Path(out_dir))


def _mark_failed_quietly(versions: Sequence[VersionInfo], reason: str) -> None:
    """Mark versions failed; if MLflow is unreachable, leave it to the pipeline's exit step."""
    from sslmem.errors import TrackingError
    from sslmem.tracking import mark_version_failed

    for info in versions:
        try:
            mark_version_failed(info.name, info.version, reason)
        except TrackingError:
            logger.warning("could not mark %s failed", info.uri, exc_info=True)


def finite_score_metrics(report: ScoreReport) -> dict[str, float]:
    """The summary metrics of a report (:func:`sslmem.tracking.score_metrics`), finite only.

    For metric sinks that reject NaN (KFP's Metrics artifact): e.g. a set of one point has no
    standard error.
    """
    from sslmem.tracking import score_metrics

    return {k: v for k, v in score_metrics(report).items() if math.isfinite(v)}


def _track_score(
    report: ScoreReport,
    dataset: ImageDataset,
    manifest: SplitManifest,
    manifest_uri: str,
    config: ExperimentConfig,
    candidate: VersionInfo,
    reference: VersionInfo | None,
    experiment: str,
    pipeline_run_id: str,
) -> None:
    """Log the report (score run) and the summary (metrics of the version's logged model, tags).

    The summary metrics go to the candidate version's source run linked to its logged model
    (``model_id``), so the version page, *Compare* on versions and the experiment's model table
    all show SSLMem next to the accuracies.
    """
    from sslmem.tracking import (
        get_model_version,
        get_version_tags,
        log_config,
        log_model_metrics,
        log_score_report,
        log_split_input,
        merge_provenance,
        pipeline_run,
        summarize_for_tags,
        version_metrics,
    )
    from sslmem.tracking.pipeline_support import set_tags_status_last

    run_tags = {T.MODEL_VERSION: candidate.uri}
    with pipeline_run(pipeline_run_id, step="score", experiment=experiment, tags=run_tags) as rid:
        log_config(config, run_id=rid)
        log_split_input(manifest, manifest_uri, run_id=rid, context="eval")
        log_score_report(report, dataset.images, manifest=manifest, run_id=rid)
    version = get_model_version(candidate.uri)
    if version.model_id is not None and version.run_id is not None:
        log_model_metrics(
            version.model_id,
            version_metrics(report),
            run_id=version.run_id,
            manifest=manifest,
            manifest_uri=manifest_uri,
        )
    current = get_version_tags(candidate.name, candidate.version)
    provenance = merge_provenance(current, {T.SCORE_RUN: rid, **T.scoring_provenance(report)})
    summary = summarize_for_tags(report)
    set_tags_status_last(
        candidate.name,
        candidate.version,
        {**summary, T.PROVENANCE: provenance, T.PIPELINE_RUN: pipeline_run_id},
    )
    if reference is not None:
        ref_tags = get_version_tags(reference.name, reference.version)
        ref_provenance = merge_provenance(
            ref_tags, {T.SCORED_WITH: candidate.uri, T.SCORE_RUN: rid}
        )
        set_tags_status_last(
            reference.name,
            reference.version,
            {T.PROVENANCE: ref_provenance, T.STATUS: "scored"},
        )
    logger.info("scored %s: verdict %s", candidate.uri, summary.get(T.VERDICT))
