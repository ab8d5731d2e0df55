from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from sslmem.config import ModelConfig
from sslmem.errors import ConfigError
from sslmem.models import (
    Encoder,
    available_architectures,
    build_backbone,
    build_encoder,
    build_encoder_from_config,
    register_backbone,
)
from sslmem.models import registry as registry_module

REQUIRED = ["small_cnn", "resnet18_cifar", "resnet18", "resnet50", "vit_tiny"]

# (arch, image_size, arch_kwargs, feature_dim); kept tiny for a 2-core CPU.
_SLOW = pytest.mark.slow
CASES = [
    pytest.param("small_cnn", 28, {}, 128, id="small_cnn"),
    pytest.param("resnet18_cifar", 32, {}, 512, id="resnet18_cifar"),
    pytest.param("resnet18", 28, {}, 512, id="resnet18"),
    pytest.param("resnet50", 28, {}, 2048, id="resnet50", marks=_SLOW),
    pytest.param("resnet50_cifar", 16, {}, 2048, id="resnet50_cifar", marks=_SLOW),
    pytest.param("vit_tiny", 32, {"num_layers": 2}, 192, id="vit_tiny"),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_required_architectures_registered() -> None:
    names = available_architectures()
    assert names == sorted(names)
    assert set(REQUIRED) <= set(names)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize(("arch", "size", "kwargs", "dim"), CASES)
def test_arch_builds_and_layers_resolve(
    arch: str, size: int, kwargs: dict[str, Any], dim: int, in_channels: int
) -> None:
    encoder = build_encoder(
        arch, in_channels=in_channels, image_size=size, arch_kwargs=kwargs, head_output_dim=16
    )
    assert isinstance(encoder, Encoder)
    assert encoder.feature_dim == dim
    assert encoder.head_dim == 16
    assert (encoder.in_channels, encoder.image_size) == (in_channels, size)
    images = torch.randn(2, in_channels, size, size)

    names = encoder.layer_names()
    stages = encoder.stage_names()
    assert stages[-2:] == ["backbone", "head"]
    assert set(stages) <= set(names)
    assert names.index("backbone") < names.index("head")
    for name in names:
        encoder.get_submodule(name)  # resolves

    captured: dict[str, list[torch.Tensor]] = {name: [] for name in stages}
    handles = [
        encoder.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(out)
        )
        for name in stages
    ]
    encoder.train()  # batch 2 is enough for batch norm in training mode
    z = encoder(images)
    for handle in handles:
        handle.remove()
    assert z.shape == (2, 16)
    assert captured["backbone"][0].shape == (2, dim)
    assert all(len(outs) == 1 and outs[0].shape[0] == 2 for outs in captured.values())
    assert torch.isfinite(z).all()


def test_layer_names_per_arch() -> None:
    cnn = build_encoder("small_cnn", in_channels=1, image_size=28)
    names = cnn.layer_names()
    for name in [
        "backbone.blocks.0",
        "backbone.blocks.1.pool",
        "backbone.blocks.2.conv",
        "head.fc1",
    ]:
        assert name in names
    assert cnn.stage_names()[:3] == ["backbone.blocks.0", "backbone.blocks.1", "backbone.blocks.2"]
    # outputs appear in forward order; a container after its children
    assert names.index("backbone.blocks.0.relu") < names.index("backbone.blocks.0")
    assert names.index("backbone.blocks.0") < names.index("backbone.blocks.1.conv")

    resnet = build_encoder("resnet18_cifar", in_channels=3, image_size=32)
    names = resnet.layer_names()
    assert {f"backbone.layer{i}" for i in range(1, 5)} <= set(names)
    assert "backbone.layer1.0.relu" not in names  # shared relu fires twice per block
    assert resnet.backbone.conv1.kernel_size == (3, 3)
    assert resnet.backbone.conv1.stride == (1, 1)
    assert isinstance(resnet.backbone.maxpool, nn.Identity)

    vit = build_encoder("vit_tiny", in_channels=3, image_size=32, arch_kwargs={"num_layers": 3})
    names = vit.layer_names()
    assert vit.stage_names()[:3] == [f"backbone.encoder.layers.encoder_layer_{i}" for i in range(3)]
    assert "backbone.conv_proj" in names
    assert "backbone.encoder.layers.encoder_layer_0.self_attention" not in names  # tuple output


def test_vit_is_torchvision_and_wraps_for_mae() -> None:
    from lightly.models.modules import MaskedVisionTransformerTorchvision
    from torchvision.models.vision_transformer import VisionTransformer

    encoder = build_encoder(
        "vit_tiny", in_channels=1, image_size=32, arch_kwargs={"num_layers": 1, "patch_size": 8}
    )
    assert isinstance(encoder.backbone, VisionTransformer)
    assert encoder.backbone.conv_proj.in_channels == 1
    masked = MaskedVisionTransformerTorchvision(vit=encoder.backbone)
    idx_keep = torch.tensor([[0, 1, 2], [0, 3, 4]])
    tokens = masked.encode(torch.randn(2, 1, 32, 32), idx_keep=idx_keep)
    assert tokens.shape == (2, 3, 192)


