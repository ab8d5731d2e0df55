import pytest
import torch

from sslmem.augment import AugmentationSpec, BatchAugmenter, counter_uniform
from tests.helpers import random_images


def test_counter_uniform_is_in_unit_interval_and_depends_only_on_its_counters() -> None:
    keys = torch.tensor([0, 1, 2, 2**40 + 5])
    u = counter_uniform(7, keys, torch.arange(3), 4)
    assert u.shape == (4, 3, 4)
    assert (u >= 0).all() and (u < 1).all()
    again = counter_uniform(7, keys.flip(0), torch.arange(3), 4)
    assert torch.equal(u, again.flip(0))
    assert not torch.equal(u, counter_uniform(8, keys, torch.arange(3), 4))


def test_counter_uniform_is_roughly_uniform() -> None:
    u = counter_uniform(0, torch.arange(20000), torch.arange(1), 1).flatten()
    assert abs(u.mean().item() - 0.5) < 0.01
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.01


@pytest.mark.parametrize("channels", [1, 3])
def test_views_within_one_batch_differ(channels: int) -> None:
    images = random_images(1, channels).repeat(16, 1, 1, 1)  # the same image 16 times
    views = BatchAugmenter(AugmentationSpec()).views(images, torch.arange(16), torch.arange(2), 0)
    assert views.shape == (16, 2, channels, 16, 16)
    flat = views.reshape(32, -1)
    distinct = {tuple(row.tolist()) for row in flat}
    assert len(distinct) == 32  # every (point, view) got its own crop/flip/jitter


def test_views_do_not_depend_on_batch_composition() -> None:
    aug = BatchAugmenter(AugmentationSpec())
    images = random_images(10, 3)
    keys = torch.arange(100, 110)
    full = aug.views(images, keys, torch.arange(4), 3)
    perm = torch.randperm(10)
    permuted = aug.views(images[perm], keys[perm], torch.arange(4), 3)
    assert torch.allclose(full[perm], permuted, atol=1e-6)
    alone = aug.views(images[4:5], keys[4:5], torch.arange(4), 3)
    assert torch.allclose(full[4:5], alone, atol=1e-6)


def test_identity_spec_reproduces_the_clean_image() -> None:
    spec = AugmentationSpec(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_prob=0, jitter_prob=0
    )
    aug = BatchAugmenter(spec)
    images = random_images(4, 1)
    views = aug.views(images, torch.arange(4), torch.arange(2), 0)
    clean = aug.clean(images)
    assert torch.allclose(views[:, 0], clean, atol=1e-5)
    assert torch.allclose(views[:, 1], clean, atol=1e-5)


def test_output_size_and_normalisation() -> None:
    spec = AugmentationSpec(output_size=8, mean=(0.0,), std=(1.0,))
    views = BatchAugmenter(spec).views(random_images(3), torch.arange(3), torch.arange(5), 0)
    assert views.shape == (3, 5, 1, 8, 8)
    assert views.min() >= 0 and views.max() <= 1


def test_bad_spec_and_input_rejected() -> None:
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentationSpec(crop_scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="uint8"):
        BatchAugmenter(AugmentationSpec()).views(
            torch.zeros(2, 1, 8, 8), torch.arange(2), torch.arange(2), 0
        )
