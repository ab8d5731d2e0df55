"""Encoders (backbone + projection head), their registry, and weights-only checkpoints."""

from sslmem.models import backbones as backbones  # registers the built-in architectures
from sslmem.models.checkpoint import (
    CheckpointHeader,
    LoadedCheckpoint,
    file_sha256,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from sslmem.models.encoder import Encoder, ProjectionHead
from sslmem.models.registry import (
    available_architectures,
    build_backbone,
    build_encoder,
    build_encoder_from_config,
    register_backbone,
)

__all__ = [
    "CheckpointHeader",
    "Encoder",
    "LoadedCheckpoint",
    "ProjectionHead",
    "available_architectures",
    "build_backbone",
    "build_encoder",
    "build_encoder_from_config",
    "file_sha256",
    "load_checkpoint",
    "read_checkpoint_metadata",
    "register_backbone",
    "save_checkpoint",
]
