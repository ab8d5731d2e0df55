"""KFP component: train one candidate or reference encoder (GPU task)."""

from kfp.dsl import Dataset, Input, Model, Output


def train_encoder(
    split: Input[Dataset],
    split_sha256: str,
    recipe_json: str,
    role: str,
    seed: int,
    mlflow_experiment: str,
    model: Output[Model],
    code_version: str = "",
) -> None:
    """Train the candidate (S_S ∪ S_C) or reference (S_S ∪ S_I) encoder of the split.

    With ``SSLMEM_TRAIN_NPROC_PER_NODE`` = N > 1 (the pipeline sets it from the train step's
    accelerator limit) it trains in N processes under torchrun (DDP, one per device, same
    global batch); otherwise in this process. With ``SSLMEM_TRAIN_NODES`` > 1 (platform
    ``train: {nodes: N}``) it submits a Kubeflow Trainer TrainJob of N nodes running the same
    training entry point, waits for it and reads rank 0's checkpoint from the object store
    (:func:`sslmem.pipelines.trainjob.train_step`).

    The cache key of this task is its inputs: the split (and its hash), the full training
    recipe, the role, the seed and the code version -- an encoder is reused only when all of
    them match (never one trained by other code). The same identity keys the resume state the
    step uploads to the object store every ``training.resume_every_epochs`` epochs, so a
    retried or preempted attempt continues from it (:func:`sslmem.workflow.train_role`).

    Args:
        split: The split manifest.
        split_sha256: The manifest's hash (checked against the file).
        recipe_json: The training recipe (data, augmentation, model, training sections).
        role: "candidate" or "reference".
        seed: Training seed.
        mlflow_experiment: MLflow experiment of the training run (epoch metrics).
        model: Output: the encoder checkpoint (weights-only safetensors).
        code_version: The code identity (:func:`sslmem.provenance.code_version`), a cache-key
            input; recorded in the model's metadata and part of the resume state's key.

    """
    from pathlib import Path

    from sslmem.pipelines.trainjob import train_step
    from sslmem.runtime import apply_process_settings

    if role not in ("candidate", "reference"):
        raise ValueError(f"role must be 'candidate' or 'reference', got {role!r}")
    apply_process_settings()  # process-wide: the adapter's job
    trained = train_step(
        manifest_path=split.path,
        recipe_json=recipe_json,
        role="candidate" if role == "candidate" else "reference",
        seed=int(seed),
        out_path=Path(model.path),
        expected_manifest_sha256=split_sha256,
        experiment=mlflow_experiment,
        code_version=code_version,
    )
    model.metadata.update(
        {
            "role": trained.role,
            "seed": trained.seed,
            "sha256": trained.sha256,
            "final_loss": trained.final_loss,
            "epochs": trained.epochs,
            "num_train": trained.num_train,
            "split_manifest_sha256": split_sha256,
            "mlflow_run_id": trained.mlflow_run_id or "",
            "code_version": code_version,
        }
    )
