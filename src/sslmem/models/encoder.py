"""The encoder every part of sslmem trains, scores and evaluates.

An :class:`Encoder` is a backbone (images -> features) plus the projection head the SSL loss
acts on. The head is always kept: memorisation shows first in the space the SSL loss acts on
(Wang et al., ICLR 2024; see docs/), so scoring at ``"head"`` must stay possible.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class ProjectionHead(nn.Sequential):
    """Two-layer MLP projection head, SimCLR style: ``Linear-BN-ReLU-Linear``.

    "We use a MLP with one hidden layer to obtain z = g(h) = W2 σ(W1 h)" (Chen et al., SimCLR,
    ICML 2020, arXiv 2002.05709). The submodule names (``fc1``, ``bn1``, ``relu``, ``fc2``) are
    part of the checkpoint format; do not rename them.

    Args:
        input_dim: Feature dimension ``D``.
        hidden_dim: Hidden dimension.
        output_dim: Projection dimension ``P``.

    Shapes:
        ``[B, D] -> [B, P]``. In training mode ``B`` must be at least 2 (batch norm).

    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__(
            OrderedDict(
                fc1=nn.Linear(input_dim, hidden_dim, bias=False),
                bn1=nn.BatchNorm1d(hidden_dim),
                relu=nn.ReLU(),
                fc2=nn.Linear(hidden_dim, output_dim),
            )
        )


class Encoder(nn.Module):
    """Backbone plus projection head.

    Named layers (for representations and LayerMem) are the dotted submodule names under
    ``backbone`` and ``head``; ``"backbone"`` is the backbone's output (``[B, feature_dim]``)
    and ``"head"`` the projection output (``[B, head_dim]``). Resolve a name with
    ``encoder.get_submodule(name)`` and read its output with a forward hook.

    Build encoders with :func:`sslmem.models.build_encoder`; it fills ``arch_config`` with
    everything needed to rebuild the same architecture
    (:func:`sslmem.models.registry.build_encoder_from_config`).

    Args:
        backbone: Maps images ``[B, C, H, W]`` (float, normalised) to features ``[B, D]``.
        head: Maps features ``[B, D]`` to projections ``[B, P]``.
        arch: Registered architecture name.
        arch_config: Everything the encoder was built from (JSON-serialisable):
            ``{"arch", "in_channels", "image_size", "arch_kwargs", "head_hidden_dim",
            "head_output_dim"}`` when built by :func:`~sslmem.models.build_encoder`.
        feature_dim: ``D``.
        head_dim: ``P``.
        stages: Dotted names (relative to ``backbone``) of the backbone's main stages in
            forward order, e.g. ``["layer1", ..., "layer4"]`` for a ResNet.

    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        arch: str,
        arch_config: dict[str, Any],
        feature_dim: int,
        head_dim: int,
        stages: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.arch = arch
        self.arch_config = dict(arch_config)
        self.feature_dim = feature_dim
        self.head_dim = head_dim
        self._stages = [f"backbone.{name}" for name in stages]
        self._layer_cache: tuple[tuple[str, ...], list[str]] | None = None

    @property
    def in_channels(self) -> int:
        """Number of input channels ``C`` the encoder expects."""
        return int(self.arch_config["in_channels"])

    @property
    def image_size(self) -> int:
        """Input side ``H = W`` the encoder was built for."""
        return int(self.arch_config["image_size"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Project images: ``[B, C, H, W] -> [B, P]``."""
        return self.head(self.backbone(images))  # type: ignore[no-any-return]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features: ``[B, C, H, W] -> [B, D]``."""
        return self.backbone(images)  # type: ignore[no-any-return]

    def stage_names(self) -> list[str]:
        """Coarse layers for LayerMem, in forward order: backbone stages, ``backbone``, ``head``.

        E.g. ``["backbone.layer1", ..., "backbone.layer4", "backbone", "head"]`` for a ResNet.
        Every name is also in :meth:`layer_names`.
        """
        return [*self._stages, "backbone", "head"]

    def layer_names(self) -> list[str]:
        """All named layers a representation can be taken from, in the order outputs appear.

        A layer is listed when a forward hook on it fires exactly once per forward and receives
        a single tensor; modules called several times per forward (e.g. a ResNet block's shared
        ``relu``), never called, or returning tuples (e.g. attention) are left out. Containers
        come after their children (their output is complete last). Found by one forward pass of
        a ``[2, C, H, W]`` zero batch in eval mode under ``no_grad`` (cached per module tree); an
        encoder whose ``arch_config`` lacks ``in_channels``/``image_size`` lists every submodule.

        Hooks must consume or copy outputs at once: some are modified in place later (e.g. a
        ResNet's ``bn1`` output by its in-place ``relu``).
        """
        key = tuple(name for name, _ in self.named_modules())
        if not {"in_channels", "image_size"} <= self.arch_config.keys():
            # Not built by build_encoder: no input shape to probe with; list every submodule.
            names = ["backbone"]
            names += [f"backbone.{n}" for n, _ in self.backbone.named_modules() if n]
            names.append("head")
            names += [f"head.{n}" for n, _ in self.head.named_modules() if n]
            return names
        if self._layer_cache is None or self._layer_cache[0] != key:
            self._layer_cache = (key, self._probe_layers())
        return list(self._layer_cache[1])

    def _probe_layers(self) -> list[str]:
        calls: dict[str, int] = {}
        tensor_out: dict[str, bool] = {}
        order: list[str] = []
        handles: list[RemovableHandle] = []

        def make_hook(name: str) -> Any:
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                calls[name] = calls.get(name, 0) + 1
                tensor_out[name] = tensor_out.get(name, True) and isinstance(output, torch.Tensor)
                if calls[name] == 1:
                    order.append(name)

            return hook

        roots = {"backbone": self.backbone, "head": self.head}
        for root, module in roots.items():
            for name, sub in module.named_modules():
                full = f"{root}.{name}" if name else root
                handles.append(sub.register_forward_hook(make_hook(full)))
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        modes = [(module, module.training) for module in self.modules()]
        try:
            self.eval()
            with torch.no_grad():
                self(
                    torch.zeros(
                        2,
                        self.in_channels,
                        self.image_size,
                        self.image_size,
                        device=device,
                        dtype=dtype,
                    )
                )
        finally:
            for handle in handles:
                handle.remove()
            for module, mode in modes:
                module.training = mode
        return [name for name in order if calls[name] == 1 and tensor_out[name]]
