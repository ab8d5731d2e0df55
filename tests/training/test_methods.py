from __future__ import annotations

import pytest
import torch

from sslmem.augment import BatchAugmenter
from sslmem.errors import ConfigError
from sslmem.models import build_encoder
from sslmem.training.methods import (
    StepContext,
    available_methods,
    build_method,
    check_compatible,
    get_method_spec,
    validate_options,
)
from tests.training.helpers import tiny_config, tiny_dataset

CASES = [
    ("simclr", "small_cnn", ()),
    ("byol", "small_cnn", ()),
    ("simsiam", "small_cnn", ()),
    ("dino", "small_cnn", ("training.method_kwargs={num_prototypes: 32}",)),
    ("mae", "vit_tiny", ()),
    ("dino", "vit_tiny", ("training.method_kwargs={num_prototypes: 32}",)),
]


def _ctx(step: int = 0) -> StepContext:
    return StepContext(
        epoch=0,
        global_step=step,
        total_steps=4,
        steps_per_epoch=2,
        generator=torch.Generator().manual_seed(step),
    )


def test_builtin_methods_are_registered() -> None:
    builtin = {"simclr", "byol", "simsiam", "dino", "mae"}
    assert builtin <= set(available_methods())
    for name in builtin:
        assert get_method_spec(name).paper


@pytest.mark.parametrize(("method", "arch", "extra"), CASES)
def test_two_optimizer_steps_give_finite_loss_and_train_the_encoder(
    method: str, arch: str, extra: tuple[str, ...]
) -> None:
    torch.manual_seed(0)
    config = tiny_config(method, arch, *extra)
    encoder = build_encoder(config.model, in_channels=1, image_size=16)
    ssl = build_method(encoder, config.training)
    data = tiny_dataset(8)
    views = BatchAugmenter(config.augmentation).views(
        data.images, torch.arange(8), torch.arange(ssl.num_views), seed=1
    )
    assert views.shape == (8, ssl.num_views, 1, 16, 16)
    before = [p.detach().clone() for p in encoder.backbone.parameters()]
    optimizer = torch.optim.Adam([p for p in ssl.parameters() if p.requires_grad], lr=1e-2)
    for step in range(2):
        loss = ssl(views, _ctx(step))
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        ssl.before_optimizer_step(_ctx(step))
        optimizer.step()
        optimizer.zero_grad()
        ssl.after_optimizer_step(_ctx(step))
    after = list(encoder.backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_mae_trains_backbone_only_and_masks_reproducibly() -> None:
    from sslmem.training.methods.mae import random_token_mask

    config = tiny_config("mae", "vit_tiny")
    ssl = build_method(build_encoder(config.model, in_channels=1, image_size=16), config.training)
    assert not any(p.requires_grad for p in ssl.encoder.head.parameters())
    a = random_token_mask(3, 17, 0.75, torch.Generator().manual_seed(5), torch.device("cpu"))
    b = random_token_mask(3, 17, 0.75, torch.Generator().manual_seed(5), torch.device("cpu"))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    keep, mask = a
    assert keep.shape == (3, 5) and mask.shape == (3, 12)  # int(16 * 0.25) + class token
    assert bool((keep[:, 0] == 0).all())  # the class token is always kept


def test_method_architecture_mismatch_names_compatible_archs() -> None:
    with pytest.raises(ConfigError, match="does not support architecture 'small_cnn'") as info:
        check_compatible("mae", "small_cnn")
    assert info.value.fix is not None and "vit_tiny" in info.value.fix
    config = tiny_config("simclr")
    encoder = build_encoder(config.model, in_channels=1, image_size=16)
    with pytest.raises(ConfigError, match="vit_tiny"):
        build_method(encoder, config.training.model_copy(update={"method": "mae"}))


def test_unknown_method_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="unknown SSL method 'swav'") as info:
        get_method_spec("swav")
    assert info.value.fix is not None and "simclr" in info.value.fix


def test_invalid_method_option_names_the_field() -> None:
    with pytest.raises(ConfigError, match="mask_ratio"):
        validate_options("mae", {"mask_ratio": 1.5})
    with pytest.raises(ConfigError, match="not_an_option"):
        validate_options("byol", {"not_an_option": 1})
    with pytest.raises(ConfigError):
        validate_options("mae", {"decoder_dim": 30, "decoder_heads": 4})
