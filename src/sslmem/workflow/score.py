"""Step 5: SSLMem of the candidates vs the references; report logged, version tagged."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sslmem.augment import AugmentationSpec
from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.data.datasets import ImageDataset
from sslmem.data.splits import SplitManifest, load_manifest, manifest_dataset
from sslmem.errors import (
    ConfigError,
    LeaseLostError,
    ManifestMismatchError,
    ScoringError,
    SSLMemError,
    TrackingError,
    is_transient,
)
from sslmem.memorization.layer_scoring import LayerScoreReport
from sslmem.memorization.reference_cache import ReferenceLossCache
from sslmem.memorization.report_files import ScoreFormat
from sslmem.memorization.scoring import (
    ScoreReport,
    check_report_dir,
    score_split,
    write_score_outputs,
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
from sslmem.tracking.reports import SCORE_SUMMARY_ARTIFACT
from sslmem.workflow._common import (
    ProgressFactory,
    checkpoint_augmentation,
    configure_tracking,
    loaded_checkpoint,
    process_settings,
    progress_bar,
    scored_point_count,
    views_augmentation,
)
from sslmem.workflow.versions import VersionInfo

logger = logging.getLogger(__name__)

__all__ = [
    "PUBLISH_STEPS",
    "SCORE_SUMMARY_ARTIFACT",
    "Fence",
    "ProgressFactory",
    "ReportOptions",
    "Waivers",
    "WrittenScore",
    "WrittenShard",
    "finite_score_metrics",
    "plan_score_shards",
    "score_pair",
    "score_pair_shard",
    "score_to_dir",
]

#: The publishing steps of a tracked score, in order; the fence is called before each.
PUBLISH_STEPS = ("score_run", "model_metrics", "version_tags", "reference_tags", "status")

#: Called with the step about to be published; raises (e.g.
#: :class:`~sslmem.errors.LeaseLostError`) to stop publishing. See :func:`score_pair`.
Fence = Callable[[str], object]


def _check_version(
    name: str,
    version: str,
    manifest: SplitManifest,
    checkpoints: Sequence[LoadedCheckpoint],
    tags: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The version's tags (read unless given), after checking its encoder and split."""
    from sslmem.tracking import get_version_tags

    tags = dict(tags) if tags is not None else get_version_tags(name, version)
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


