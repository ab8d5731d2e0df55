"""Helpers shared by the workflow steps."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sslmem.atomic import atomic_path
from sslmem.augment import AugmentationSpec
from sslmem.config import ExperimentConfig, RuntimeSettings, ScoringConfig
from sslmem.models.checkpoint import (
    LoadedCheckpoint,
    load_checkpoint,
    recorded_augmentation,
)

if TYPE_CHECKING:
    from sslmem.data.splits import SplitManifest

logger = logging.getLogger(__name__)


def process_settings(settings: RuntimeSettings | None) -> RuntimeSettings:
    """The runtime settings of a step: ``settings``, else read from the environment.

    Only reads them: thread count and allocator are process-wide, so the adapters (CLI, KFP
    components, service) apply them with :func:`sslmem.runtime.apply_process_settings`.
    """
    return settings if settings is not None else RuntimeSettings()


def configure_tracking(settings: RuntimeSettings) -> None:
    """Point MLflow at the settings' tracking URI (warn when it falls back to ./mlruns).

    The URI is ``SSLMEM_MLFLOW_TRACKING_URI``, else MLflow's ``MLFLOW_TRACKING_URI``, else the
    local SQLite store (:attr:`RuntimeSettings.mlflow_tracking_uri`).
    """
    from sslmem.tracking import configure_from_settings

    if settings.mlflow_tracking_uri is None:
        logger.warning(
            "neither SSLMEM_MLFLOW_TRACKING_URI nor MLFLOW_TRACKING_URI is set: tracking into a "
            "local SQLite store under ./mlruns (in a pipeline pod this is lost; set it in the "
            "platform config)"
        )
    elif settings.tracking_uri_from_mlflow():
        logger.info("SSLMEM_MLFLOW_TRACKING_URI is not set: tracking to MLFLOW_TRACKING_URI")
    configure_from_settings(settings)


def checkpoint_augmentation(
    checkpoint: LoadedCheckpoint, fallback: AugmentationSpec
) -> AugmentationSpec:
    """The augmentation an encoder was trained with, else ``fallback``.

    See :func:`sslmem.models.checkpoint.recorded_augmentation`.
    """
    return recorded_augmentation(checkpoint, fallback)[0]


def loaded_checkpoint(item: Path | str | LoadedCheckpoint) -> LoadedCheckpoint:
    """``item`` loaded (weights-only) unless it already is."""
    return item if isinstance(item, LoadedCheckpoint) else load_checkpoint(item)


def copy_atomic(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` so that ``target`` is either absent or complete."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


#: Opens a progress bar: ``(description, total points)`` -> a context manager yielding an object
#: with ``update(points)`` (``tqdm`` fits). The CLI passes one; other adapters none.
ProgressFactory = Callable[[str, int], AbstractContextManager[Any]]


@contextlib.contextmanager
def progress_bar(progress: ProgressFactory | None, what: str, total: int) -> Iterator[Any]:
    """``progress``'s bar's ``update`` for one phase, or ``None`` without one."""
    if progress is None:
        yield None
        return
    with progress(what, total) as bar:
        yield bar.update


def scored_point_count(manifest: SplitManifest, scoring: ScoringConfig) -> int:
    """How many points the scoring config scores on the split (a progress bar's total)."""
    from sslmem.memorization.scoring import select_points

    chosen = select_points(
        manifest, scoring.sets, shared_sample=scoring.shared_sample, seed=scoring.seed
    )
    return len(chosen[0])


def views_augmentation(
    encoder: LoadedCheckpoint,
    config: ExperimentConfig,
    source: Literal["checkpoint", "config"],
) -> AugmentationSpec:
    """The views' augmentation: the encoder's training one (``checkpoint``) or the config's."""
    if source == "config":
        return config.augmentation
    return checkpoint_augmentation(encoder, config.augmentation)
