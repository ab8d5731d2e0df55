"""Bring your own encoder: register an externally trained checkpoint for the scoring service.

A candidate is registered with the provenance the service needs to score it (the resolved
reference version, the split manifest's URI and hash, the augmentation, layer and seed) and
``sslmem.status=pending``, in a registered model tagged ``sslmem.managed=true`` (the service's
scope, :mod:`sslmem.workflow.scope`); the service (webhook or reconcile) then scores it. A
reference is registered with ``sslmem.role=reference`` and its split, and is never scored
itself.

Its downstream accuracies (``sslmem evaluate --out``) go into the version's creation tags, so
the service never judges the version before they exist: a judgement without them cannot weigh
more memorisation against an accuracy gain (:mod:`sslmem.memorization.judgement`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sslmem.augment import AugmentationSpec
from sslmem.config import RuntimeSettings
from sslmem.data.splits import SplitManifest, load_manifest
from sslmem.data.store import open_store
from sslmem.errors import ManifestMismatchError
from sslmem.evaluation.checks import EvaluationError
from sslmem.evaluation.evaluate import EvaluationResult, read_evaluation_file
from sslmem.models.checkpoint import file_sha256, read_checkpoint_metadata
from sslmem.tracking import tags as T
from sslmem.workflow._common import configure_tracking, process_settings
from sslmem.workflow.scope import opt_in_model
from sslmem.workflow.split import SPLIT_STORE_PREFIX
from sslmem.workflow.versions import VersionInfo

__all__ = ["register_external_encoder"]

logger = logging.getLogger(__name__)


def register_external_encoder(
    checkpoint: Path | str,
    *,
    model_name: str,
    split_uri: str,
    reference_uri: str | None = None,
    layer: str = "backbone",
    augmentation: AugmentationSpec | None = None,
    seed: int | None = None,
    evaluation: EvaluationResult | Path | str | None = None,
    settings: RuntimeSettings | None = None,
) -> VersionInfo:
    """Register ``checkpoint`` as a new version of ``model_name``, ready for the service.

    Args:
        checkpoint: An sslmem checkpoint (safetensors, :func:`sslmem.models.save_checkpoint`).
        model_name: Registered model name (created if needed).
        split_uri: The split manifest the encoder was trained on: a local path (copied into
            the object store, ``SSLMEM_STORE_URI``, whose URI is tagged) or a store URI (tagged
            as given; it must lie where the service may read).
        reference_uri: ``models:/NAME/N`` (or ``@alias``, resolved to its number now) of the
            reference encoder; ``None`` registers ``checkpoint`` as a reference.
        layer: The representation layer to score.
        augmentation: The training augmentation (default: the checkpoint's metadata, else the
            default spec).
        seed: The training seed (default: the checkpoint's metadata, else 0).
        evaluation: The encoder's downstream evaluation, or the JSON file ``sslmem evaluate
            --out`` wrote for it; its kNN and linear-probe accuracies become the tags
            ``sslmem.knn_accuracy`` and ``sslmem.linear_probe_accuracy`` at creation.
        settings: Runtime settings (MLflow, object store).

    Returns:
        The new version, with the tags set; its registered model is opted in to the service
        (``sslmem.managed=true``).

    Raises:
        CheckpointError: Not an sslmem checkpoint.
        EvaluationError: The evaluation file is missing or invalid, or evaluated another
            checkpoint.
        InvalidInputError: An accuracy is not a finite number in [0, 1].
        ManifestMismatchError: The checkpoint records another split than ``split_uri``.
        StoreError, DataError: The manifest cannot be read.
        TrackingError: The reference does not exist, or MLflow is unreachable.

    """
    from sslmem.tracking import get_model_version, provenance_tags, register_encoder

    settings = process_settings(settings)
    header = read_checkpoint_metadata(checkpoint)
    manifest = load_manifest(split_uri, settings)
    split_uri = _stored_split_uri(split_uri, manifest, settings)
    recorded = header.metadata.get("split_manifest_sha256")
    if recorded is not None and recorded != manifest.manifest_sha256:
        raise ManifestMismatchError(
            f"{checkpoint} was trained on split {recorded}, not {split_uri} "
            f"({manifest.manifest_sha256})",
            "pass the split manifest the encoder was trained on",
        )
    if augmentation is None:
        raw = header.metadata.get("augmentation")
        augmentation = AugmentationSpec.model_validate(raw) if raw else AugmentationSpec()
    if seed is None:
        seed = int(header.metadata.get("seed", 0))
    accuracy_tags = _accuracy_tags(evaluation, checkpoint)
    configure_tracking(settings)
    if reference_uri is None:
        tags: dict[str, object] = {
            T.ROLE: "reference",
            T.STATUS: "scored",  # a reference is not scored itself: nothing left to do
            T.SPLIT_MANIFEST_URI: split_uri,
            T.SPLIT_MANIFEST_SHA256: manifest.manifest_sha256,
            T.PROVENANCE: T.dump_provenance(
                {
                    "role": "reference",
                    T.AUGMENTATION: augmentation.model_dump(mode="json"),
                    T.SEED_FIELD: seed,
                }
            ),
        }
    else:
        reference = get_model_version(reference_uri)
        tags = {
            **provenance_tags(
                reference_version=reference.version,
                split_manifest_uri=split_uri,
                split_manifest_sha256=manifest.manifest_sha256,
                augmentation=augmentation,
                layer=layer,
                seed=seed,
                reference_model=reference.name,
                status="pending",
            ),
            T.ROLE: "candidate",
        }
    tags.update(accuracy_tags)  # creation tags: never judged without its accuracies
    # Before the version exists: the service acts only on opted-in models, and the webhook of
    # the new version must already find the model in its scope.
    opt_in_model(model_name)
    ref = register_encoder(checkpoint, model_name=model_name, tags=tags, augmentation=augmentation)
    logger.info("registered %s (%s)", ref.uri, "reference" if reference_uri is None else "pending")
    return VersionInfo(ref.name, ref.version, T.validate_version_tags(tags))


def _stored_split_uri(split_uri: str, manifest: SplitManifest, settings: RuntimeSettings) -> str:
    """Where the service will read the split: a local file is copied into the object store.

    The service reads only from its configured stores (``SSLMEM_STORE_URI``, see
    :func:`~sslmem.workflow.scoring_inputs.read_policy`), so a manifest given as a local path is
    stored content-addressed at ``<store>/splits/<sha256>.json`` (as ``sslmem split`` in the
    pipeline does) and that URI is tagged. A URI (``s3://``, ``file://``) is kept as given.
    """
    if "://" in str(split_uri):
        return split_uri
    store = open_store(settings.store_uri, settings)
    key = f"{SPLIT_STORE_PREFIX}/{manifest.manifest_sha256}.json"
    if not store.exists(key):
        store.put_bytes(key, manifest.to_json())
    return store.uri(key)


def _accuracy_tags(
    evaluation: EvaluationResult | Path | str | None, checkpoint: Path | str
) -> dict[str, object]:
    """The accuracy tags of ``evaluation``; a file must be the evaluation of ``checkpoint``."""
    if evaluation is None:
        return {}
    if not isinstance(evaluation, EvaluationResult):
        read = read_evaluation_file(evaluation)
        if read.encoder_sha256 is not None and read.encoder_sha256 != file_sha256(checkpoint):
            raise EvaluationError(
                f"evaluation file {read.path} is of another checkpoint "
                f"(encoder_sha256 {read.encoder_sha256}) than {checkpoint}",
                f"evaluate this encoder: `sslmem evaluate --encoder {checkpoint} --out FILE`",
            )
        evaluation = read.result
    return {
        T.KNN_ACCURACY: evaluation.knn_accuracy,
        T.LINEAR_PROBE_ACCURACY: evaluation.linear_probe_accuracy,
    }
