"""The training loop shared by every SSL method.

Design choices, and why:

* **Data stays uint8 in one tensor** (on the GPU when it fits): a batch is an index, so loading
  costs nothing and augmentation runs batched on the device
  (:class:`~sslmem.augment.BatchAugmenter`, the module scoring uses), instead of per-sample PIL
  transforms in DataLoader workers. A dataset memory-mapped from the node's decoded cache
  (remote data larger than memory) is never copied whole: each batch gathers its rows from the
  mapping, so the page cache, shared by all ranks, holds what was read.
* **Randomness is derived, not carried**: the shuffle order of epoch ``e`` comes from
  ``derive_seed(seed, "shuffle", e)``; the views of a point in epoch ``e`` are a pure function
  of ``(derive_seed(seed, "augment", e), its dataset index)``; a method's own randomness (MAE
  masks) from ``derive_seed(seed, "step", step, rank, micro)``. A resumed run therefore repeats
  an uninterrupted one exactly, and views do not depend on batch size or world size.
* **One global batch size**: ``training.batch_size`` images per optimizer step over all
  processes and accumulation micro-batches, so a recipe means the same on 1 CPU or 8 GPUs.
* **Checkpoints only from rank 0, only at epoch ends, only after the loss was checked finite**:
  a diverged run keeps its last good resume file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.config import TrainingConfig
from sslmem.device import autocast_for
from sslmem.errors import CheckpointError, ConfigError, TrainingError
from sslmem.training.callbacks import EpochCallback, TrainBeginCallback
from sslmem.training.distributed import (
    DistContext,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    shard,
)
from sslmem.training.methods.base import SSLMethod, StepContext
from sslmem.training.optim import build_optimizer
from sslmem.training.resume import (
    ResumeState,
    capture_rng_state,
    describe_run_mismatch,
    restore_rng_state,
    save_resume_state,
)
from sslmem.training.schedule import build_scheduler
from sslmem.training.seeding import derive_seed, generator

logger = logging.getLogger(__name__)

#: Optimizer steps between loss checks (each one a device sync and, under DDP, an all-reduce).
CHECK_EVERY = 20
#: Keep the dataset on the GPU if it takes at most this fraction of the free memory.
_DEVICE_DATA_FRACTION = 0.25


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        epochs: Completed epochs (the whole budget).
        global_step: Completed optimizer steps.
        final_loss: Mean loss of the last epoch.
        history: Per-epoch metrics of the whole run (resumed epochs included).
        resumed_from_epoch: Completed epochs found in the resume file, or ``None``.

    """

    epochs: int
    global_step: int
    final_loss: float
    history: tuple[dict[str, float], ...]
    resumed_from_epoch: int | None


