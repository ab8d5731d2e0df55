"""Train a candidate or reference encoder on its side of an SSLMem split.

:func:`train_encoder` is the one entry point the CLI, KFP components and the demo call. It
implements the protocol of Wang et al. (ICLR 2024, Sec. 3): the candidate encoder f trains on
S_S ∪ S_C, the reference encoder g on S_S ∪ S_I, with the same recipe and budget, so that
SSLMem can later compare them on S_C.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from sslmem import __version__
from sslmem.config import ExperimentConfig
from sslmem.data.datasets import ImageDataset
from sslmem.data.splits import Role, SplitManifest
from sslmem.device import resolve_device
from sslmem.errors import ConfigError, TrainingError
from sslmem.models.checkpoint import save_checkpoint, training_recipe
from sslmem.models.encoder import Encoder
from sslmem.models.registry import build_encoder
from sslmem.outputs import check_output_dir
from sslmem.training.callbacks import EpochCallback
from sslmem.training.distributed import barrier, distributed_context, resolve_rank_device
from sslmem.training.loop import fit
from sslmem.training.methods import build_method, check_compatible, get_method_spec
from sslmem.training.resume import ResumeState, load_resume_state
from sslmem.training.seeding import derive_seed, deterministic_algorithms

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.safetensors"
RESUME_FILE = "resume.pt"
ROLES: tuple[Role, ...] = ("candidate", "reference")
ResumeMode = bool | Literal["auto"]


@dataclass(frozen=True)
class TrainResult:
    """A trained encoder and how it was made.

    Attributes:
        checkpoint: The final encoder (weights-only safetensors, see
            :func:`~sslmem.models.save_checkpoint`).
        resume_checkpoint: The last resume file (kept so a finished run can be extended or
            audited; safe to delete).
        role: ``"candidate"`` or ``"reference"``.
        method: SSL method name.
        arch: Encoder architecture.
        seed: Training seed.
        epochs: Epochs trained (the budget).
        steps: Optimizer steps.
        num_train: Training images (S_S ∪ S_C or S_S ∪ S_I).
        final_loss: Mean loss of the last epoch.
        history: Per-epoch metrics (``loss``, ``lr``, ``images_per_s``).
        resumed_from_epoch: Epochs already done when this call resumed, else ``None``.
        metadata: The metadata written into the checkpoint.
        encoder: The trained encoder, on the CPU in eval mode (every rank holds the same
            weights; the checkpoint is the durable copy).
        device: The device this rank trained on (e.g. ``cpu``, ``cuda:0``).

    """

    checkpoint: Path
    resume_checkpoint: Path
    role: Role
    method: str
    arch: str
    seed: int
    epochs: int
    steps: int
    num_train: int
    final_loss: float
    history: tuple[dict[str, float], ...]
    resumed_from_epoch: int | None
    metadata: dict[str, Any]
    encoder: Encoder
    device: str


def _encoder_image_size(dataset: ImageDataset, config: ExperimentConfig) -> int:
    size = config.augmentation.output_size
    if size is not None:
        return size
    height, width = dataset.image_size
    if height != width:
        raise ConfigError(
            f"dataset {dataset.name!r} has non-square {height}x{width} images and "
            "augmentation.output_size is unset",
            "set augmentation.output_size (e.g. --set augmentation.output_size=32)",
        )
    return height


def run_description(
    config: ExperimentConfig, manifest: SplitManifest, role: Role, seed: int
) -> str:
    """Canonical JSON of everything that must match for a resume to continue the same run.

    Stored in every resume file and checked on resume; a pipeline train step also keys its
    resume state in the object store on it (:func:`~sslmem.training.resume_store.resume_key`).
    """
    training = config.training.model_dump(mode="json")
    # Checkpoint cadences and compilation do not change the weights a run produces.
    for key in ("checkpoint_every", "resume_every_epochs", "compile"):
        training.pop(key)
    description = {
        "role": role,
        "seed": seed,
        "split_manifest_sha256": manifest.manifest_sha256,
        "dataset": manifest.dataset.model_dump(mode="json"),
        "training": training,
        "model": config.model.model_dump(mode="json"),
        "augmentation": config.augmentation.model_dump(mode="json"),
    }
    return json.dumps(description, sort_keys=True)


def _prepare_out_dir(out_dir: Path, resume: ResumeMode) -> ResumeState | None:
    """Load the resume state to continue from, or check the directory is free for a new run."""
    resume_path = out_dir / RESUME_FILE
    if resume is True or (resume == "auto" and resume_path.exists()):
        return load_resume_state(resume_path)
    taken = [p.name for p in (resume_path, out_dir / ENCODER_FILE) if p.exists()]
    if taken:
        raise TrainingError(
            f"{out_dir} already holds a training run ({', '.join(taken)})",
            "pass --resume to continue it, or choose a new --out directory",
        )
    return None


def train_encoder(
    dataset: ImageDataset,
    manifest: SplitManifest,
    *,
    role: Role,
    config: ExperimentConfig,
    out_dir: Path,
    device: torch.device | str | None = None,
    callbacks: Sequence[EpochCallback] = (),
    resume: ResumeMode = False,
    seed_override: int | None = None,
    progress: bool = True,
    on_resume_saved: Callable[[Path, int], None] | None = None,
) -> TrainResult:
    """Train the candidate (S_S ∪ S_C) or reference (S_S ∪ S_I) encoder of a split.

    Under ``torchrun`` every process calls this; they join one process group (gloo on CPU,
    NCCL on CUDA), each trains on its shard of every batch, and only rank 0 writes files.

    The seed fixes the initial weights, the shuffle order, the augmentations and any method
    randomness; the same seed gives candidate and reference the same initial weights, which
    removes initialisation noise from their difference.

    Args:
        dataset: The dataset the manifest was made from (uint8 images).
        manifest: The SSLMem split.
        role: ``"candidate"`` or ``"reference"``.
        config: The experiment config (``training``, ``model``, ``augmentation`` apply).
        out_dir: Run directory: ``encoder.safetensors`` (final), ``resume.pt`` (resume file).
        device: ``"auto"``/``None``, ``"cpu"``, ``"cuda"`` or a device.
        callbacks: Per-epoch metric callbacks (rank 0); those with ``on_train_begin`` are
            first given the history of the run so far (empty unless resuming), so a metrics
            file starts clean for a new run and holds each epoch once after a resume.
        resume: ``True`` continues the run in ``out_dir`` (its resume file must exist);
            ``"auto"`` continues if a resume file exists, else starts afresh; ``False`` starts
            afresh and refuses a directory that already holds a run.
        seed_override: Replaces ``config.training.seed`` (several seeds per role).
        progress: Show a progress bar on a TTY.
        on_resume_saved: Mirror of the resume file, called on rank 0 every
            ``training.resume_every_epochs`` epochs after it is written (see
            :func:`~sslmem.training.loop.fit`); a pipeline step passes
            :meth:`~sslmem.training.resume_store.StoreResume.upload`.

    Returns:
        The :class:`TrainResult`.

    Raises:
        ManifestMismatchError: The manifest was not made from ``dataset``.
        ConfigError: Unknown role, method or architecture, a method that does not support the
            architecture, or a batch layout that does not fit.
        CheckpointError: The resume file is missing (``resume=True``), corrupt or from
            another run.
        TrainingError: ``out_dir`` holds a run and ``resume`` is False, or the loss diverged.
        OutputError: ``out_dir`` is a file or cannot be written (checked before any work).

    """
    if role not in ROLES:
        raise ConfigError(f"unknown encoder role {role!r}", f"use one of: {', '.join(ROLES)}")
    check_output_dir(out_dir, what="run directory")  # before loading data and training
    training = config.training
    seed = training.seed if seed_override is None else seed_override
    method_spec = get_method_spec(training.method)
    check_compatible(training.method, config.model.arch)
    manifest.verify_against(dataset)
    indices = torch.from_numpy(manifest.training_indices(role))
    # A mapped dataset (remote data, decoded once per node) is gathered batch by batch, never
    # copied whole; a resident one is compacted to the training set once.
    mapped = dataset.mapped_from is not None
    images = dataset.images if mapped else dataset.images.index_select(0, indices)

    out_dir = Path(out_dir)
    resume_state = _prepare_out_dir(out_dir, resume)
    run = run_description(config, manifest, role, seed)
    requested = resolve_device(str(device) if device is not None else "auto")
    with (
        distributed_context(requested) as ctx,
        deterministic_algorithms(training.deterministic),
    ):
        compute = resolve_rank_device(requested, ctx)
        # Same initial weights on every rank (DDP also broadcasts them) and for every resume.
        torch.manual_seed(derive_seed(seed, "init"))
        encoder = build_encoder(
            config.model,
            in_channels=dataset.num_channels,
            image_size=_encoder_image_size(dataset, config),
        )
        method = build_method(encoder, training)
        if ctx.is_main:
            logger.info(
                "training %s encoder: %s on %s, %d images of %s, %d epochs, seed %d, %d processes",
                role,
                training.method,
                config.model.arch,
                len(indices),
                dataset.name,
                training.epochs,
                seed,
                ctx.world_size,
            )
        result = fit(
            method,
            images,
            indices,
            rows=indices if mapped else None,
            training=training,
            augmentation=config.augmentation,
            device=compute,
            dist_ctx=ctx,
            resume_path=out_dir / RESUME_FILE,
            resume_state=resume_state,
            run=run,
            seed=seed,
            callbacks=callbacks,
            progress=progress,
            on_resume_saved=on_resume_saved,
        )
        metadata = {
            "role": role,
            "method": training.method,
            "method_paper": method_spec.paper,
            "head_trained": method_spec.cls.trains_head,
            "training": training.model_dump(mode="json"),
            "augmentation": config.augmentation.model_dump(mode="json"),
            "model": config.model.model_dump(mode="json"),
            # What the scorer requires candidate and reference to share (all but the seed).
            "recipe": training_recipe(
                training.model_dump(mode="json"), config.model.model_dump(mode="json")
            ),
            "split_manifest_sha256": manifest.manifest_sha256,
            "dataset": manifest.dataset.model_dump(mode="json"),
            "training_sets": ["shared", "candidate" if role == "candidate" else "independent"],
            "num_train": len(indices),
            "seed": seed,
            "epochs": result.epochs,
            "steps": result.global_step,
            "final_loss": result.final_loss,
            "world_size": ctx.world_size,
            "device_type": compute.type,
            "sslmem_version": __version__,
            "torch_version": torch.__version__,
        }
        checkpoint = out_dir / ENCODER_FILE
        if ctx.is_main:
            _save_encoder(method.encoder, checkpoint, metadata)
        barrier(ctx)
    return TrainResult(
        checkpoint=checkpoint,
        resume_checkpoint=out_dir / RESUME_FILE,
        role=role,
        method=training.method,
        arch=config.model.arch,
        seed=seed,
        epochs=result.epochs,
        steps=result.global_step,
        num_train=len(indices),
        final_loss=result.final_loss,
        history=result.history,
        resumed_from_epoch=result.resumed_from_epoch,
        metadata=metadata,
        encoder=method.encoder.to("cpu").eval(),
        device=str(compute),
    )


def _save_encoder(encoder: Encoder, path: Path, metadata: dict[str, Any]) -> None:
    """Save the encoder on the CPU in eval mode (the state every consumer loads)."""
    encoder.eval()
    save_checkpoint(encoder, path, metadata=metadata)
    logger.info("wrote %s", path)
