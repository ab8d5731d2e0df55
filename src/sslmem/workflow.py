"""The steps of the memorisation pipeline, as library functions on paths, URIs and configs.

Kubeflow components (:mod:`sslmem.components`), the CLI and the scoring service call these
functions; the components only translate KFP artifacts (``.path``, ``.uri``, ``.metadata``)
into arguments. One function per step:

0. :func:`resolve_config` -- pipeline parameters to the experiment config and the slices of it
   each step depends on (the steps' cache keys).
1. :func:`prepare_split` -- the deterministic SSLMem split; manifest written to the step's
   output and, content-addressed, to the object store (``splits/<sha256>.json``).
2. :func:`train_role` -- one candidate (S_S ∪ S_C) or reference (S_S ∪ S_I) encoder per seed,
   with per-epoch metrics in a new MLflow run.
3. :func:`evaluate_role` -- downstream kNN and linear-probe accuracy of one encoder.
4. :func:`register_candidate` -- the reference and then the candidate as new model versions;
   the candidate carries full provenance (resolved reference version, manifest URI and hash,
   augmentation, layer, seed) and ``sslmem.status=training``.
5. :func:`score_pair` -- SSLMem of all candidate vs all reference encoders (the expectation
   over seeds); report logged; summary tags set on the version with ``sslmem.status=scored``
   written last.
6. :func:`finalize_pipeline_run` -- the exit step: every version of this pipeline run that is
   still ``training`` is marked ``failed`` with the reason (scoring marks its own failures).

A version therefore looks successfully scored only if scoring finished; a failure anywhere
leaves ``training`` (if even the finaliser cannot reach MLflow) or ``failed``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sslmem.atomic import atomic_path
from sslmem.augment import AugmentationSpec
from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.data.datasets import ImageDataset, load_dataset
from sslmem.data.splits import Role, SplitManifest, load_manifest, make_split, save_manifest
from sslmem.data.store import open_store
from sslmem.errors import (
    CheckpointError,
    ConfigError,
    ManifestMismatchError,
    ScoringError,
    SSLMemError,
)
from sslmem.evaluation.evaluate import EvaluationResult, evaluate_encoder
from sslmem.memorization.scoring import ScoreReport, ScoreSummary, score_split, write_score_report
from sslmem.models.checkpoint import (
    LoadedCheckpoint,
    file_sha256,
    load_checkpoint,
    read_checkpoint_metadata,
)
from sslmem.pipeline_params import (
    EVALUATION_SECTIONS,
    SPLIT_SECTIONS,
    PipelineParams,
    config_from_json,
    config_sections_json,
    config_to_json,
    training_recipe,
)
from sslmem.runtime import keep_freed_memory_in_heap

logger = logging.getLogger(__name__)

#: Version tags written by the pipeline, beyond :mod:`sslmem.tracking.tags`.
ROLE_TAG = "sslmem.role"
CANDIDATE_SEEDS_TAG = "sslmem.candidate_seeds"
REFERENCE_SEEDS_TAG = "sslmem.reference_seeds"
CANDIDATE_CHECKPOINTS_TAG = "sslmem.candidate_checkpoints_sha256"
REFERENCE_CHECKPOINTS_TAG = "sslmem.reference_checkpoints_sha256"
TRAIN_RUN_TAG = "sslmem.train_run_id"
REGISTER_RUN_TAG = "sslmem.register_run_id"
SCORE_RUN_TAG = "sslmem.score_run_id"
SCORED_WITH_TAG = "sslmem.scored_with"
SPLIT_STORE_PREFIX = "splits"
SCORE_SUMMARY_ARTIFACT = "scoring/summary.json"


def _settings(settings: RuntimeSettings | None) -> RuntimeSettings:
    settings = settings if settings is not None else RuntimeSettings()
    if settings.num_threads is not None:
        torch.set_num_threads(settings.num_threads)
    if settings.keep_heap:
        keep_freed_memory_in_heap()
    return settings


def _dataset_for(manifest: SplitManifest, config: ExperimentConfig) -> ImageDataset:
    return load_dataset(
        manifest.dataset.name,
        split="test" if manifest.dataset.split == "test" else "train",
        root=config.data.root,
    )


def _configure_tracking(settings: RuntimeSettings) -> None:
    from sslmem.tracking import configure_from_settings

    if settings.mlflow_tracking_uri is None:
        logger.warning(
            "SSLMEM_MLFLOW_TRACKING_URI is not set: tracking into a local SQLite store under "
            "./mlruns (in a pipeline pod this is lost; set it in the platform config)"
        )
    configure_from_settings(settings)


def _augmentation(checkpoint: LoadedCheckpoint, fallback: AugmentationSpec) -> AugmentationSpec:
    """The augmentation spec an encoder was trained with (its metadata), else ``fallback``."""
    raw = checkpoint.metadata.get("augmentation")
    if raw is None:
        return fallback
    try:
        return AugmentationSpec.model_validate(raw)
    except ValueError as exc:
        raise CheckpointError(
            f"the augmentation spec in {checkpoint.path}'s metadata is invalid: {exc}"
        ) from exc


def _loaded(item: Path | str | LoadedCheckpoint) -> LoadedCheckpoint:
    return item if isinstance(item, LoadedCheckpoint) else load_checkpoint(item)


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


# --------------------------------------------------------------------------------------------
# 0. Resolve


@dataclass(frozen=True)
class ResolvedConfig:
    """The resolved config of a run, and the slices of it each step depends on.

    Each slice is an input of the steps it determines, so a cached step is reused exactly
    when its slice is unchanged (e.g. changing ``scoring.views`` re-scores but neither
    re-splits nor re-trains).

    Attributes:
        config: The full experiment config.
        config_json: All of it (registration and scoring).
        split_json: ``data`` and ``split`` (the split step).
        recipe_json: ``data``, ``augmentation``, ``model``, ``training`` (training).
        evaluation_json: ``data``, ``augmentation``, ``evaluation`` (downstream evaluation).

    """

    config: ExperimentConfig
    config_json: str
    split_json: str
    recipe_json: str
    evaluation_json: str


def resolve_config(params: PipelineParams) -> ResolvedConfig:
    """Resolve pipeline parameters into the experiment config and its per-step slices.

    Raises:
        ConfigError: Invalid parameters (named).

    """
    config = params.resolve()
    return ResolvedConfig(
        config=config,
        config_json=config_to_json(config),
        split_json=config_sections_json(config, SPLIT_SECTIONS),
        recipe_json=training_recipe(config),
        evaluation_json=config_sections_json(config, EVALUATION_SECTIONS),
    )


# --------------------------------------------------------------------------------------------
# 1. Split


@dataclass(frozen=True)
class PreparedSplit:
    """The split of a run and the resolved config.

    Attributes:
        manifest: The sealed split.
        manifest_path: Where the manifest was written (the step's output).
        manifest_uri: Its content-addressed copy in the object store (a version tag).
        config: The config it was made with (its ``data`` and ``split`` apply).

    """

    manifest: SplitManifest
    manifest_path: Path
    manifest_uri: str
    config: ExperimentConfig


def prepare_split(
    config: ExperimentConfig, manifest_path: Path, *, settings: RuntimeSettings | None = None
) -> PreparedSplit:
    """Make the split of ``config.data`` with ``config.split`` and store its manifest.

    The manifest is written to ``manifest_path`` and to ``<store>/splits/<sha256>.json``
    (``SSLMEM_STORE_URI``); the store copy is content-addressed, so re-running never
    overwrites a different split.

    Raises:
        ConfigError, DataError: Bad dataset name or pool size (see :func:`make_split`).
        StoreError: The object store cannot be written.

    """
    settings = _settings(settings)
    dataset = load_dataset(config.data.dataset, split="train", root=config.data.root)
    manifest = make_split(dataset, fractions=config.split)
    save_manifest(manifest, manifest_path)
    store = open_store(settings.store_uri, settings)
    key = f"{SPLIT_STORE_PREFIX}/{manifest.manifest_sha256}.json"
    if not store.exists(key):
        store.put_bytes(key, manifest.to_json())
    logger.info("split %s of %s stored at %s", manifest.manifest_sha256, dataset.name, key)
    return PreparedSplit(
        manifest=manifest,
        manifest_path=Path(manifest_path),
        manifest_uri=store.uri(key),
        config=config,
    )


# --------------------------------------------------------------------------------------------
# 2. Train


@dataclass(frozen=True)
class TrainedEncoder:
    """A trained encoder as a pipeline step reports it.

    Attributes:
        checkpoint: The encoder checkpoint (weights-only safetensors).
        sha256: SHA-256 of the checkpoint file.
        role: ``"candidate"`` or ``"reference"``.
        seed: Training seed.
        final_loss: Mean loss of the last epoch.
        epochs: Epochs trained.
        num_train: Training images.
        mlflow_run_id: The MLflow run holding its epoch metrics (``None``: not tracked).

    """

    checkpoint: Path
    sha256: str
    role: Role
    seed: int
    final_loss: float
    epochs: int
    num_train: int
    mlflow_run_id: str | None


def train_role(
    *,
    manifest_path: Path | str,
    recipe: ExperimentConfig | str,
    role: Role,
    seed: int,
    out_path: Path,
    expected_manifest_sha256: str | None = None,
    experiment: str | None = None,
    device: str | None = None,
    settings: RuntimeSettings | None = None,
    progress: bool = False,
) -> TrainedEncoder:
    """Train the ``role`` encoder of a split with ``seed`` and write its checkpoint.

    Args:
        manifest_path: The split manifest (path or store URI).
        recipe: The config, or its :func:`~sslmem.pipeline_params.training_recipe` JSON.
        role: ``"candidate"`` (S_S ∪ S_C) or ``"reference"`` (S_S ∪ S_I).
        seed: Training seed (replaces ``training.seed``).
        out_path: Where the checkpoint file is written.
        expected_manifest_sha256: Refuse a manifest with another hash (the pipeline passes the
            hash it cached on).
        experiment: MLflow experiment for a new run with the epoch metrics; ``None``: none.
        device: ``auto``/``cpu``/``cuda``; default ``SSLMEM_DEVICE``.
        settings: Runtime settings (default: from the environment).
        progress: Show a progress bar.

    Raises:
        ManifestMismatchError: The manifest hash differs from ``expected_manifest_sha256``.
        ConfigError, TrainingError: See :func:`sslmem.training.train_encoder`.
        TrackingError: MLflow is unreachable (only with ``experiment``).

    """
    from sslmem.training import train_encoder

    settings = _settings(settings)
    config = recipe if isinstance(recipe, ExperimentConfig) else config_from_json(recipe)
    manifest = load_manifest(manifest_path, settings)
    if expected_manifest_sha256 and manifest.manifest_sha256 != expected_manifest_sha256:
        raise ManifestMismatchError(
            f"split manifest {manifest_path} hashes to {manifest.manifest_sha256}, expected "
            f"{expected_manifest_sha256}",
            "pass the manifest the pipeline's split step produced",
        )
    dataset = _dataset_for(manifest, config)
    run_id: str | None = None
    with tempfile.TemporaryDirectory(prefix=f"sslmem-train-{role}-") as tmp:
        if experiment is None:
            result = train_encoder(
                dataset,
                manifest,
                role=role,
                config=config,
                out_dir=Path(tmp),
                device=device or settings.device,
                seed_override=seed,
                progress=progress,
            )
        else:
            from sslmem.tracking import MlflowEpochLogger, log_config, log_metrics
            from sslmem.tracking.pipeline_support import step_run

            _configure_tracking(settings)
            tags = {
                ROLE_TAG: role,
                "sslmem.seed": str(seed),
                "sslmem.split_manifest_sha256": manifest.manifest_sha256,
            }
            with step_run(
                experiment, step=f"train-{role}", run_name=f"train-{role}-seed{seed}", tags=tags
            ) as run_id:
                log_config(config, run_id=run_id)
                result = train_encoder(
                    dataset,
                    manifest,
                    role=role,
                    config=config,
                    out_dir=Path(tmp),
                    device=device or settings.device,
                    callbacks=[MlflowEpochLogger(role, run_id=run_id, strict=False)],
                    seed_override=seed,
                    progress=progress,
                )
                log_metrics(
                    {
                        f"{role}/final_loss": result.final_loss,
                        f"{role}/steps": float(result.steps),
                        f"{role}/num_train": float(result.num_train),
                    },
                    run_id=run_id,
                )
        _copy_atomic(result.checkpoint, Path(out_path))
    return TrainedEncoder(
        checkpoint=Path(out_path),
        sha256=file_sha256(out_path),
        role=role,
        seed=seed,
        final_loss=result.final_loss,
        epochs=result.epochs,
        num_train=result.num_train,
        mlflow_run_id=run_id,
    )


# --------------------------------------------------------------------------------------------
# 3. Evaluate


def evaluate_role(
    checkpoint_path: Path | str,
    config: ExperimentConfig,
    *,
    run_id: str | None = None,
    prefix: str = "eval",
    device: str | None = None,
    settings: RuntimeSettings | None = None,
) -> EvaluationResult:
    """Downstream kNN and linear-probe accuracy of one encoder checkpoint.

    Features use the encoder's own preprocessing (its checkpoint's augmentation spec) on the
    train (bank / probe training set) and test splits of the dataset it was trained on.

    Args:
        checkpoint_path: The encoder.
        config: Experiment config (``evaluation`` and ``data.root`` apply).
        run_id: Also log the result to this MLflow run (e.g. the training run).
        prefix: Metric prefix in that run.
        device: Compute device; default ``SSLMEM_DEVICE``.
        settings: Runtime settings (default: from the environment).

    Raises:
        CheckpointError, DataError: See :func:`sslmem.evaluation.evaluate_encoder`.
        TrackingError: MLflow is unreachable (only with ``run_id``).

    """
    from sslmem.device import resolve_device

    settings = _settings(settings)
    loaded = load_checkpoint(checkpoint_path)
    dataset_ref = loaded.metadata.get("dataset")
    name = dataset_ref.get("name") if isinstance(dataset_ref, dict) else None
    name = name or config.data.dataset
    train = load_dataset(name, split="train", root=config.data.root)
    test = load_dataset(name, split="test", root=config.data.root)
    result = evaluate_encoder(
        loaded.encoder,
        train,
        test,
        config=config.evaluation,
        augment_spec=_augmentation(loaded, config.augmentation),
        device=resolve_device(device or settings.device),
    )
    if run_id is not None:
        from sslmem.tracking import log_evaluation

        _configure_tracking(settings)
        log_evaluation(result, prefix, run_id=run_id)
    return result


# --------------------------------------------------------------------------------------------
# 4. Register


@dataclass(frozen=True)
class EncoderArtifact:
    """A trained (and evaluated) encoder handed from one step to the next.

    Attributes:
        checkpoint: The checkpoint file.
        seed: Its training seed.
        evaluation: :meth:`EvaluationResult.to_dict` of its downstream evaluation, if any.
        train_run_id: MLflow run of its training, if tracked.

    """

    checkpoint: Path
    seed: int
    evaluation: dict[str, Any] | None = None
    train_run_id: str | None = None


@dataclass(frozen=True)
class VersionInfo:
    """A registered version and its tags."""

    name: str
    version: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Registration:
    """The versions one pipeline run registered.

    Attributes:
        candidate: The candidate version (status ``training`` until scored).
        reference: The reference version the candidate is scored against.
        run_id: The MLflow run the models were logged in.

    """

    candidate: VersionInfo
    reference: VersionInfo
    run_id: str


def save_evaluation(
    result: EvaluationResult, path: Path | str, *, checkpoint_sha256: str, seed: int, role: str
) -> dict[str, Any]:
    """Write an evaluation record (JSON) that :func:`collect_encoders` pairs with its encoder.

    Returns:
        The record: :meth:`EvaluationResult.to_dict` plus ``checkpoint_sha256``, ``seed`` and
        ``role``.

    """
    record = {
        **result.to_dict(),
        "checkpoint_sha256": checkpoint_sha256,
        "seed": seed,
        "role": role,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def collect_encoders(
    checkpoints: Sequence[tuple[Path | str, Mapping[str, Any]]],
    evaluation_files: Sequence[Path | str],
    seed_order: Sequence[int],
) -> list[EncoderArtifact]:
    """Pair the encoders of one role with their evaluations, ordered like ``seed_order``.

    Fan-in order is not guaranteed by every orchestrator, so encoders are sorted by their seed's
    position in ``seed_order`` and evaluations are matched by checkpoint hash.

    Args:
        checkpoints: ``(checkpoint path, metadata)`` per encoder; metadata holds ``seed``
            (numbers may arrive as floats) and optionally ``mlflow_run_id``.
        evaluation_files: Records written by :func:`save_evaluation`.
        seed_order: The seeds in the order the pipeline was given them.

    Raises:
        ScoringError: A seed is missing or repeated, or an evaluation belongs to no encoder.

    """
    evaluations: dict[str, dict[str, Any]] = {}
    for file in evaluation_files:
        record = json.loads(Path(file).read_text())
        evaluations[str(record["checkpoint_sha256"])] = record
    artifacts: list[EncoderArtifact] = []
    for path, metadata in checkpoints:
        sha256 = file_sha256(path)
        run_id = str(metadata.get("mlflow_run_id") or "") or None
        artifacts.append(
            EncoderArtifact(
                Path(path), int(metadata["seed"]), evaluations.pop(sha256, None), run_id
            )
        )
    seeds = [a.seed for a in artifacts]
    if sorted(seeds) != sorted(int(s) for s in seed_order):
        raise ScoringError(
            f"encoders were trained with seeds {sorted(seeds)}, expected {list(seed_order)}",
            "pass every trained encoder of the role exactly once",
        )
    if evaluations:
        raise ScoringError(f"evaluations of unknown checkpoints: {sorted(evaluations)}")
    position = {int(seed): i for i, seed in enumerate(seed_order)}
    return sorted(artifacts, key=lambda a: position[a.seed])


def _mean_accuracies(artifacts: Sequence[EncoderArtifact]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("knn_accuracy", "linear_probe_accuracy"):
        values = [
            float(a.evaluation[key]) for a in artifacts if a.evaluation and key in a.evaluation
        ]
        if values:
            out[key] = sum(values) / len(values)
    return out


def _evaluation_metrics(role: str, artifacts: Sequence[EncoderArtifact]) -> dict[str, float]:
    metrics = {f"{role}/{key}": value for key, value in _mean_accuracies(artifacts).items()}
    for artifact in artifacts:
        for key in ("knn_accuracy", "linear_probe_accuracy"):
            if artifact.evaluation and key in artifact.evaluation:
                metrics[f"{role}/seed{artifact.seed}/{key}"] = float(artifact.evaluation[key])
    return metrics


def _accuracy_tags(artifact: EncoderArtifact) -> dict[str, Any]:
    from sslmem.tracking import tags as T

    evaluation = artifact.evaluation or {}
    tags: dict[str, Any] = {}
    if "knn_accuracy" in evaluation:
        tags[T.KNN_ACCURACY] = float(evaluation["knn_accuracy"])
    if "linear_probe_accuracy" in evaluation:
        tags[T.LINEAR_PROBE_ACCURACY] = float(evaluation["linear_probe_accuracy"])
    return tags


def register_candidate(
    *,
    candidates: Sequence[EncoderArtifact],
    references: Sequence[EncoderArtifact],
    manifest_path: Path | str,
    manifest_uri: str,
    config: ExperimentConfig,
    model_name: str,
    reference_model_name: str,
    experiment: str,
    pipeline_run_id: str,
    settings: RuntimeSettings | None = None,
) -> Registration:
    """Register the reference and the candidate encoders as new model versions.

    The first candidate (first seed) becomes a version of ``model_name``, the first reference a
    version of ``reference_model_name``. Other seeds' checkpoints are scored too and their
    hashes are tagged on the candidate version. The candidate gets the provenance tags of
    :func:`sslmem.tracking.provenance_tags` (the reference version as a number), its downstream
    accuracies and ``sslmem.status=training``; scoring sets ``scored``.

    Raises:
        ScoringError: No candidate or no reference.
        ManifestMismatchError: A checkpoint was trained on another split.
        TrackingError: MLflow is unreachable or refused.

    """
    from sslmem.tracking import (
        log_config,
        log_metrics,
        log_split_manifest,
        pipeline_run,
        provenance_tags,
        register_encoder,
    )
    from sslmem.tracking.runs import PIPELINE_RUN_TAG

    if not candidates or not references:
        raise ScoringError(
            f"need at least one candidate and one reference encoder, got {len(candidates)} and "
            f"{len(references)}",
            "train at least one seed per role",
        )
    settings = _settings(settings)
    manifest = load_manifest(manifest_path, settings)
    checkpoint_hashes: dict[str, list[str]] = {}
    for role, artifacts in (("candidate", candidates), ("reference", references)):
        hashes = []
        for artifact in artifacts:
            header = read_checkpoint_metadata(artifact.checkpoint)
            header_sha = header.metadata.get("split_manifest_sha256")
            if header_sha != manifest.manifest_sha256:
                raise ManifestMismatchError(
                    f"{role} checkpoint {artifact.checkpoint} was trained on split {header_sha}, "
                    f"not {manifest.manifest_sha256}",
                    "register encoders trained on this run's split",
                )
            hashes.append(file_sha256(artifact.checkpoint))
        checkpoint_hashes[role] = hashes
    _configure_tracking(settings)
    common = {
        PIPELINE_RUN_TAG: pipeline_run_id,
        CANDIDATE_SEEDS_TAG: ",".join(str(a.seed) for a in candidates),
        REFERENCE_SEEDS_TAG: ",".join(str(a.seed) for a in references),
        CANDIDATE_CHECKPOINTS_TAG: ",".join(checkpoint_hashes["candidate"]),
        REFERENCE_CHECKPOINTS_TAG: ",".join(checkpoint_hashes["reference"]),
    }
    primary, reference = candidates[0], references[0]
    with pipeline_run(pipeline_run_id, step="register", experiment=experiment) as run_id:
        log_config(config, run_id=run_id)
        log_split_manifest(manifest, run_id=run_id)
        log_metrics(
            {
                **_evaluation_metrics("candidate", candidates),
                **_evaluation_metrics("reference", references),
            },
            run_id=run_id,
        )
        reference_tags = {
            **common,
            ROLE_TAG: "reference",
            REGISTER_RUN_TAG: run_id,
            "sslmem.seed": reference.seed,
            "sslmem.split_manifest_uri": manifest_uri,
            "sslmem.split_manifest_sha256": manifest.manifest_sha256,
            **_accuracy_tags(reference),
        }
        if reference.train_run_id:
            reference_tags[TRAIN_RUN_TAG] = reference.train_run_id
        reference_ref = register_encoder(
            reference.checkpoint,
            model_name=reference_model_name,
            run_id=run_id,
            tags=reference_tags,
            augmentation=config.augmentation,
        )
        candidate_tags: dict[str, Any] = {
            **common,
            **provenance_tags(
                reference_version=reference_ref.version,
                split_manifest_uri=manifest_uri,
                split_manifest_sha256=manifest.manifest_sha256,
                augmentation=config.augmentation,
                layer=config.scoring.layer,
                seed=primary.seed,
                reference_model=reference_model_name,
                status="training",
            ),
            ROLE_TAG: "candidate",
            REGISTER_RUN_TAG: run_id,
            **_accuracy_tags(primary),
        }
        if primary.train_run_id:
            candidate_tags[TRAIN_RUN_TAG] = primary.train_run_id
        candidate_ref = register_encoder(
            primary.checkpoint,
            model_name=model_name,
            run_id=run_id,
            tags=candidate_tags,
            augmentation=config.augmentation,
        )
    logger.info("registered %s (reference %s)", candidate_ref.uri, reference_ref.uri)
    return Registration(
        candidate=VersionInfo(model_name, candidate_ref.version),
        reference=VersionInfo(reference_model_name, reference_ref.version),
        run_id=run_id,
    )


# --------------------------------------------------------------------------------------------
# 5. Score


def _check_version(
    name: str, version: str, manifest: SplitManifest, checkpoints: Sequence[LoadedCheckpoint]
) -> dict[str, str]:
    """The version's tags, after checking it is the encoder and split being scored."""
    from sslmem.tracking import get_version_tags
    from sslmem.tracking import tags as T

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

    Raises:
        ScoringError, CheckpointError: Incompatible or mismatched encoders, or a version that
            does not hold the scored checkpoint.
        ManifestMismatchError: The split is not the one the encoders or version were made on.
        TrackingError: MLflow is unreachable (only with a version).

    """
    from sslmem.device import resolve_device

    settings = _settings(settings)
    if candidate is not None and (experiment is None or pipeline_run_id is None):
        raise ConfigError("scoring a registered version needs experiment and pipeline_run_id")
    manifest = load_manifest(manifest_path, settings)
    dataset = _dataset_for(manifest, config)
    candidates = [_loaded(item) for item in candidate_checkpoints]
    references = [_loaded(item) for item in reference_checkpoints]
    if candidate is not None:
        _configure_tracking(settings)
        _check_version(candidate.name, candidate.version, manifest, candidates)
        if reference is not None:
            _check_version(reference.name, reference.version, manifest, references)
    if not candidates:
        raise ScoringError("no candidate checkpoint to score", "pass at least one")
    try:
        report = score_split(
            candidates,
            references,
            dataset,
            manifest,
            scoring=config.scoring,
            augment_spec=_augmentation(candidates[0], config.augmentation),
            device=resolve_device(device or settings.device),
            alpha=alpha,
        )
        write_score_report(report, Path(out_dir))
        if candidate is not None and experiment is not None and pipeline_run_id is not None:
            _track_score(
                report, dataset, manifest, config, candidate, reference, experiment, pipeline_run_id
            )
    except Exception as exc:
        if candidate is not None:
            problem = exc.problem if isinstance(exc, SSLMemError) else str(exc)
            reason = f"scoring failed: {type(exc).__name__}: {problem}"
            _mark_failed_quietly([candidate, *([reference] if reference else [])], reason)
        raise
    return report


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
    config: ExperimentConfig,
    candidate: VersionInfo,
    reference: VersionInfo | None,
    experiment: str,
    pipeline_run_id: str,
) -> None:
    from sslmem.tracking import log_config, log_score_report, pipeline_run, summarize_for_tags
    from sslmem.tracking import tags as T
    from sslmem.tracking.pipeline_support import set_tags_status_last
    from sslmem.tracking.runs import PIPELINE_RUN_TAG

    run_tags = {"sslmem.model_version": candidate.uri}
    with pipeline_run(pipeline_run_id, step="score", experiment=experiment, tags=run_tags) as rid:
        log_config(config, run_id=rid)
        log_score_report(report, dataset.images, manifest=manifest, run_id=rid)
    summary = summarize_for_tags(report)
    set_tags_status_last(
        candidate.name,
        candidate.version,
        {**summary, SCORE_RUN_TAG: rid, PIPELINE_RUN_TAG: pipeline_run_id},
    )
    if reference is not None:
        set_tags_status_last(
            reference.name,
            reference.version,
            {SCORED_WITH_TAG: candidate.uri, SCORE_RUN_TAG: rid, T.STATUS: "scored"},
        )
    logger.info("scored %s: verdict %s", candidate.uri, summary.get(T.VERDICT))


# --------------------------------------------------------------------------------------------
# 6. Finalise


def finalize_pipeline_run(
    *,
    model_names: Sequence[str],
    pipeline_run_id: str,
    state: str,
    error: str = "",
    settings: RuntimeSettings | None = None,
) -> list[VersionInfo]:
    """Mark every version of this pipeline run that is still ``training`` as ``failed``.

    Called by the pipeline's exit handler with the final state of the pipeline body. On
    failure the reason names the state and the error; on success, a version that is still not
    scored (e.g. left behind by a retried registration) is failed as superseded.

    Returns:
        The versions marked failed.

    Raises:
        TrackingError: MLflow is unreachable (the versions then keep status ``training``, which
            never reads as scored).

    """
    from sslmem.tracking import mark_version_failed
    from sslmem.tracking import tags as T
    from sslmem.tracking.pipeline_support import find_versions_by_tag
    from sslmem.tracking.runs import PIPELINE_RUN_TAG

    settings = _settings(settings)
    _configure_tracking(settings)
    if state.upper() == "SUCCEEDED":
        reason = f"pipeline run {pipeline_run_id} succeeded but this version was never scored"
    else:
        reason = f"pipeline run {pipeline_run_id} ended {state}" + (f": {error}" if error else "")
    marked: list[VersionInfo] = []
    for name in dict.fromkeys(model_names):
        for version, tags in find_versions_by_tag(name, PIPELINE_RUN_TAG, pipeline_run_id):
            if tags.get(T.STATUS) in ("scored", "failed"):
                continue  # scored, or already failed with a more precise reason
            mark_version_failed(name, version, reason)
            marked.append(VersionInfo(name, version, tags))
            logger.warning("marked %s/%s failed: %s", name, version, reason)
    return marked


# --------------------------------------------------------------------------------------------
# Results of a run (for the CLI and the service)


@dataclass(frozen=True)
class RunResult:
    """What a finished pipeline run produced, read back from MLflow.

    Attributes:
        pipeline_run_id: The pipeline run.
        candidate: The candidate version and its tags.
        reference: The reference version and its tags (``None`` if not found).
        score: The score summary (``None`` if the run was not scored).

    """

    pipeline_run_id: str
    candidate: VersionInfo
    reference: VersionInfo | None
    score: ScoreSummary | None

    def format(self) -> str:
        """A text summary: SSLMem per set with 95% CIs, tests and verdict, accuracies, versions."""
        from sslmem.tracking import tags as T

        lines = [f"pipeline run {self.pipeline_run_id}"]
        status = self.candidate.tags.get(T.STATUS, "?")
        lines.append(f"registered model version: {self.candidate.uri} (status {status})")
        if status == "failed":
            lines.append(f"  failure: {self.candidate.tags.get(T.FAILURE_REASON, '?')}")
        if self.reference is not None:
            lines.append(f"reference model version:  {self.reference.uri}")
        if self.score is not None:
            lines += ["", "SSLMem per set (raw; mean, 95% CI, one-sided Welch p of S_C > set):"]
            lines.append(self.score.format_table())
        lines += ["", f"{'downstream accuracy':<22} {'kNN':>8} {'linear probe':>13}"]
        for label, info in (("candidate f", self.candidate), ("reference g", self.reference)):
            if info is None:
                continue
            knn = info.tags.get(T.KNN_ACCURACY)
            probe = info.tags.get(T.LINEAR_PROBE_ACCURACY)
            lines.append(f"{label:<22} {_percent(knn):>8} {_percent(probe):>13}")
        return "\n".join(lines)


def _percent(value: str | None) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def read_run_result(model_name: str, *, since_ms: int = 0) -> RunResult:
    """The newest candidate version of ``model_name`` registered since ``since_ms``, with results.

    Raises:
        TrackingError: No such version, or MLflow is unreachable.

    """
    from sslmem.errors import TrackingError
    from sslmem.tracking import get_version_tags
    from sslmem.tracking import tags as T
    from sslmem.tracking.pipeline_support import download_run_json, latest_versions
    from sslmem.tracking.runs import PIPELINE_RUN_TAG

    found = [
        v for v in latest_versions(model_name, since_ms=since_ms) if v[1].get(PIPELINE_RUN_TAG)
    ]
    if not found:
        raise TrackingError(
            f"no version of model {model_name!r} was registered by a pipeline run",
            "check the pipeline's log for the step that failed",
        )
    version, tags, _created = found[0]
    candidate = VersionInfo(model_name, version, tags)
    reference = None
    ref_model, ref_version = tags.get(T.REFERENCE_MODEL), tags.get(T.REFERENCE_VERSION)
    if ref_model and ref_version:
        reference = VersionInfo(ref_model, ref_version, get_version_tags(ref_model, ref_version))
    score = None
    if tags.get(SCORE_RUN_TAG):
        raw = download_run_json(tags[SCORE_RUN_TAG], SCORE_SUMMARY_ARTIFACT)
        score = ScoreSummary.model_validate(raw)
    return RunResult(tags[PIPELINE_RUN_TAG], candidate, reference, score)
