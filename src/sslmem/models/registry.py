"""Registry of encoder backbones by name, and the encoder builder.

Backbone builders are registered torchvision style::

    @register_backbone("small_cnn", stages=lambda m: [f"blocks.{i}" for i in range(len(m.blocks))])
    def small_cnn(*, in_channels: int, image_size: int, widths: tuple[int, ...] = (32, 64, 128)
                  ) -> tuple[nn.Module, int]: ...

A builder is keyword-only and typed: it takes ``in_channels`` and ``image_size`` plus its own
arguments (each with a default and a JSON-compatible type) and returns the backbone, mapping
float images ``[B, C, H, W]`` to features ``[B, D]``, together with ``D``.

:func:`build_encoder` adds the projection head and records every argument (defaults resolved) in
``Encoder.arch_config``, so :func:`build_encoder_from_config` rebuilds the same architecture from
that dict alone -- which is how checkpoints are loaded.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import TypeAdapter, ValidationError
from torch import nn

from sslmem.errors import ConfigError
from sslmem.models.encoder import Encoder, ProjectionHead
from sslmem.registry import Registry

BackboneBuilder = Callable[..., tuple[nn.Module, int]]
StagesFn = Callable[[nn.Module], list[str]]
BuilderT = TypeVar("BuilderT", bound=BackboneBuilder)

DEFAULT_HEAD_HIDDEN_DIM = 256
DEFAULT_HEAD_OUTPUT_DIM = 64
_RESERVED = ("in_channels", "image_size")


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.

    Attributes:
        name: Registry name.
        builder: ``(*, in_channels, image_size, **kwargs) -> (backbone, feature_dim)``.
        stages: Maps the built backbone to the dotted names of its main stages (forward order).
        params: The builder's architecture-specific parameters (name -> signature parameter).
        hints: Resolved type annotations of those parameters.

    """

    name: str
    builder: BackboneBuilder
    stages: StagesFn | None
    params: Mapping[str, inspect.Parameter]
    hints: Mapping[str, Any]


class ModelConfigLike(Protocol):
    """Anything shaped like :class:`sslmem.config.ModelConfig`."""

    @property
    def arch(self) -> str: ...  # noqa: D102

    @property
    def arch_kwargs(self) -> dict[str, Any]: ...  # noqa: D102

    @property
    def head_hidden_dim(self) -> int: ...  # noqa: D102

    @property
    def head_output_dim(self) -> int: ...  # noqa: D102


_REGISTRY: Registry[BackboneSpec] = Registry("architecture")


def register_backbone(
    name: str, *, stages: StagesFn | None = None
) -> Callable[[BuilderT], BuilderT]:
    """Register a backbone builder under ``name`` (decorator).

    Args:
        name: Registry name, e.g. ``"resnet18_cifar"``.
        stages: Optional function mapping the built backbone to its main stages' dotted names
            (relative to the backbone), used by :meth:`Encoder.stage_names`.

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        ConfigError: ``name`` is taken, or the builder is not keyword-only with
            ``in_channels``/``image_size`` and defaults for every other argument.

    """

    def decorator(builder: BuilderT) -> BuilderT:
        signature = inspect.signature(builder)
        hints = typing.get_type_hints(builder)
        params: dict[str, inspect.Parameter] = {}
        for pname, param in signature.parameters.items():
            if param.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise ConfigError(
                    f"backbone builder {name!r}: argument {pname!r} must be keyword-only",
                    "declare builders as def f(*, in_channels: int, image_size: int, ...)",
                )
            if pname in _RESERVED:
                continue
            if param.default is inspect.Parameter.empty:
                raise ConfigError(
                    f"backbone builder {name!r}: argument {pname!r} needs a default",
                    "give every architecture argument a default value",
                )
            params[pname] = param
        missing = [r for r in _RESERVED if r not in signature.parameters]
        if missing:
            raise ConfigError(
                f"backbone builder {name!r} lacks keyword-only argument(s) {missing}",
                "declare builders as def f(*, in_channels: int, image_size: int, ...)",
            )
        _REGISTRY.add(
            name,
            BackboneSpec(
                name=name,
                builder=builder,
                stages=stages,
                params=params,
                hints={p: hints.get(p, Any) for p in params},
            ),
        )
        return builder

    return decorator


