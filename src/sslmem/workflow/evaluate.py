"""Step 3: downstream kNN and linear-probe accuracy of one encoder.

One function for every adapter: ``sslmem evaluate`` prints (and optionally writes) its record,
the KFP component logs its result, the pipeline's local runner calls it through the component.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.evaluation.evaluate import EvaluationResult
from sslmem.workflow._common import configure_tracking, process_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderEvaluation:
    """The downstream accuracy of one encoder checkpoint and what it was measured on.

    Attributes:
        result: kNN and linear-probe accuracy (:class:`EvaluationResult`).
        encoder: The checkpoint as given.
        encoder_sha256: Its file's sha256.
        arch: Its backbone.
        role: ``candidate``/``reference`` as its header declares (``None``: not recorded).
        method: Its SSL method (``None``: not recorded).
        dataset: The labelled dataset evaluated on.
        augmentation_source: Where the preprocessing came from (``checkpoint`` or ``config``).

    """

    result: EvaluationResult
    encoder: str
    encoder_sha256: str
    arch: str
    role: Any
    method: Any
    dataset: str
    augmentation_source: str

    def to_record(self) -> dict[str, Any]:
        """The JSON record ``sslmem evaluate`` prints: the result's fields plus the above."""
        return {
            "encoder": self.encoder,
            "encoder_sha256": self.encoder_sha256,
            "arch": self.arch,
            "role": self.role,
            "method": self.method,
            "dataset": self.dataset,
            "augmentation_source": self.augmentation_source,
            **self.result.to_dict(),
        }


def evaluate_role(
    checkpoint_path: Path | str,
    config: ExperimentConfig,
    *,
    dataset: str | None = None,
    data_root: Path | None = None,
    out: Path | None = None,
    run_id: str | None = None,
    prefix: str = "eval",
    device: str | None = None,
    settings: RuntimeSettings | None = None,
) -> EncoderEvaluation:
    """Downstream kNN and linear-probe accuracy of one encoder checkpoint.

    Features use the encoder's own preprocessing (its checkpoint's augmentation spec) on the
    train (bank / probe training set) and test splits of a labelled dataset: ``dataset``, else
    the one the encoder was trained on, else ``config.data.dataset``.

    Args:
        checkpoint_path: The encoder.
        config: Experiment config (``evaluation``, ``augmentation`` and ``data`` apply).
        dataset: Labelled dataset name (default: see above).
        data_root: Local directory of the dataset (default ``config.data.root``).
        out: Also write the JSON record here (checked before the work, written atomically).
        run_id: Also log the result to this MLflow run (e.g. the training run).
        prefix: Metric prefix in that run.
        device: Compute device; default ``SSLMEM_DEVICE``.
        settings: Runtime settings (default: from the environment).

    Returns:
        The result with the encoder's identity and the dataset.

    Raises:
        ConfigError: An unknown ``dataset``, or an unwritable ``out``.
        OutputWriteError: Writing ``out`` failed part-way (disk full); the old file stays.
        CheckpointError: The checkpoint cannot be loaded.
        DataError: The dataset is missing, or its channels differ from the encoder's.
        TrackingError: MLflow is unreachable (only with ``run_id``).

    """
    from sslmem.atomic import atomic_write_bytes
    from sslmem.data.datasets import available_datasets, load_dataset
    from sslmem.device import resolve_device
    from sslmem.errors import ConfigError, DataError, OutputWriteError
    from sslmem.evaluation.evaluate import evaluate_encoder
    from sslmem.models.checkpoint import load_checkpoint, recorded_augmentation
    from sslmem.outputs import check_output_file, describe_os_error

    if dataset is not None and dataset not in available_datasets():
        raise ConfigError(
            f"--data: unknown dataset {dataset!r}",
            f"choose one of {', '.join(available_datasets())}",
        )
    if out is not None:
        check_output_file(out, what="result file")  # before the work, not after it
    settings = process_settings(settings)
    compute = resolve_device(device or settings.device)
    loaded = load_checkpoint(checkpoint_path)
    dataset_ref = loaded.metadata.get("dataset")
    trained_on = dataset_ref.get("name") if isinstance(dataset_ref, dict) else None
    name = dataset or trained_on or config.data.dataset
    root = data_root or config.data.root
    train = load_dataset(name, split="train", root=root)
    test = load_dataset(name, split="test", root=root)
    if train.num_channels != loaded.encoder.in_channels:
        raise DataError(
            f"dataset {name!r} has {train.num_channels}-channel images, the encoder expects "
            f"{loaded.encoder.in_channels}",
            "evaluate on a dataset like the one the encoder was trained on (--data)",
        )
    spec, spec_source = recorded_augmentation(loaded, config.augmentation)
    result = evaluate_encoder(
        loaded.encoder, train, test, config=config.evaluation, augment_spec=spec, device=compute
    )
    evaluation = EncoderEvaluation(
        result=result,
        encoder=str(checkpoint_path),
        encoder_sha256=loaded.sha256,
        arch=loaded.header.arch,
        role=loaded.metadata.get("role"),
        method=loaded.metadata.get("method"),
        dataset=name,
        augmentation_source=spec_source,
    )
    if out is not None:
        text = json.dumps(evaluation.to_record(), indent=2, sort_keys=True) + "\n"
        try:
            atomic_write_bytes(out, text.encode())
        except OSError as exc:  # disk full, quota, file-size limit: the old file stays
            raise OutputWriteError(
                f"cannot write result file {out}: {describe_os_error(exc)}; any previous file "
                "there is left as it was",
                f"free space (or raise the quota or file-size limit) where {out} lives, or "
                "choose another --out, and run again",
            ) from exc
    if run_id is not None:
        from sslmem.tracking import log_evaluation

        configure_tracking(settings)
        log_evaluation(result, prefix, run_id=run_id)
    return evaluation