def test_build_from_model_config_and_rebuild() -> None:
    config = ModelConfig(
        arch="small_cnn", arch_kwargs={"widths": [8, 16]}, head_hidden_dim=32, head_output_dim=8
    )
    encoder = build_encoder(config, in_channels=1, image_size=28)
    assert encoder.feature_dim == 16
    assert encoder.arch_config == {
        "arch": "small_cnn",
        "in_channels": 1,
        "image_size": 28,
        "arch_kwargs": {"widths": [8, 16]},
        "head_hidden_dim": 32,
        "head_output_dim": 8,
    }
    restored = json.loads(json.dumps(encoder.arch_config))
    rebuilt = build_encoder_from_config(restored)
    assert rebuilt.arch_config == encoder.arch_config
    shapes = {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert shapes == {k: v.shape for k, v in encoder.state_dict().items()}


def test_defaults_are_recorded() -> None:
    encoder = build_encoder("vit_tiny", in_channels=3, image_size=32, arch_kwargs={"num_layers": 1})
    kwargs = encoder.arch_config["arch_kwargs"]
    assert kwargs["patch_size"] == 4 and kwargs["num_heads"] == 3 and kwargs["hidden_dim"] == 192
    assert kwargs["mlp_dim"] == 768 and kwargs["num_layers"] == 1
    assert encoder.arch_config["head_hidden_dim"] == 256
    assert encoder.arch_config["head_output_dim"] == 64


def test_unknown_arch_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_encoder("resnet9000", in_channels=3, image_size=32)
    assert "resnet9000" in str(info.value)
    for name in REQUIRED:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("arch", "kwargs", "size", "needle"),
    [
        ("small_cnn", {"width": [8]}, 28, "'width'"),
        ("small_cnn", {"widths": "abc"}, 28, "'widths'"),
        ("small_cnn", {"widths": []}, 28, "widths"),
        ("small_cnn", {"in_channels": 3}, 28, "'in_channels'"),
        ("small_cnn", {"widths": [4, 4, 4, 4, 4, 4]}, 16, "image_size"),
        ("vit_tiny", {"patch_size": 5}, 32, "patch_size"),
        ("vit_tiny", {"num_heads": 5}, 32, "num_heads"),
        ("resnet18", {"zero_init_residual": "maybe"}, 32, "'zero_init_residual'"),
    ],
)
def test_bad_kwargs_name_the_argument(
    arch: str, kwargs: dict[str, Any], size: int, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_encoder(arch, in_channels=3, image_size=size, arch_kwargs=kwargs)
    assert needle in str(info.value)


@pytest.mark.parametrize("field", ["in_channels", "image_size", "head_hidden_dim"])
def test_non_positive_dims_rejected(field: str) -> None:
    args: dict[str, Any] = {"in_channels": 1, "image_size": 28, "head_hidden_dim": 8}
    args[field] = 0
    with pytest.raises(ConfigError, match=field):
        build_encoder("small_cnn", **args)


def test_arch_config_must_be_complete() -> None:
    with pytest.raises(ConfigError, match="missing keys"):
        build_encoder_from_config({"arch": "small_cnn"})


def test_register_custom_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", registry_module._REGISTRY.copy())

    @register_backbone("tiny_linear")
    def tiny_linear(*, in_channels: int, image_size: int, dim: int = 4) -> tuple[nn.Module, int]:
        return nn.Sequential(nn.Flatten(1), nn.Linear(in_channels * image_size**2, dim)), dim

    assert "tiny_linear" in available_architectures()
    backbone, dim = build_backbone("tiny_linear", in_channels=1, image_size=4, arch_kwargs={})
    assert backbone(torch.zeros(2, 1, 4, 4)).shape == (2, dim)
    encoder = build_encoder("tiny_linear", in_channels=1, image_size=4, arch_kwargs={"dim": 6})
    assert encoder.stage_names() == ["backbone", "head"]
    assert encoder.features(torch.zeros(2, 1, 4, 4)).shape == (2, 6)

    with pytest.raises(ConfigError, match="already registered"):
        register_backbone("tiny_linear")(tiny_linear)
    with pytest.raises(ConfigError, match="keyword-only"):

        @register_backbone("positional")
        def positional(in_channels: int, image_size: int) -> tuple[nn.Module, int]:
            return nn.Identity(), 1

    with pytest.raises(ConfigError, match="needs a default"):

        @register_backbone("no_default")
        def no_default(*, in_channels: int, image_size: int, dim: int) -> tuple[nn.Module, int]:
            return nn.Identity(), dim


def test_manual_encoder_layer_names_fall_back_to_modules() -> None:
    encoder = Encoder(
        backbone=nn.Sequential(nn.Flatten(1)),
        head=nn.Linear(4, 2),
        arch="manual",
        arch_config={},
        feature_dim=4,
        head_dim=2,
    )
    assert encoder.layer_names() == ["backbone", "backbone.0", "head"]


def test_layer_names_keeps_per_module_modes() -> None:
    encoder = build_encoder("small_cnn", in_channels=1, image_size=16, arch_kwargs={"widths": [4]})
    encoder.train()
    encoder.backbone.eval()  # e.g. a frozen backbone under a training head
    encoder.layer_names()
    assert encoder.training and encoder.head.training
    assert not any(m.training for m in encoder.backbone.modules())
