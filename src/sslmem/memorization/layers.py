"""Choosing the layers that LayerMem and UnitMem are measured at.

A layer selection is ``"stages"`` (the encoder's coarse stages, :meth:`Encoder.stage_names`) or
explicit dotted names, each of which must fire exactly once per forward
(:meth:`Encoder.layer_names`): a module that never runs, or runs several times, has no single
output to score. Explicit names are put into forward order, since ΔLayerMem compares each layer
with the one before it (Wang et al., "Localizing Memorization in SSL Vision Encoders", NeurIPS
2024).
"""

from __future__ import annotations

from collections.abc import Sequence

from sslmem.errors import ScoringError
from sslmem.models.encoder import Encoder

#: The selection that means "the encoder's stages".
STAGES = "stages"


def parse_names(text: str, what: str, example: str) -> tuple[str, ...]:
    """Split a comma-separated list of names, refusing empty entries and repeats.

    Args:
        text: E.g. ``"backbone.blocks.0,backbone"``.
        what: What the names are, for the message (e.g. ``"--layers"``).
        example: A valid value, for the fix.

    Raises:
        ScoringError: The list is empty, has an empty entry or names something twice.
    """
    names = tuple(part.strip() for part in text.split(","))
    if not text.strip() or any(not name for name in names):
        raise ScoringError(f"{what} {text!r} has an empty name", f"pass e.g. {what} {example}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ScoringError(
            f"{what} names {', '.join(repeated)} more than once", "list each name once"
        )
    return names


def _shown(names: Sequence[str], limit: int = 60) -> str:
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def select_layers(
    encoders: Sequence[Encoder], selection: str | Sequence[str], *, include_head: bool = True
) -> tuple[str, ...]:
    """Resolve a layer selection against every encoder, in forward order.

    Args:
        encoders: The encoders that will be hooked (all must have every layer).
        selection: ``"stages"``, a comma-separated string of names, or a sequence of names.
        include_head: Whether ``"stages"`` includes ``"head"`` (not when the head was never
            trained, e.g. MAE's). Explicit names are taken as given.

    Returns:
        The layer names, ordered as their outputs appear in a forward pass.

    Raises:
        ScoringError: No encoder, an empty or repeated name, or a name that is not a layer
            firing exactly once per forward of some encoder (the message lists valid names).
    """
    if not encoders:
        raise ScoringError("no encoder to take layers from")
    if isinstance(selection, str):
        names = (
            (STAGES,) if selection.strip() == STAGES else parse_names(selection, "--layers", STAGES)
        )
    else:
        names = parse_names(",".join(selection), "--layers", STAGES)
    first = encoders[0]
    if names == (STAGES,):
        names = tuple(n for n in first.stage_names() if include_head or n != "head")
    order: list[str] = []
    for index, encoder in enumerate(encoders):
        valid = encoder.layer_names()
        unknown = [name for name in names if name not in valid]
        if unknown:
            which = "" if len(encoders) == 1 else f" (encoder {index}, {encoder.arch})"
            raise ScoringError(
                f"{', '.join(repr(n) for n in unknown)} is not a layer that fires exactly once per "
                f"forward of this encoder{which}",
                f"pass --layers {STAGES} or names from: {_shown(valid)}",
            )
        if index == 0:
            order = valid
    return tuple(sorted(names, key=order.index))