def _manifest_uri(manifest_path: Path | str, candidate_tags: Mapping[str, str]) -> str:
    """The split's URI for the dataset input: the version's tag, else the path scored."""
    recorded = candidate_tags.get(T.SPLIT_MANIFEST_URI)
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
    *,
    data_root: Path | None = None,
) -> tuple[
    SplitManifest, ImageDataset, list[LoadedCheckpoint], list[LoadedCheckpoint], dict[str, str]
]:
    """Split, dataset and encoders loaded; with a ``candidate``, the versions checked.

    Shared by :func:`score_pair` and :func:`plan_score_shards` so both refuse the same
    mismatches (:func:`_check_version`) before any work. The candidate's tags are those of
    ``candidate.tags`` when given (read once per job by the caller), else read here; they are
    returned (empty without a candidate).
    """
    manifest = load_manifest(manifest_path, settings)
    dataset = manifest_dataset(manifest, data_root or config.data.root)
    candidates = [loaded_checkpoint(item) for item in candidate_checkpoints]
    references = [loaded_checkpoint(item) for item in reference_checkpoints]
    tags: dict[str, str] = {}
    if candidate is not None:
        configure_tracking(settings)
        known = candidate.tags or None
        tags = _check_version(candidate.name, candidate.version, manifest, candidates, known)
        if reference is not None:
            ref_tags = _check_version(
                reference.name, reference.version, manifest, references, reference.tags or None
            )
            reference.tags.clear()
            reference.tags.update(ref_tags)  # read once: publishing merges into these
    return manifest, dataset, candidates, references, tags


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
    fence: Fence | None = None,
    reference_cache: ReferenceLossCache | None = None,
) -> ScoreReport:
    """SSLMem of the candidates vs the references on the split; report written and tracked.

    Views are drawn with the candidates' training augmentation (checkpoint metadata). The
    report (``scores.parquet``, ``summary.json``) is written to ``out_dir``. With a
    ``candidate`` version, the version is first checked to hold one of the candidate
    checkpoints and this split; then the report is logged to the MLflow run of
    ``(pipeline_run_id, "score")`` and the summary tags are set on the version, with
    ``sslmem.status=scored`` written last; the reference version is tagged too (and a stale
    ``sslmem.failure_reason`` is cleared on both). ``fence`` is called right before each
    publishing step (:data:`PUBLISH_STEPS`), the status last: the caller's claim on the
    version (:meth:`~sslmem.workflow.score_version.VersionClaim.fence`) raising there stops
    publishing. A permanent error after the version checks marks the *candidate* ``failed``
    with the reason (never its reference); a transient one (:class:`~sslmem.errors.TransientError`)
    or a lost lease marks nothing.

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
        fence: Called with the step name before each publishing step (see above).
        reference_cache: Cache of the references' per-point losses (``None``: computed
            every time); see :mod:`sslmem.memorization.reference_cache`.

    Raises:
        ScoringError, CheckpointError: Incompatible or mismatched encoders, or a version that
            does not hold the scored checkpoint; shards that do not cover the points once.
        ManifestMismatchError: The split is not the one the encoders or version were made on.
        TrackingError: MLflow is unreachable (only with a version).
        LeaseLostError: Raised by ``fence``: nothing more was published.

    """
    settings = process_settings(settings)
    if candidate is not None and (experiment is None or pipeline_run_id is None):
        raise ConfigError("scoring a registered version needs experiment and pipeline_run_id")
    check_report_dir(Path(out_dir))  # before the work, not after it
    manifest, dataset, candidates, references, candidate_tags = _checked_inputs(
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
        return _score_and_publish(
            candidates,
            references,
            dataset,
            manifest,
            manifest_path,
            config,
            out_dir,
            alpha,
            augment_spec,
            candidate_tags,
            candidate,
            reference,
            experiment,
            pipeline_run_id,
            device,
            settings,
            shards,
            fence or _no_fence,
            reference_cache,
        )
    except SSLMemError as exc:
        # MLflow errors are never a verdict on the version (docs/service.md, Known limits).
        permanent = not is_transient(exc) and not isinstance(exc, (LeaseLostError, TrackingError))
        if candidate is not None and permanent:
            # A permanent error after the version checks: the candidate -- never its
            # reference -- is failed with the precise reason, still under the caller's claim.
            (fence or _no_fence)("failed")
            _mark_failed(candidate, f"scoring failed: {type(exc).__name__}: {exc.problem}")
        raise


def _score_and_publish(
    candidates: list[LoadedCheckpoint],
    references: list[LoadedCheckpoint],
    dataset: ImageDataset,
    manifest: SplitManifest,
    manifest_path: Path | str,
    config: ExperimentConfig,
    out_dir: Path,
    alpha: float,
    augment_spec: AugmentationSpec,
    candidate_tags: dict[str, str],
    candidate: VersionInfo | None,
    reference: VersionInfo | None,
    experiment: str | None,
    pipeline_run_id: str | None,
    device: str | None,
    settings: RuntimeSettings,
    shards: Sequence[Path] | None,
    fence: Fence,
    reference_cache: ReferenceLossCache | None,
) -> ScoreReport:
    """Score (or merge the shards), write the report and, with a version, publish it."""
    written = _compute_and_write(
        candidates,
        references,
        dataset,
        manifest,
        config,
        out_dir,
        alpha=alpha,
        augment_spec=augment_spec,
        device=device or settings.device,
        shards=shards,
        reference_cache=reference_cache,
    )
    report, computed_on = written.report, written.computed_on
    if candidate is not None and experiment is not None and pipeline_run_id is not None:
        _track_score(
            report,
            dataset,
            manifest,
            _manifest_uri(manifest_path, candidate_tags),
            config,
            VersionInfo(candidate.name, candidate.version, candidate_tags),
            reference,
            experiment,
            pipeline_run_id,
            fence,
            computed_on,
        )
    return report


@dataclass(frozen=True)
class ReportOptions:
    """What a score report directory holds beyond the table and the summary.

    Attributes:
        fmt: Table format (``parquet`` or ``csv``).
        plots: Draw the figures (histogram per set; grid of the most/least memorised).
        grid_k: Images per block of the grid.
        layers: Also score these layers (``"stages"`` or comma-separated names; ``None``: not):
            per-layer SSLMem, LayerMem and ΔLayerMem
            (:func:`~sslmem.memorization.layer_scoring.score_layers`).

    """

    fmt: ScoreFormat = "parquet"
    plots: bool = False
    grid_k: int = 16
    layers: str | None = None


@dataclass(frozen=True)
class Waivers:
    """Provenance checks the user waived (recorded in the report; see ``sslmem score``)."""

    allow_cross_split: bool = False
    allow_missing_provenance: bool = False

    def kwargs(self) -> dict[str, bool]:
        """As the keyword arguments of the scoring functions."""
        return {
            "allow_cross_split": self.allow_cross_split,
            "allow_missing_provenance": self.allow_missing_provenance,
        }


@dataclass(frozen=True)
class WrittenScore:
    """A score report written to its directory.

    Attributes:
        report: The report.
        layer_report: The per-layer report (``None`` without ``ReportOptions.layers``).
        files: The paths written, in the report directory.
        computed_on: The device it was computed on (``None``: merged from shards).

    """

    report: ScoreReport
    layer_report: LayerScoreReport | None
    files: list[Path]
    computed_on: dict[str, str] | None


def _compute_and_write(
    candidates: list[LoadedCheckpoint],
    references: list[LoadedCheckpoint],
    dataset: ImageDataset,
    manifest: SplitManifest,
    config: ExperimentConfig,
    out_dir: Path,
    *,
    alpha: float,
    augment_spec: AugmentationSpec,
    device: str,
    shards: Sequence[Path | str] | None = None,
    reference_cache: ReferenceLossCache | None = None,
    waivers: Waivers | None = None,
    options: ReportOptions | None = None,
    progress: ProgressFactory | None = None,
) -> WrittenScore:
    """Score (or merge the shards), with the layers if asked, and replace ``out_dir`` with it."""
    from sslmem.device import describe_device, resolve_device
    from sslmem.memorization.layer_scoring import score_layers, write_layer_report
    from sslmem.reporting import LAYERMEM_FILE, layermem_figure

    waived = (waivers or Waivers()).kwargs()
    options = options or ReportOptions()
    computed_on: dict[str, str] | None = None  # merged shards: each shard's own step knows
    total = scored_point_count(manifest, config.scoring) if progress is not None else 0
    if shards is not None:
        report = merge_shards(
            read_shards([Path(s) for s in shards]),
            candidates,
            references,
            manifest,
            scoring=config.scoring,
            augment_spec=augment_spec,
            alpha=alpha,
            **waived,
        )
        compute = None
    else:
        compute = resolve_device(device)
        computed_on = describe_device(compute)
        with progress_bar(progress, "scoring", total) as update:
            report = score_split(
                candidates,
                references,
                dataset,
                manifest,
                scoring=config.scoring,
                augment_spec=augment_spec,
                device=compute,
                alpha=alpha,
                progress=update,
                reference_cache=reference_cache,
                **waived,
            )
    layer_report = None
    if options.layers is not None:
        with progress_bar(progress, "layers", total) as update:
            layer_report = score_layers(
                candidates,
                references,
                dataset,
                manifest,
                scoring=config.scoring,
                augment_spec=augment_spec,
                layers=options.layers,
                device=compute or resolve_device(device),
                progress=update,
                **waived,
            )

    def write_layers(staging: Path) -> list[Path]:
        if layer_report is None:
            return []
        files = write_layer_report(layer_report, staging, fmt=options.fmt)
        if options.plots:
            files.append(layermem_figure(layer_report.table, staging / LAYERMEM_FILE))
        return files

    files = write_score_outputs(
        report,
        Path(out_dir),
        fmt=options.fmt,
        images=dataset.images,
        plots=options.plots,
        grid_k=options.grid_k,
        extra=write_layers,
    )
    return WrittenScore(report, layer_report, files, computed_on)


def score_to_dir(
    *,
    candidate_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    reference_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    manifest_path: Path | str,
    config: ExperimentConfig,
    out_dir: Path,
    data_root: Path | None = None,
    augmentation: Literal["checkpoint", "config"] = "checkpoint",
    waivers: Waivers | None = None,
    options: ReportOptions | None = None,
    shards: Sequence[Path] | None = None,
    alpha: float = 0.01,
    device: str | None = None,
    settings: RuntimeSettings | None = None,
    progress: ProgressFactory | None = None,
) -> WrittenScore:
    """SSLMem of the candidates vs the references on the split, written to ``out_dir``, untracked.

    ``sslmem score`` is this function (``--merge`` passes ``shards``); :func:`score_pair` is the
    same computation and report for a registered version, then tracked.

    Args:
        candidate_checkpoints: Candidate encoders.
        reference_checkpoints: Reference encoders.
        manifest_path: The split manifest (path or store URI).
        config: Experiment config (``scoring``, ``augmentation``, ``data`` apply).
        out_dir: The report directory (checked before the work; replaced as a whole).
        data_root: Local dataset directory (default ``config.data.root``).
        augmentation: Draw views with the candidate's training augmentation (``checkpoint``)
            or ``config.augmentation``.
        waivers: Provenance checks waived (recorded in the report).
        options: Table format, figures, layers.
        shards: Shard tables covering every scored point once: merged instead of scoring.
        alpha: Significance level of the verdict.
        device: Compute device; default ``SSLMEM_DEVICE``.
        settings: Runtime settings (default: from the environment).
        progress: Opens a progress bar per phase.

    Raises:
        ConfigError: An unusable ``out_dir`` or layer name, or layers with shards.
        ScoringError, CheckpointError, ManifestMismatchError: See :func:`score_pair`.

    """
    from sslmem.memorization.layers import select_layers

    options = options or ReportOptions()
    if options.layers is not None and shards is not None:
        raise ConfigError(
            "--layers cannot be sharded",
            "score the layers in an unsharded run (no --shard/--merge)",
        )
    from sslmem.device import resolve_device

    settings = process_settings(settings)
    check_report_dir(Path(out_dir))  # before the work, not after it
    resolve_device(device or settings.device)  # a bad device fails before anything is loaded
    manifest, dataset, candidates, references, _ = _checked_inputs(
        candidate_checkpoints,
        reference_checkpoints,
        manifest_path,
        config,
        settings,
        None,
        None,
        data_root=data_root,
    )
    if not candidates:
        raise ScoringError("no candidate checkpoint to score", "pass at least one")
    augment_spec = views_augmentation(candidates[0], config, augmentation)
    if options.layers is not None:  # resolved before any work, so a bad name fails at once
        select_layers([c.encoder for c in [*candidates, *references]], options.layers)
    return _compute_and_write(
        candidates,
        references,
        dataset,
        manifest,
        config,
        Path(out_dir),
        alpha=alpha,
        augment_spec=augment_spec,
        device=device or settings.device,
        shards=shards,
        waivers=waivers,
        options=options,
        progress=progress,
    )


def _mark_failed(candidate: VersionInfo, reason: str) -> None:
    """Mark the candidate failed; if MLflow is unreachable, leave it to the exit step."""
    from sslmem.tracking import mark_version_failed

    try:
        mark_version_failed(candidate.name, candidate.version, reason)
    except TrackingError:
        logger.warning("could not mark %s failed", candidate.uri, exc_info=True)


def _no_fence(step: str) -> None:
    """Unguarded publishing (an unregistered or unclaimed score)."""


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
    manifest, dataset, candidates, references, _ = _checked_inputs(
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


@dataclass(frozen=True)
class WrittenShard:
    """A shard table written by :func:`score_pair_shard`.

    Attributes:
        path: The table file.
        start: First point index scored.
        stop: One past the last.
        total: Points of the whole scored sequence.

    """

    path: Path
    start: int
    stop: int
    total: int


def score_pair_shard(
    *,
    candidate_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    reference_checkpoints: Sequence[Path | str | LoadedCheckpoint],
    manifest_path: Path | str,
    config: ExperimentConfig,
    shard: str,
    out_dir: Path,
    data_root: Path | None = None,
    augmentation: Literal["checkpoint", "config"] = "checkpoint",
    waivers: Waivers | None = None,
    device: str | None = None,
    settings: RuntimeSettings | None = None,
    progress: ProgressFactory | None = None,
) -> WrittenShard:
    """One shard of sharded scoring: the points ``START:STOP``, table written to ``out_dir``.

    Untracked: the merge step (:func:`score_pair` with ``shards``, or :func:`score_to_dir`)
    makes the report. ``sslmem score --shard`` is this function.

    Raises:
        ConfigError: A bad range.
        OutputError: ``out_dir`` is a file or cannot be written (:func:`check_output_dir`).
        ScoringError, CheckpointError, ManifestMismatchError: See :func:`score_pair`.

    """
    from sslmem.device import resolve_device
    from sslmem.memorization.sharding import parse_range
    from sslmem.outputs import check_output_dir

    start, stop = parse_range(shard)
    out = Path(out_dir)
    check_output_dir(out, what="shard directory")  # a file, names, permissions: before the work
    settings = process_settings(settings)
    compute = resolve_device(device or settings.device)
    manifest = load_manifest(manifest_path, settings)
    candidates = [loaded_checkpoint(item) for item in candidate_checkpoints]
    references = [loaded_checkpoint(item) for item in reference_checkpoints]
    if not candidates:
        raise ScoringError("no candidate checkpoint to score", "pass at least one")
    with progress_bar(progress, "shard", stop - start) as update:
        table = score_shard(
            candidates,
            references,
            manifest_dataset(manifest, data_root or config.data.root),
            manifest,
            start=start,
            stop=stop,
            scoring=config.scoring,
            augment_spec=views_augmentation(candidates[0], config, augmentation),
            device=compute,
            progress=update,
            **(waivers or Waivers()).kwargs(),
        )
    return WrittenShard(write_shard(table, out), start, stop, table.info.total)


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
    fence: Fence,
    computed_on: Mapping[str, str] | None = None,
) -> None:
    """Publish the score: score run, model metrics, version tags, reference tags, status last.

    ``computed_on`` (:func:`sslmem.device.describe_device`) is recorded on the score run.

    ``fence`` runs right before each step (:data:`PUBLISH_STEPS`); ``sslmem.status=scored``
    is written only right after the last fence passed. The summary metrics go to the
    candidate version's source run linked to its logged model (``model_id``), so the version
    page, *Compare* on versions and the experiment's model table all show SSLMem next to the
    accuracies; they are logged only where the run does not already hold the same value, so a
    retried publication leaves one entry per metric.
    """
    from sslmem.tracking import (
        log_compute_device,
        log_config,
        log_score_report,
        log_split_input,
        pipeline_run,
        summarize_for_tags,
    )
    from sslmem.tracking.reports import remember_score_report

    fence("score_run")
    run_tags = {T.MODEL_VERSION: candidate.uri}
    with pipeline_run(pipeline_run_id, step="score", experiment=experiment, tags=run_tags) as rid:
        log_config(config, run_id=rid)
        if computed_on is not None:
            log_compute_device(computed_on, run_id=rid)
        log_split_input(manifest, manifest_uri, run_id=rid, context="eval")
        log_score_report(report, dataset.images, manifest=manifest, run_id=rid)
    remember_score_report(rid, report)  # readers in this process use it, not a download
    try:
        _publish_to_version(
            report, manifest, manifest_uri, candidate, reference, rid, pipeline_run_id, fence
        )
    except LeaseLostError as exc:
        _abandon(rid, candidate, exc)
        raise
    logger.info("scored %s: verdict %s", candidate.uri, summarize_for_tags(report).get(T.VERDICT))


def _abandon(run_id: str, candidate: VersionInfo, exc: LeaseLostError) -> None:
    """Mark the score run of a result set cut short by a lost lease (best effort).

    Unless the version points to it: a step already past its fence when the lease was lost
    may have written the version's tags (the one race fencing leaves; docs/service.md).
    """
    from sslmem.tracking import get_version_tags
    from sslmem.tracking.runs import abandon_run

    try:
        if T.score_run_id(get_version_tags(candidate.name, candidate.version)) == run_id:
            return
        abandon_run(run_id, f"lease lost before the result set was complete: {exc.problem}")
    except TrackingError:
        logger.warning("could not mark the score run %s abandoned", run_id, exc_info=True)


def _publish_to_version(
    report: ScoreReport,
    manifest: SplitManifest,
    manifest_uri: str,
    candidate: VersionInfo,
    reference: VersionInfo | None,
    rid: str,
    pipeline_run_id: str,
    fence: Fence,
) -> None:
    """The steps after the score run: model metrics, version and reference tags, status last."""
    from sslmem.tracking import (
        get_model_version,
        get_version_tags,
        log_model_metrics,
        merge_provenance,
        summarize_for_tags,
        version_metrics,
    )
    from sslmem.tracking.registry import delete_version_tags, set_tags_status_last

    fence("model_metrics")
    version = get_model_version(candidate.uri)
    if version.model_id is not None and version.run_id is not None:
        log_model_metrics(
            version.model_id,
            version_metrics(report),
            run_id=version.run_id,
            manifest=manifest,
            manifest_uri=manifest_uri,
            skip_unchanged=True,
        )
    fence("version_tags")
    current = candidate.tags
    provenance = merge_provenance(current, {T.SCORE_RUN: rid, **T.scoring_provenance(report)})
    summary = summarize_for_tags(report)
    status = summary.pop(T.STATUS, "scored")  # written last, after the final fence
    set_tags_status_last(
        candidate.name,
        candidate.version,
        {**summary, T.PROVENANCE: provenance, T.PIPELINE_RUN: pipeline_run_id},
    )
    if T.FAILURE_REASON in current:  # a stale reason of an earlier attempt
        delete_version_tags(candidate.name, candidate.version, [T.FAILURE_REASON])
    if reference is not None:
        fence("reference_tags")
        ref_tags = reference.tags or get_version_tags(reference.name, reference.version)
        ref_provenance = merge_provenance(
            ref_tags, {T.SCORED_WITH: candidate.uri, T.SCORE_RUN: rid}
        )
        set_tags_status_last(
            reference.name,
            reference.version,
            {T.PROVENANCE: ref_provenance, T.STATUS: "scored"},
        )
        if T.FAILURE_REASON in ref_tags:
            delete_version_tags(reference.name, reference.version, [T.FAILURE_REASON])
    fence("status")
    set_tags_status_last(candidate.name, candidate.version, {T.STATUS: status})