def available_architectures() -> list[str]:
    """Names of all registered backbones, sorted."""
    return _REGISTRY.names()


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look up the registered :class:`BackboneSpec` for ``name``.

    Raises:
        ConfigError: Unknown name (the message lists the valid names).

    """
    return _REGISTRY.get(name)


def _to_json(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} = {value!r} is not JSON-serialisable",
            "architecture arguments must be plain JSON values so checkpoints can rebuild them",
        ) from exc


def resolve_arch_kwargs(name: str, arch_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``arch_kwargs`` against the builder's signature and fill in defaults.

    Values are validated and coerced to the annotated types (e.g. a JSON list to a tuple).

    Args:
        name: Registered architecture name.
        arch_kwargs: Architecture-specific arguments (without ``in_channels``/``image_size``).

    Returns:
        Every architecture argument, defaults included, as builder-ready Python values.

    Raises:
        ConfigError: Unknown architecture, unknown or reserved argument, or a value of the wrong
            type (the message names the argument).

    """
    spec = get_backbone_spec(name)
    given = dict(arch_kwargs or {})
    for key in given:
        if key in _RESERVED:
            raise ConfigError(
                f"arch_kwargs for {name!r} must not contain {key!r}",
                f"pass {key} as its own argument to build_encoder",
            )
        if key not in spec.params:
            accepted = ", ".join(spec.params) or "(none)"
            raise ConfigError(
                f"unknown argument {key!r} for architecture {name!r}",
                f"accepted arguments: {accepted}",
            )
    resolved: dict[str, Any] = {}
    for pname, param in spec.params.items():
        if pname not in given:
            resolved[pname] = param.default
            continue
        try:
            resolved[pname] = TypeAdapter(spec.hints[pname]).validate_python(given[pname])
        except ValidationError as exc:
            reason = "; ".join(err["msg"] for err in exc.errors())
            raise ConfigError(
                f"invalid value {given[pname]!r} for argument {pname!r} of architecture "
                f"{name!r}: {reason}",
                f"pass a value of type {spec.hints[pname]}",
            ) from exc
    return resolved


def _check_positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def build_backbone(
    name: str, *, in_channels: int, image_size: int, arch_kwargs: Mapping[str, Any] | None = None
) -> tuple[nn.Module, int]:
    """Build a registered backbone.

    Args:
        name: Registered architecture name.
        in_channels: Input channels ``C``.
        image_size: Input side ``H = W``.
        arch_kwargs: Architecture-specific arguments.

    Returns:
        The backbone (``[B, C, H, W] -> [B, D]``) and ``D``.

    Raises:
        ConfigError: Unknown architecture or invalid arguments.

    """
    spec = get_backbone_spec(name)
    kwargs = resolve_arch_kwargs(name, arch_kwargs)
    return spec.builder(
        in_channels=_check_positive(in_channels, "in_channels"),
        image_size=_check_positive(image_size, "image_size"),
        **kwargs,
    )


