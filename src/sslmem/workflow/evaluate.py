"""Step 3: downstream kNN and linear-probe accuracy of one encoder."""

from __future__ import annotations

import logging
from pathlib import Path

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.data.datasets import load_dataset
from sslmem.evaluation.evaluate import EvaluationResult, evaluate_encoder
from sslmem.models.checkpoint import (
    load_checkpoint,
)
from sslmem.workflow._common import (
    checkpoint_augmentation,
    configure_tracking,
    process_settings,
)

logger = logging.getLogger(__name__)


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

    settings = process_settings(settings)
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
        augment_spec=checkpoint_augmentation(loaded, config.augmentation),
        device=resolve_device(device or settings.device),
    )
    if run_id is not None:
        from sslmem.tracking import log_evaluation

        configure_tracking(settings)
        log_evaluation(result, prefix, run_id=run_id)
    return result
