"""Bring your own encoder: register an externally trained checkpoint for the scoring service.

A candidate is registered with the provenance the service needs to score it (the resolved
reference version, the split manifest's URI and hash, the augmentation, layer and seed) and
``sslmem.status=pending``; the service (webhook or reconcile) then scores it. A reference is
registered with ``sslmem.role=reference`` and its split, and is never scored itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sslmem.augment import AugmentationSpec
from sslmem.config import RuntimeSettings
from sslmem.data.splits import load_manifest
from sslmem.errors import ManifestMismatchError
from sslmem.models.checkpoint import read_checkpoint_metadata
from sslmem.tracking import tags as T
from sslmem.workflow._common import configure_tracking, process_settings
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
    settings: RuntimeSettings | None = None,
) -> VersionInfo:
    """Register ``checkpoint`` as a new version of ``model_name``, ready for the service.

    Args:
        checkpoint: An sslmem checkpoint (safetensors, :func:`sslmem.models.save_checkpoint`).
        model_name: Registered model name (created if needed).
        split_uri: The split manifest the encoder was trained on (path or ``s3://`` URI; stored
            as given, so give a URI the service can read).
        reference_uri: ``models:/NAME/N`` (or ``@alias``, resolved to its number now) of the
            reference encoder; ``None`` registers ``checkpoint`` as a reference.
        layer: The representation layer to score.
        augmentation: The training augmentation (default: the checkpoint's metadata, else the
            default spec).
        seed: The training seed (default: the checkpoint's metadata, else 0).
        settings: Runtime settings (MLflow, object store).

    Returns:
        The new version, with the tags set.

    Raises:
        CheckpointError: Not an sslmem checkpoint.
        ManifestMismatchError: The checkpoint records another split than ``split_uri``.
        StoreError, DataError: The manifest cannot be read.
        TrackingError: The reference does not exist, or MLflow is unreachable.

    """
    from sslmem.tracking import get_model_version, provenance_tags, register_encoder

    settings = process_settings(settings)
    header = read_checkpoint_metadata(checkpoint)
    manifest = load_manifest(split_uri, settings)
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
    ref = register_encoder(checkpoint, model_name=model_name, tags=tags, augmentation=augmentation)
    logger.info("registered %s (%s)", ref.uri, "reference" if reference_uri is None else "pending")
    return VersionInfo(ref.name, ref.version, T.validate_version_tags(tags))