def build_encoder(
    model: ModelConfigLike | str,
    *,
    in_channels: int,
    image_size: int,
    arch_kwargs: Mapping[str, Any] | None = None,
    head_hidden_dim: int | None = None,
    head_output_dim: int | None = None,
) -> Encoder:
    """Build an encoder: a registered backbone plus a SimCLR-style projection head.

    Args:
        model: A :class:`~sslmem.config.ModelConfig` (or anything with ``arch``,
            ``arch_kwargs``, ``head_hidden_dim``, ``head_output_dim``) or an architecture name.
        in_channels: Input channels ``C``.
        image_size: Input side ``H = W``.
        arch_kwargs: Architecture arguments; when given, replaces ``model.arch_kwargs``.
        head_hidden_dim: Head hidden width; when given, overrides ``model.head_hidden_dim``
            (default 256 for a name).
        head_output_dim: Projection dimension ``P``; when given, overrides
            ``model.head_output_dim`` (default 64 for a name).

    Returns:
        An :class:`Encoder` in training mode mapping ``[B, C, H, W]`` to ``[B, P]`` (features
        ``[B, D]``), whose ``arch_config`` rebuilds it via :func:`build_encoder_from_config`.

    Raises:
        ConfigError: Unknown architecture (listing valid names) or an invalid argument (naming it).

    """
    if isinstance(model, str):
        arch = model
        base_kwargs: Mapping[str, Any] = {}
        hidden, output = DEFAULT_HEAD_HIDDEN_DIM, DEFAULT_HEAD_OUTPUT_DIM
    else:
        arch = model.arch
        base_kwargs = model.arch_kwargs
        hidden, output = model.head_hidden_dim, model.head_output_dim
    kwargs = resolve_arch_kwargs(arch, base_kwargs if arch_kwargs is None else arch_kwargs)
    hidden = _check_positive(
        hidden if head_hidden_dim is None else head_hidden_dim, "head_hidden_dim"
    )
    output = _check_positive(
        output if head_output_dim is None else head_output_dim, "head_output_dim"
    )
    arch_config: dict[str, Any] = {
        "arch": arch,
        "in_channels": _check_positive(in_channels, "in_channels"),
        "image_size": _check_positive(image_size, "image_size"),
        "arch_kwargs": {k: _to_json(v, f"arch_kwargs.{k}") for k, v in kwargs.items()},
        "head_hidden_dim": hidden,
        "head_output_dim": output,
    }
    spec = get_backbone_spec(arch)
    backbone, feature_dim = spec.builder(in_channels=in_channels, image_size=image_size, **kwargs)
    return Encoder(
        backbone=backbone,
        head=ProjectionHead(feature_dim, hidden, output),
        arch=arch,
        arch_config=arch_config,
        feature_dim=feature_dim,
        head_dim=output,
        stages=spec.stages(backbone) if spec.stages is not None else (),
    )


def build_encoder_from_config(arch_config: Mapping[str, Any]) -> Encoder:
    """Rebuild a freshly initialised encoder from ``Encoder.arch_config``.

    Args:
        arch_config: ``{"arch", "in_channels", "image_size", "arch_kwargs", "head_hidden_dim",
            "head_output_dim"}`` as recorded by :func:`build_encoder`.

    Returns:
        The encoder (random weights, training mode).

    Raises:
        ConfigError: A key is missing or unknown, the architecture is not registered, or an
            argument is invalid.

    """
    required = (
        "arch",
        "in_channels",
        "image_size",
        "arch_kwargs",
        "head_hidden_dim",
        "head_output_dim",
    )
    missing = [k for k in required if k not in arch_config]
    unknown = [k for k in arch_config if k not in required]
    if missing or unknown:
        raise ConfigError(
            f"invalid arch_config: missing keys {missing}, unknown keys {unknown}",
            f"an arch_config has exactly the keys {list(required)}",
        )
    arch_kwargs = arch_config["arch_kwargs"]
    if not isinstance(arch_kwargs, Mapping):
        raise ConfigError(f"arch_config.arch_kwargs must be a mapping, got {arch_kwargs!r}")
    arch = arch_config["arch"]
    if not isinstance(arch, str):
        raise ConfigError(f"arch_config.arch must be a string, got {arch!r}")
    return build_encoder(
        arch,
        in_channels=arch_config["in_channels"],
        image_size=arch_config["image_size"],
        arch_kwargs=arch_kwargs,
        head_hidden_dim=arch_config["head_hidden_dim"],
        head_output_dim=arch_config["head_output_dim"],
    )
