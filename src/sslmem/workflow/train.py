"""Step 2: train one candidate (S_S ∪ S_C) or reference (S_S ∪ S_I) encoder per seed."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.config_text import config_from_json
from sslmem.data.splits import Role, SplitManifest, load_manifest, manifest_dataset
from sslmem.errors import (
    ManifestMismatchError,
)
from sslmem.models.checkpoint import (
    file_sha256,
)
from sslmem.tracking import tags as T
from sslmem.workflow._common import (
    configure_tracking,
    copy_atomic,
    process_settings,
)

if TYPE_CHECKING:  # the training modules import torch: loaded when a step trains
    from sslmem.training import EpochCallback, TrainResult
    from sslmem.training.resume_store import StoreResume

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedEncoder:
    """A trained encoder as a pipeline step reports it.

    Attributes:
        checkpoint: The encoder checkpoint (weights-only safetensors).
        sha256: SHA-256 of the checkpoint file (``""`` on ranks other than 0 of a
            multi-process run, which write no file).
        role: ``"candidate"`` or ``"reference"``.
        seed: Training seed.
        final_loss: Mean loss of the last epoch.
        epochs: Epochs trained.
        num_train: Training images.
        mlflow_run_id: The MLflow run holding its epoch metrics (``None``: not tracked).
        resumed_from_epoch: Epochs an earlier attempt had completed when this one continued
            from its resume state in the object store (``None``: trained from epoch 0).

    """

    checkpoint: Path
    sha256: str
    role: Role
    seed: int
    final_loss: float
    epochs: int
    num_train: int
    mlflow_run_id: str | None
    resumed_from_epoch: int | None = None


def _resume_mirror(
    config: ExperimentConfig,
    manifest: SplitManifest,
    role: Role,
    seed: int,
    code_version: str,
    settings: RuntimeSettings,
) -> StoreResume | None:
    """Where this step's resume state lives in the object store (``None``: mirroring is off)."""
    if config.training.resume_every_epochs == 0:
        return None
    from sslmem.data.store import open_store
    from sslmem.provenance import code_version as current_code_version
    from sslmem.training.resume_store import StoreResume, resume_key
    from sslmem.training.train import run_description

    run = run_description(config, manifest, role, seed)
    key = resume_key(run, code_version or current_code_version())
    return StoreResume(open_store(settings.store_uri, settings), key)


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
    code_version: str = "",
    callbacks: Sequence[EpochCallback] = (),
) -> TrainedEncoder:
    """Train the ``role`` encoder of a split with ``seed`` and write its checkpoint.

    Args:
        manifest_path: The split manifest (path or store URI).
        recipe: The config, or its :func:`~sslmem.config_text.training_recipe` JSON.
        role: ``"candidate"`` (S_S ∪ S_C) or ``"reference"`` (S_S ∪ S_I).
        seed: Training seed (replaces ``training.seed``).
        out_path: Where the checkpoint file is written.
        expected_manifest_sha256: Refuse a manifest with another hash (the pipeline passes the
            hash it cached on).
        experiment: MLflow experiment for a new run with the epoch metrics; ``None``: none.
        device: ``auto``/``cpu``/``cuda``; default ``SSLMEM_DEVICE``.
        settings: Runtime settings (default: from the environment).
        progress: Show a progress bar.
        code_version: The code identity the pipeline computed (``identify-code``); part of
            the resume state's key (default: :func:`sslmem.provenance.code_version` of this
            process).
        callbacks: More per-epoch callbacks (after the MLflow logger).

    Resume across retries: with ``training.resume_every_epochs`` N > 0, the resume state is
    uploaded to the object store (``settings.store_uri``) every N epochs under
    :func:`~sslmem.training.resume_store.resume_key` of this step's run description and code
    version; an attempt that finds it there continues from it, and a step that has written its
    output deletes it. Same inputs and code give the same final weights as an uninterrupted run.

    Under ``torchrun`` every process calls this (see :mod:`sslmem.workflow.train_launch`);
    only rank 0 opens the MLflow run and writes ``out_path``.

    Raises:
        ManifestMismatchError: The manifest hash differs from ``expected_manifest_sha256``.
        ConfigError, TrainingError: See :func:`sslmem.training.train_encoder`.
        TrackingError: MLflow is unreachable (only with ``experiment``).
        StoreError: The object store cannot be read when looking for a resume state.
        CheckpointError: The stored resume state is unusable (the fix names the object).

    """
    from sslmem.training import RESUME_FILE, train_encoder
    from sslmem.training.distributed import context_from_env

    settings = process_settings(settings)
    config = recipe if isinstance(recipe, ExperimentConfig) else config_from_json(recipe)
    manifest = load_manifest(manifest_path, settings)
    if expected_manifest_sha256 and manifest.manifest_sha256 != expected_manifest_sha256:
        raise ManifestMismatchError(
            f"split manifest {manifest_path} hashes to {manifest.manifest_sha256}, expected "
            f"{expected_manifest_sha256}",
            "pass the manifest the pipeline's split step produced",
        )
    dataset = manifest_dataset(manifest, config.data.root)
    mirror = _resume_mirror(config, manifest, role, seed, code_version, settings)
    run_id: str | None = None
    is_main = context_from_env().is_main
    with tempfile.TemporaryDirectory(prefix=f"sslmem-train-{role}-") as tmp:
        resumed = mirror.fetch(Path(tmp) / RESUME_FILE) if mirror is not None else None

        def train(epoch_callbacks: Sequence[EpochCallback]) -> TrainResult:
            return train_encoder(
                dataset,
                manifest,
                role=role,
                config=config,
                out_dir=Path(tmp),
                device=device or settings.device,
                callbacks=[*epoch_callbacks, *callbacks],
                resume=resumed is not None,
                seed_override=seed,
                progress=progress,
                on_resume_saved=mirror.upload if mirror is not None else None,
            )

        if experiment is None or not is_main:  # only rank 0 opens the step's MLflow run
            result = train(())
        else:
            import torch

            from sslmem.data.store import open_store
            from sslmem.device import describe_device
            from sslmem.tracking import (
                MlflowEpochLogger,
                log_compute_device,
                log_config,
                log_metrics,
                log_split_input,
            )
            from sslmem.tracking.runs import step_run
            from sslmem.workflow.split import split_store_key

            configure_tracking(settings)
            tags = {
                T.ROLE: role,
                T.SEED: str(seed),
                T.SPLIT_MANIFEST_SHA256: manifest.manifest_sha256,
            }
            with step_run(
                experiment, step=f"train-{role}", run_name=f"train-{role}-seed{seed}", tags=tags
            ) as run_id:
                log_config(config, run_id=run_id)
                # The split's content-addressed URI, as the register and score runs record it.
                store_key = split_store_key(manifest.manifest_sha256)
                split_uri = open_store(settings.store_uri, settings).uri(store_key)
                log_split_input(manifest, split_uri, run_id=run_id)
                result = train([MlflowEpochLogger(role, run_id=run_id, strict=False)])
                log_compute_device(describe_device(torch.device(result.device)), run_id=run_id)
                log_metrics(
                    {
                        f"{role}/final_loss": result.final_loss,
                        f"{role}/steps": float(result.steps),
                        f"{role}/num_train": float(result.num_train),
                    },
                    run_id=run_id,
                )
        if not is_main:  # the other ranks trained their shards; rank 0 holds the result
            return TrainedEncoder(
                checkpoint=Path(out_path),
                sha256="",
                role=role,
                seed=seed,
                final_loss=result.final_loss,
                epochs=result.epochs,
                num_train=result.num_train,
                mlflow_run_id=None,
                resumed_from_epoch=result.resumed_from_epoch,
            )
        copy_atomic(result.checkpoint, Path(out_path))
    if mirror is not None:
        mirror.discard()  # the output is written: nothing is left to resume
    return TrainedEncoder(
        checkpoint=Path(out_path),
        sha256=file_sha256(out_path),
        role=role,
        seed=seed,
        final_loss=result.final_loss,
        epochs=result.epochs,
        num_train=result.num_train,
        mlflow_run_id=run_id,
        resumed_from_epoch=result.resumed_from_epoch,
    )


