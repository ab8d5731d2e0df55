"""Step 4: register the reference and the candidate as model versions with provenance."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.data.splits import load_manifest
from sslmem.errors import (
    ManifestMismatchError,
    ScoringError,
)
from sslmem.evaluation.evaluate import EvaluationResult
from sslmem.models.checkpoint import (
    file_sha256,
    read_checkpoint_metadata,
)
from sslmem.tracking import tags as T
from sslmem.tracking.registry import ModelVersionRef
from sslmem.workflow._common import (
    configure_tracking,
    process_settings,
)
from sslmem.workflow.scope import opt_in_model
from sslmem.workflow.versions import VersionInfo

logger = logging.getLogger(__name__)


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
class Registration:
    """The versions one pipeline run registered.

    Attributes:
        candidate: The candidate version (status ``training`` until scored).
        reference: The reference version the candidate is scored against.
        run_id: The MLflow run the candidate was logged in (its version's source run, step
            ``register-candidate``; the reference has its own, ``register-reference``).

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


def _accuracy_tags(artifact: EncoderArtifact) -> dict[str, Any]:
    evaluation = artifact.evaluation or {}
    tags: dict[str, Any] = {}
    if "knn_accuracy" in evaluation:
        tags[T.KNN_ACCURACY] = float(evaluation["knn_accuracy"])
    if "linear_probe_accuracy" in evaluation:
        tags[T.LINEAR_PROBE_ACCURACY] = float(evaluation["linear_probe_accuracy"])
    return tags


#: Names of the logged models in the experiment's model table, by role.
LOGGED_MODEL_NAMES = {"candidate": "candidate-encoder", "reference": "reference-encoder"}


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
    accuracies and ``sslmem.status=training``; scoring sets ``scored``. Both registered models
    are tagged ``sslmem.managed=true``: the scoring service acts on opted-in models only.

    Raises:
        ScoringError: No candidate or no reference.
        ManifestMismatchError: A checkpoint was trained on another split.
        TrackingError: MLflow is unreachable or refused.

    """
    from sslmem import __version__
    from sslmem.tracking import (
        dump_provenance,
        log_config,
        log_model_metrics,
        log_split_input,
        log_split_manifest,
        nest_run,
        parent_run_id,
        pipeline_run,
        provenance_tags,
        register_encoder,
        version_metrics,
    )

    if not candidates or not references:
        raise ScoringError(
            f"need at least one candidate and one reference encoder, got {len(candidates)} and "
            f"{len(references)}",
            "train at least one seed per role",
        )
    settings = process_settings(settings)
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
    configure_tracking(settings)
    parent = parent_run_id(pipeline_run_id, experiment)
    log_split_input(manifest, manifest_uri, run_id=parent)
    for artifact in (*candidates, *references):
        if artifact.train_run_id:
            nest_run(artifact.train_run_id, parent)
    common_provenance: dict[str, Any] = {
        T.CANDIDATE_SEEDS: [a.seed for a in candidates],
        T.REFERENCE_SEEDS: [a.seed for a in references],
        T.CANDIDATE_CHECKPOINTS: checkpoint_hashes["candidate"],
        T.REFERENCE_CHECKPOINTS: checkpoint_hashes["reference"],
        "code_version": __version__,
        T.PIPELINE_RUN_FIELD: pipeline_run_id,
        T.PARENT_RUN: parent,
    }
    common_tags = {
        T.PIPELINE_RUN: pipeline_run_id,
        T.SPLIT_MANIFEST_URI: manifest_uri,
        T.SPLIT_MANIFEST_SHA256: manifest.manifest_sha256,
    }
    primary, reference = candidates[0], references[0]
    # Opt both models in to the scoring service before their versions exist (its webhooks
    # then already find them in scope; other teams' models are never touched).
    for name in dict.fromkeys((reference_model_name, model_name)):
        opt_in_model(name)
    refs: dict[str, ModelVersionRef] = {}
    # Per-seed accuracies are metrics of each seed's training run (nested under the parent);
    # the registration runs hold the registered encoder's metrics only, so that *Compare* on
    # versions lists the same short set for every version.
    for role, artifact in (("reference", reference), ("candidate", primary)):
        with pipeline_run(pipeline_run_id, step=f"register-{role}", experiment=experiment) as rid:
            log_config(config, run_id=rid)
            log_split_input(manifest, manifest_uri, run_id=rid)
            log_split_manifest(manifest, run_id=rid)
            provenance: dict[str, Any] = {
                **common_provenance,
                T.REGISTER_RUN: rid,
                **({T.TRAIN_RUN: artifact.train_run_id} if artifact.train_run_id else {}),
            }
            if role == "reference":
                tags: dict[str, Any] = {
                    **common_tags,
                    T.ROLE: "reference",
                    T.STATUS: "training",
                    T.PROVENANCE: dump_provenance(
                        {
                            "role": "reference",
                            **provenance,
                            T.AUGMENTATION: config.augmentation.model_dump(mode="json"),
                            T.LAYER: config.scoring.layer,
                            T.SEED_FIELD: artifact.seed,
                        }
                    ),
                }
            else:
                tags = {
                    **common_tags,
                    **provenance_tags(
                        reference_version=refs["reference"].version,
                        split_manifest_uri=manifest_uri,
                        split_manifest_sha256=manifest.manifest_sha256,
                        augmentation=config.augmentation,
                        layer=config.scoring.layer,
                        seed=artifact.seed,
                        reference_model=reference_model_name,
                        status="training",
                        extra=provenance,
                    ),
                }
            ref = register_encoder(
                artifact.checkpoint,
                model_name=model_name if role == "candidate" else reference_model_name,
                run_id=rid,
                tags={**tags, **_accuracy_tags(artifact)},
                augmentation=config.augmentation,
                logged_model_name=LOGGED_MODEL_NAMES[role],
                logged_model_params={
                    "role": role,
                    "seed": str(artifact.seed),
                    "arch": config.model.arch,
                    "method": config.training.method,
                    "split_manifest_sha256": manifest.manifest_sha256,
                },
            )
            if ref.model_id is not None:
                log_model_metrics(
                    ref.model_id,
                    version_metrics(evaluation=artifact.evaluation),
                    run_id=rid,
                    manifest=manifest,
                    manifest_uri=manifest_uri,
                )
            refs[role] = ref
    candidate_ref, reference_ref = refs["candidate"], refs["reference"]
    run_id = candidate_ref.run_id or ""
    logger.info("registered %s (reference %s)", candidate_ref.uri, reference_ref.uri)
    return Registration(
        candidate=VersionInfo(model_name, candidate_ref.version),
        reference=VersionInfo(reference_model_name, reference_ref.version),
        run_id=run_id,
    )
