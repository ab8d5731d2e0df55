"""Representations of an encoder at named layers, captured with forward hooks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sslmem.errors import ScoringError


def _root(layer: str) -> str:
    return layer.split(".", 1)[0]


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> list[nn.Module]:
    """Look up the submodules named by ``layers`` (dotted names, e.g. ``"backbone.layer3"``).

    Raises:
        ScoringError: A name is not a submodule; the message lists valid names.
    """
    modules = []
    for layer in layers:
        try:
            modules.append(model.get_submodule(layer))
        except AttributeError:
            names = getattr(model, "layer_names", None)
            valid = names() if callable(names) else [n for n, _ in model.named_modules() if n]
            shown = ", ".join(valid[:40]) + (" ..." if len(valid) > 40 else "")
            raise ScoringError(
                f"layer {layer!r} does not exist in this encoder",
                f"choose one of: {shown}",
            ) from None
    return modules


def capture_layers(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Run ``model`` once and return each named layer's raw output.

    The head is only run when a requested layer lives in it, so backbone-only scoring pays no
    head cost.

    Args:
        model: An :class:`~sslmem.models.Encoder` (needs ``backbone``; ``head`` when asked).
        images: Float ``[B, C, H, W]``, already normalised.
        layers: Dotted layer names.

    Returns:
        ``{layer: output}``, e.g. ``[B, C', H', W']`` for a conv block, ``[B, T, D]`` for a
        transformer block, ``[B, D]`` for a pooled output.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for layer, module in zip(layers, resolve_layers(model, layers), strict=True):

        def hook(_m: nn.Module, _i: object, out: object, name: str = layer) -> None:
            tensor = out[0] if isinstance(out, tuple) else out
            if not isinstance(tensor, torch.Tensor):
                raise ScoringError(f"layer {name!r} does not output a tensor")
            # Copy now: a later in-place op (e.g. ReLU after BN) would overwrite the output.
            captured[name] = tensor.clone()

        handles.append(module.register_forward_hook(hook))
    try:
        if any(_root(layer) == "head" for layer in layers):
            model(images)
        else:
            backbone = model.get_submodule("backbone")
            backbone(images)
    finally:
        for handle in handles:
            handle.remove()
    return {name: captured[name] for name in layers}


def extract_layers(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Each named layer's output flattened to one float32 vector per sample: ``{l: [B, D_l]}``.

    The whole output is the representation (as in the authors' code for token sequences and
    feature maps).
    """
    return {
        name: out.flatten(1).float() for name, out in capture_layers(model, images, layers).items()
    }