#: The per-epoch metrics of ``sslmem train`` (JSON lines), in its run directory.
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class TrainedRun:
    """A run directory written by :func:`train_to_dir`.

    Attributes:
        result: What training returned (checkpoint, resume file, losses, counts).
        metrics: The per-epoch metrics file (``None`` on ranks other than 0).
        manifest_sha256: The split trained on.
        is_main: Whether this process is rank 0 (the one that reports).

    """

    result: TrainResult
    metrics: Path | None
    manifest_sha256: str
    is_main: bool


def train_to_dir(
    *,
    manifest_path: Path | str,
    config: ExperimentConfig,
    role: Role,
    out_dir: Path,
    data_root: Path | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = False,
    settings: RuntimeSettings | None = None,
) -> TrainedRun:
    """Train ``role``'s encoder of the split into the run directory ``out_dir``, untracked.

    ``sslmem train`` is this function (also under ``torchrun``: every process calls it, rank 0
    writes). The run directory holds the checkpoint, the resume file (``resume=True`` continues
    from it) and, from rank 0, :data:`METRICS_FILE`. The pipeline's step is :func:`train_role`.

    Raises:
        ConfigError: Unknown backbone or method, or one that does not fit the backbone (before
            any data is read); an unusable ``out_dir`` (before the training).
        DataError, StoreError, TrainingError: See :func:`sslmem.training.train_encoder`.

    """
    from sslmem.models.registry import get_backbone_spec
    from sslmem.outputs import check_output_dir
    from sslmem.training import JsonlMetricsLogger, train_encoder
    from sslmem.training.distributed import context_from_env
    from sslmem.training.methods import check_compatible

    get_backbone_spec(config.model.arch)  # a bad name fails before any data is loaded
    check_compatible(config.training.method, config.model.arch)
    settings = process_settings(settings)
    check_output_dir(out_dir, what="run directory")  # before an hour of training, not after
    manifest = load_manifest(manifest_path, settings)
    dataset = manifest_dataset(manifest, data_root or config.data.root)
    is_main = context_from_env().is_main
    metrics = Path(out_dir) / METRICS_FILE
    result = train_encoder(
        dataset,
        manifest,
        role=role,
        config=config,
        out_dir=Path(out_dir),
        device=device or settings.device,
        callbacks=[JsonlMetricsLogger(metrics)] if is_main else [],
        resume=resume,
        progress=progress,
    )
    return TrainedRun(result, metrics if is_main else None, manifest.manifest_sha256, is_main)