@dataclass(frozen=True)
class _TrainingSet:
    """Where batches come from: ``source[rows]``, or all of ``source`` when ``rows`` is None.

    Attributes:
        source: uint8 ``[M, C, H, W]`` on the compute device, in (pinned) host memory, or
            memory-mapped.
        rows: ``[N]`` int64 rows of ``source`` forming the training set (on the host), or None.

    """

    source: torch.Tensor
    rows: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.source)

    @property
    def index_device(self) -> torch.device:
        """Where batch indices live (the shuffle permutation, the keys)."""
        return self.rows.device if self.rows is not None else self.source.device

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` of training-set positions ``index [B]``."""
        return self.source[self.rows[index] if self.rows is not None else index]


@dataclass(frozen=True)
class StepPlan:
    """How a global batch is cut into per-process micro-batches.

    Attributes:
        batch_size: Images per optimizer step over all processes.
        micro_batch: Images per forward pass on one process.
        accum_steps: Micro-batches per process and optimizer step.
        steps_per_epoch: Optimizer steps per epoch (the last partial batch is dropped).

    """

    batch_size: int
    micro_batch: int
    accum_steps: int
    steps_per_epoch: int


def plan_steps(num_images: int, training: TrainingConfig, world_size: int) -> StepPlan:
    """Check that the batch divides evenly and compute the step layout.

    Raises:
        ConfigError: The batch size is not divisible by ``world_size * grad_accum_steps``, a
            micro-batch would hold fewer than 2 images, or the training set is smaller than one
            batch.

    """
    batch, accum = training.batch_size, training.grad_accum_steps
    parts = world_size * accum
    if batch % parts != 0:
        raise ConfigError(
            f"training.batch_size {batch} is not divisible by processes x grad_accum_steps "
            f"= {world_size} x {accum}",
            f"use a batch size that is a multiple of {parts}",
        )
    if batch // parts < 2:
        raise ConfigError(
            f"a micro-batch of training.batch_size {batch} / ({world_size} x {accum}) holds "
            "fewer than 2 images (batch norm and contrastive losses need at least 2)",
            "raise training.batch_size or lower grad_accum_steps",
        )
    if num_images < batch:
        raise ConfigError(
            f"the training set has {num_images} images, fewer than training.batch_size {batch}",
            f"use --batch-size {max(2 * parts, (num_images // parts) * parts)} or less",
        )
    return StepPlan(
        batch_size=batch,
        micro_batch=batch // parts,
        accum_steps=accum,
        steps_per_epoch=num_images // batch,
    )


def _place(images: torch.Tensor, rows: torch.Tensor | None, device: torch.device) -> _TrainingSet:
    """Put the training set where batches are read fastest without copying a mapped dataset.

    On the CPU, batches gather from ``images`` as given (a mapping stays a mapping). On a GPU,
    the training set moves to the device if it fits comfortably; otherwise resident images
    stay in pinned memory and mapped ones (``rows`` given) are gathered per batch.
    """
    if device.type != "cuda":
        return _TrainingSet(images.to(device), rows)
    count = len(rows) if rows is not None else len(images)
    free, _ = torch.cuda.mem_get_info(device)
    if count * images[:1].numel() <= _DEVICE_DATA_FRACTION * free:
        selected = images.index_select(0, rows) if rows is not None else images
        return _TrainingSet(selected.to(device), None)
    logger.info("dataset does not fit on %s; streaming batches from host memory", device)
    return _TrainingSet(images.pin_memory() if rows is None else images, rows)


class _NonFiniteLossError(Exception):
    def __init__(self, value: float, step_in_epoch: int) -> None:
        self.value, self.step_in_epoch = value, step_in_epoch


def _check_window(
    losses: torch.Tensor, start: int, stop: int, reduced: torch.Tensor, ctx: DistContext
) -> None:
    """All-reduce the per-step losses ``[start, stop)`` into ``reduced`` and check them.

    Every rank takes the same decision, so a divergence on one rank stops all of them.
    """
    window = all_reduce_mean(losses[start:stop], ctx)
    reduced[start:stop] = window
    finite = torch.isfinite(window).cpu()
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise _NonFiniteLossError(float(window[first]), start + first)


@dataclass
class _Models:
    """The method and the wrappers the step calls (DDP, torch.compile)."""

    method: SSLMethod
    ddp: DistributedDataParallel | None
    step_model: Callable[..., torch.Tensor]

    def no_sync(self, last_micro: bool) -> contextlib.AbstractContextManager[Any]:
        """Skip the gradient all-reduce on every micro-batch but the last."""
        if self.ddp is None or last_micro:
            return contextlib.nullcontext()
        return self.ddp.no_sync()


def _wrap(
    method: SSLMethod, training: TrainingConfig, device: torch.device, ctx: DistContext
) -> _Models:
    ddp: DistributedDataParallel | None = None
    model: nn.Module = method
    if ctx.enabled:
        ddp = DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None
        )
        model = ddp
    step_model: Callable[..., torch.Tensor] = model
    if training.compile:
        step_model = torch.compile(model)
    return _Models(method=method, ddp=ddp, step_model=step_model)


def _progress_bar(enabled: bool, total: int, initial: int, desc: str) -> tqdm[Any]:
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        dynamic_ncols=True,
        leave=True,
        disable=not (enabled and sys.stderr.isatty()),
    )


def _load_resume(
    state: ResumeState,
    *,
    run: str,
    method: SSLMethod,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    path: Path,
    plan: StepPlan,
) -> None:
    if state.run != run:
        raise CheckpointError(
            f"resume checkpoint {path} belongs to another run: its recipe "
            f"{describe_run_mismatch(state.run, run)}",
            "resume with exactly the recipe, data, split, role and seed of the interrupted run, "
            "or choose a new --out directory",
        )
    if state.global_step != state.epoch * plan.steps_per_epoch:
        raise CheckpointError(
            f"resume checkpoint {path} is inconsistent: {state.global_step} steps after "
            f"{state.epoch} epochs of {plan.steps_per_epoch} steps"
        )
    try:
        method.load_state_dict(state.model, strict=True)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        restore_rng_state(state.rng)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"resume checkpoint {path} does not fit this model: {str(exc).splitlines()[0]}",
            "resume with the recipe of the interrupted run, or start a new run",
        ) from exc


def fit(
    method: SSLMethod,
    images: torch.Tensor,
    keys: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    training: TrainingConfig,
    augmentation: AugmentationSpec,
    device: torch.device,
    dist_ctx: DistContext,
    resume_path: Path,
    resume_state: ResumeState | None,
    run: str,
    seed: int,
    callbacks: Sequence[EpochCallback] = (),
    progress: bool = True,
    on_resume_saved: Callable[[Path, int], None] | None = None,
) -> FitResult:
    """Train ``method`` on ``images`` for ``training.epochs`` epochs.

    Args:
        method: The SSL method (with its encoder), freshly built on the CPU.
        images: The training set, uint8 ``[N, C, H, W]``; or, with ``rows``, the dataset
            ``[M, C, H, W]`` it is drawn from (e.g. memory-mapped), never copied whole.
        keys: ``[N]`` int64 stable ids of the training images (their dataset indices); they
            key the augmentation randomness.
        rows: ``[N]`` int64 rows of ``images`` forming the training set, gathered batch by
            batch; ``None``: ``images`` is the training set. Both give the same run.
        training: The recipe.
        augmentation: The view distribution.
        device: This process's compute device.
        dist_ctx: Rank and world size.
        resume_path: Where the resume file is written (rank 0).
        resume_state: A loaded resume file to continue from, or ``None`` to start afresh.
        run: Canonical JSON describing the run; stored in, and checked against, resume files.
        seed: Run seed.
        callbacks: Per-epoch metric callbacks (called on rank 0); a
            :class:`~sslmem.training.callbacks.TrainBeginCallback` first receives the history
            so far (resumed epochs, or nothing).
        progress: Show a progress bar (only on a TTY, only on rank 0).
        on_resume_saved: Called on rank 0 as ``on_resume_saved(resume_path, epoch)`` right
            after the resume file is written every ``training.resume_every_epochs`` epochs
            (not after the last one, whose result is the encoder); it mirrors the file to the
            object store (:class:`~sslmem.training.resume_store.StoreResume`). ``None``: no
            mirror, and the file follows ``training.checkpoint_every`` alone.

    Returns:
        The :class:`FitResult`.

    Raises:
        ConfigError: The batch layout does not fit the data or the world size.
        CheckpointError: ``resume_state`` belongs to another run or does not fit the model.
        TrainingError: The loss became NaN or infinite (the last good resume file is kept).

    """
    if rows is not None and len(rows) != len(keys):
        raise ConfigError(f"{len(rows)} training rows but {len(keys)} keys: one key per row")
    plan = plan_steps(len(rows) if rows is not None else len(images), training, dist_ctx.world_size)
    total_steps = plan.steps_per_epoch * training.epochs
    warmup_steps = min(training.warmup_epochs * plan.steps_per_epoch, total_steps)

    method.to(device)
    if device.type == "cuda":
        method.to(memory_format=torch.channels_last)
        if dist_ctx.enabled and training.sync_batchnorm:
            method = nn.SyncBatchNorm.convert_sync_batchnorm(method)  # type: ignore[assignment,no-untyped-call]
    method.train()
    optimizer = build_optimizer(method, training)
    scheduler = build_scheduler(
        optimizer,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        schedule=training.lr_schedule,
    )
    start_epoch, history = 0, []
    if resume_state is not None:
        _load_resume(
            resume_state,
            run=run,
            method=method,
            optimizer=optimizer,
            scheduler=scheduler,
            path=resume_path,
            plan=plan,
        )
        start_epoch, history = resume_state.epoch, list(resume_state.history)
        logger.info("resuming from %s after epoch %d", resume_path, start_epoch)

    models = _wrap(method, training, device, dist_ctx)
    data = _place(images, rows.to(dtype=torch.int64) if rows is not None else None, device)
    keys = keys.to(device=data.index_device, dtype=torch.int64)
    augmenter = BatchAugmenter(augmentation)
    view_ids = torch.arange(method.num_views, device=device)
    last_checkpoint = start_epoch if resume_state is not None else None

    if dist_ctx.is_main:
        for callback in callbacks:
            if isinstance(callback, TrainBeginCallback):
                callback.on_train_begin(tuple(history))
    bar = _progress_bar(
        progress and dist_ctx.is_main,
        total_steps,
        start_epoch * plan.steps_per_epoch,
        f"train {training.method}",
    )
    try:
        for epoch in range(start_epoch, training.epochs):
            try:
                metrics = _run_epoch(
                    models,
                    data,
                    keys,
                    epoch=epoch,
                    plan=plan,
                    total_steps=total_steps,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    augmenter=augmenter,
                    view_ids=view_ids,
                    device=device,
                    dist_ctx=dist_ctx,
                    seed=seed,
                    bar=bar,
                )
            except _NonFiniteLossError as bad:
                kept = (
                    f"the last good resume checkpoint {resume_path} (after epoch "
                    f"{last_checkpoint}) is kept"
                    if last_checkpoint is not None
                    else "no checkpoint had been written yet"
                )
                raise TrainingError(
                    f"training diverged: the loss became {bad.value} at epoch {epoch}, step "
                    f"{bad.step_in_epoch} (optimizer step "
                    f"{epoch * plan.steps_per_epoch + bad.step_in_epoch}); {kept}",
                    "lower the learning rate (--lr), add warm-up (training.warmup_epochs) or "
                    "raise the temperature, then train again in a new --out directory",
                ) from None
            history.append(metrics)
            broadcast_buffers(method, dist_ctx)
            completed = epoch + 1
            mirror_due = (
                on_resume_saved is not None
                and training.resume_every_epochs > 0
                and completed % training.resume_every_epochs == 0
                and completed < training.epochs
            )
            if (
                mirror_due
                or completed % training.checkpoint_every == 0
                or completed == training.epochs
            ):
                if dist_ctx.is_main:
                    save_resume_state(
                        resume_path,
                        ResumeState(
                            epoch=completed,
                            global_step=completed * plan.steps_per_epoch,
                            model=method.state_dict(),
                            optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(),
                            rng=capture_rng_state(),
                            history=history,
                            run=run,
                        ),
                    )
                    if mirror_due and on_resume_saved is not None:
                        on_resume_saved(resume_path, completed)
                barrier(dist_ctx)
                last_checkpoint = completed
            if dist_ctx.is_main:
                logger.info(
                    "epoch %d/%d loss %.4f lr %.3g %.0f img/s",
                    completed,
                    training.epochs,
                    metrics["loss"],
                    metrics["lr"],
                    metrics["images_per_s"],
                )
                for callback in callbacks:
                    callback.on_epoch_end(epoch, dict(metrics))
    finally:
        bar.close()
    if not history:
        raise TrainingError("training finished without running any epoch")
    return FitResult(
        epochs=training.epochs,
        global_step=training.epochs * plan.steps_per_epoch,
        final_loss=history[-1]["loss"],
        history=tuple(history),
        resumed_from_epoch=resume_state.epoch if resume_state is not None else None,
    )


def _micro_batches(
    perm: torch.Tensor, step: int, plan: StepPlan, ctx: DistContext
) -> Iterator[torch.Tensor]:
    """This rank's micro-batches (index tensors) of optimizer step ``step``."""
    batch = perm[step * plan.batch_size : (step + 1) * plan.batch_size]
    yield from shard(batch, ctx).view(plan.accum_steps, plan.micro_batch)


def _run_epoch(
    models: _Models,
    data: _TrainingSet,
    keys: torch.Tensor,
    *,
    epoch: int,
    plan: StepPlan,
    total_steps: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    augmenter: BatchAugmenter,
    view_ids: torch.Tensor,
    device: torch.device,
    dist_ctx: DistContext,
    seed: int,
    bar: tqdm[Any],
) -> dict[str, float]:
    """One epoch; returns its metrics (``loss``, ``lr``, ``images_per_s``)."""
    method = models.method
    started = time.perf_counter()
    shuffle = generator(derive_seed(seed, "shuffle", epoch))
    perm = torch.randperm(len(data), generator=shuffle).to(data.index_device)
    augment_seed = derive_seed(seed, "augment", epoch)
    losses = torch.zeros(plan.steps_per_epoch, device=device)
    reduced = torch.zeros(plan.steps_per_epoch, device=device)
    checked, lr = 0, float(optimizer.param_groups[0]["lr"])
    for step in range(plan.steps_per_epoch):
        global_step = epoch * plan.steps_per_epoch + step
        step_loss = torch.zeros((), device=device)
        for micro, index in enumerate(_micro_batches(perm, step, plan, dist_ctx)):
            ctx = StepContext(
                epoch=epoch,
                global_step=global_step,
                total_steps=total_steps,
                steps_per_epoch=plan.steps_per_epoch,
                generator=generator(
                    derive_seed(seed, "step", global_step, dist_ctx.rank, micro), device
                ),
            )
            with torch.no_grad():
                batch = data.batch(index).to(device, non_blocking=True)
                views = augmenter.views(batch, keys[index].to(device), view_ids, augment_seed)
            last = micro == plan.accum_steps - 1
            with models.no_sync(last), autocast_for(device):
                loss = models.step_model(views, ctx)
            # Each micro-batch is 1/accum of the step's images; DDP averages over ranks.
            (loss / plan.accum_steps).backward()  # type: ignore[no-untyped-call]
            step_loss += loss.detach().float() / plan.accum_steps
        method.before_optimizer_step(ctx)
        lr = float(optimizer.param_groups[0]["lr"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        method.after_optimizer_step(ctx)
        losses[step] = step_loss
        bar.update(1)
        if (step + 1) % CHECK_EVERY == 0:
            _check_window(losses, checked, step + 1, reduced, dist_ctx)
            checked = step + 1
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(reduced[step]):.4f}", lr=f"{lr:.2e}")
    if checked < plan.steps_per_epoch:
        _check_window(losses, checked, plan.steps_per_epoch, reduced, dist_ctx)
    loss_mean = float(reduced.mean())
    bar.set_postfix(epoch=epoch + 1, loss=f"{loss_mean:.4f}", lr=f"{lr:.2e}")
    seconds = max(time.perf_counter() - started, 1e-9)
    if not math.isfinite(loss_mean):  # pragma: no cover - caught per window above
        raise _NonFiniteLossError(loss_mean, plan.steps_per_epoch - 1)
    return {
        "loss": loss_mean,
        "lr": lr,
        "images_per_s": plan.steps_per_epoch * plan.batch_size / seconds,
    }
