"""The SSL method contract and the registry of methods by name.

An SSL method owns everything a training objective adds around an :class:`Encoder`: prediction
heads, momentum teachers, decoders, its loss. It is an ``nn.Module`` whose ``forward`` maps a
batch of augmented views to a scalar loss, so the training loop can wrap it in
``DistributedDataParallel`` and ``torch.compile`` without knowing which method it runs.

Methods register themselves with :func:`register_method` (torchvision-style, no if/elif chain)
and declare which encoder architectures they support and which options they take (a pydantic
model validated from ``TrainingConfig.method_kwargs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from sslmem.config import TrainingConfig, format_validation_error
from sslmem.device import to_device_layout
from sslmem.errors import ConfigError
from sslmem.models.encoder import Encoder
from sslmem.registry import Registry


class MethodOptions(BaseModel):
    """Base of every method's options (``TrainingConfig.method_kwargs``); unknown keys fail."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class StepContext:
    """Where the loop is when it calls a method.

    Attributes:
        epoch: 0-based epoch.
        global_step: 0-based optimizer step over the whole run.
        total_steps: Optimizer steps in the whole run.
        steps_per_epoch: Optimizer steps per epoch.
        generator: The method's source of randomness for this micro-batch (e.g. MAE masks),
            on the compute device, seeded from ``(seed, step, rank, micro-batch)``.

    """

    epoch: int
    global_step: int
    total_steps: int
    steps_per_epoch: int
    generator: torch.Generator


class SSLMethod(nn.Module):
    """Base class of SSL methods.

    Subclasses set :attr:`num_views`, implement :meth:`forward`, and may override the hooks.
    The encoder is registered as the submodule ``encoder``; after training, only it is saved
    (weights-only) as the model to score and evaluate.

    Args:
        encoder: The encoder to train (backbone and projection head).
        training: The training recipe.
        options: The method's validated options.

    """

    #: Augmented views the loop draws per image and passes to :meth:`forward`.
    num_views: ClassVar[int] = 2
    #: Whether the loss trains the encoder's projection head (False: e.g. MAE, which trains
    #: only the backbone; the head then keeps its random initial weights).
    trains_head: ClassVar[bool] = True

    def __init__(self, encoder: Encoder, training: TrainingConfig, options: MethodOptions) -> None:
        super().__init__()
        self.encoder = encoder
        self.training_config = training
        self.options = options

    def forward(self, views: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Loss of one micro-batch.

        Args:
            views: Float views ``[B, V, C, S, S]`` (``V = num_views``), normalised.
            ctx: Position in the run and the micro-batch's random generator.

        Returns:
            Scalar float32 loss (mean over the batch).

        """
        raise NotImplementedError

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Hook after the backward passes of a step, before ``optimizer.step()``."""

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Hook after ``optimizer.step()`` (e.g. momentum-teacher updates)."""


MethodT = TypeVar("MethodT", bound=type[SSLMethod])


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: Registry name (``TrainingConfig.method``).
        cls: The :class:`SSLMethod` subclass.
        options: Its options model.
        archs: Architectures it supports; ``None`` means any.
        paper: Citation shown in listings.

    """

    name: str
    cls: type[SSLMethod]
    options: type[MethodOptions]
    archs: tuple[str, ...] | None
    paper: str


_METHODS: Registry[MethodSpec] = Registry("SSL method")


def register_method(
    name: str,
    *,
    options: type[MethodOptions],
    archs: tuple[str, ...] | None = None,
    paper: str = "",
) -> Callable[[MethodT], MethodT]:
    """Register an :class:`SSLMethod` subclass under ``name`` (class decorator).

    Args:
        name: Registry name, e.g. ``"simclr"``.
        options: Pydantic model of the method's options.
        archs: Supported architectures (``None``: every registered one).
        paper: Short citation.

    Raises:
        ConfigError: The name is already taken.

    """

    def decorator(cls: MethodT) -> MethodT:
        _METHODS.add(
            name, MethodSpec(name=name, cls=cls, options=options, archs=archs, paper=paper)
        )
        return cls

    return decorator


def available_methods() -> list[str]:
    """Names of the registered SSL methods, sorted."""
    return _METHODS.names()


def get_method_spec(name: str) -> MethodSpec:
    """The registered method called ``name``.

    Raises:
        ConfigError: Unknown name (the message lists the valid names).

    """
    return _METHODS.get(name)


def check_compatible(method: str, arch: str) -> None:
    """Raise unless ``method`` can train architecture ``arch``.

    Raises:
        ConfigError: Unknown method, or an architecture it does not support (the message names
            the compatible architectures).

    """
    spec = get_method_spec(method)
    if spec.archs is not None and arch not in spec.archs:
        raise ConfigError(
            f"SSL method {method!r} does not support architecture {arch!r}",
            f"use --arch {' or '.join(spec.archs)} with {method}, or another method",
        )


def validate_options(method: str, kwargs: dict[str, Any]) -> MethodOptions:
    """Validate ``TrainingConfig.method_kwargs`` against the method's options model.

    Raises:
        ConfigError: Unknown method or an invalid option (naming the field and what is allowed).

    """
    spec = get_method_spec(method)
    try:
        return spec.options.model_validate(kwargs)
    except ValidationError as exc:
        accepted = ", ".join(spec.options.model_fields) or "(none)"
        raise ConfigError(
            format_validation_error(exc, f"training.method_kwargs for {method!r}"),
            f"accepted options of {method!r}: {accepted}",
        ) from exc


def build_method(encoder: Encoder, training: TrainingConfig) -> SSLMethod:
    """Build the method named by ``training.method`` around ``encoder``.

    Args:
        encoder: A freshly built encoder.
        training: The recipe (method name and ``method_kwargs``).

    Returns:
        The method module (in training mode), owning ``encoder`` as ``.encoder``.

    Raises:
        ConfigError: Unknown method, incompatible architecture or invalid options.

    """
    spec = get_method_spec(training.method)
    check_compatible(training.method, encoder.arch)
    options = validate_options(training.method, training.method_kwargs)
    return spec.cls(encoder, training, options)


def encode_views(encoder: Encoder, views: torch.Tensor) -> list[torch.Tensor]:
    """Project every view with one forward pass of the concatenated batch.

    One pass of ``[V*B, C, S, S]`` instead of ``V`` passes keeps the GPU busy; batch-norm
    statistics then cover all views together, as in lightly's examples that concatenate views.

    Args:
        encoder: Backbone + projection head.
        views: ``[B, V, C, S, S]``.

    Returns:
        ``V`` float32 projections ``[B, P]``.

    """
    b, v = views.shape[:2]
    flat = to_device_layout(views.transpose(0, 1).reshape(v * b, *views.shape[2:]), views.device)
    return list(encoder(flat).float().split(b, dim=0))
