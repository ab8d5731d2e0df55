"""Frozen-feature extraction for downstream evaluation.

Images are preprocessed with :meth:`sslmem.augment.BatchAugmenter.clean` (resize to the spec's
output size and normalise, no random augmentation), so evaluation sees exactly the
preprocessing the encoder was trained and scored with.
"""

from __future__ import annotations

import torch
from torch import nn

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.errors import ConfigError, DataError
from sslmem.evaluation.checks import EvaluationError
from sslmem.memorization.representation import extract_layers, resolve_layers
from sslmem.models.encoder import Encoder


def _resolve_device(encoder: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(encoder.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def extract_features(
    encoder: Encoder,
    images: torch.Tensor,
    *,
    augment_spec: AugmentationSpec,
    layer: str = "backbone",
    batch_size: int = 512,
    device: torch.device | str | None = None,
    autocast_bf16: bool = False,
) -> torch.Tensor:
    """Extract frozen features of clean (un-augmented) images.

    Runs under :func:`torch.inference_mode` in eval mode (batch norm uses running statistics,
    dropout is off); every submodule's train/eval mode is restored afterwards. The encoder is
    moved to ``device`` if it is not there already.

    Args:
        encoder: The encoder.
        images: uint8 ``[N, C, H, W]`` on any device; moved to ``device`` batch by batch.
        augment_spec: Supplies the output size and normalisation (``clean`` preprocessing).
        layer: ``"backbone"`` (``encoder.features``, ``[N, D]``), ``"head"`` (projection,
            ``[N, P]``) or any dotted name from ``encoder.layer_names()`` (its output is
            flattened to ``[N, -1]``).
        batch_size: Images per forward pass; bounds memory.
        device: Compute device; ``None`` uses the encoder's.
        autocast_bf16: Run the forward pass under bf16 autocast (CUDA only; ignored on CPU).

    Returns:
        Float32 features ``[N, D]`` on ``device`` (ordinary tensors, usable with autograd).

    Raises:
        DataError: ``images`` is not a non-empty uint8 ``[N, C, H, W]`` tensor.
        ConfigError: ``batch_size < 1``.
        ScoringError: ``layer`` is not a layer of the encoder (the message lists valid names).
        EvaluationError: A feature is NaN or infinite.

    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(
            f"expected uint8 [N, C, H, W] images, got {images.dtype} {tuple(images.shape)}",
            "pass the dataset's raw uint8 images; preprocessing happens here",
        )
    if images.shape[0] == 0:
        raise DataError("no images to extract features from", "pass at least one image")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if layer != "backbone":
        resolve_layers(encoder, [layer])  # fail fast, listing the valid names
    dev = _resolve_device(encoder, device)
    encoder.to(dev)
    augmenter = BatchAugmenter(augment_spec)
    use_amp = autocast_bf16 and dev.type == "cuda"

    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    chunks: list[torch.Tensor] = []
    try:
        with (
            torch.inference_mode(),
            torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp),
        ):
            for start in range(0, images.shape[0], batch_size):
                x = augmenter.clean(images[start : start + batch_size].to(dev, non_blocking=True))
                if layer == "backbone":
                    out = encoder.features(x).flatten(1).float()
                else:
                    out = extract_layers(encoder, x, [layer])[layer]
                chunks.append(out)
    finally:
        for module, was_training in modes:
            module.training = was_training
    # Concatenating outside inference mode yields ordinary tensors callers may train on.
    features = torch.cat(chunks)
    bad = int((~torch.isfinite(features)).any(dim=1).sum())
    if bad:
        raise EvaluationError(
            f"{bad} of {features.shape[0]} feature vectors at layer {layer!r} are NaN or inf",
            "check the checkpoint (training may have diverged) or disable bf16 autocast",
        )
    return features
