from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslmem.data import ImageDataset, available_datasets, load_dataset
from sslmem.data.datasets import DEBIAN_FASHION_MNIST_DIR, RestrictedUnpickler, read_idx
from sslmem.errors import ConfigError, DataError


def _dataset(n: int = 8, channels: int = 1, num_classes: int = 2) -> ImageDataset:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, 4, 4), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n, dtype=torch.int64) % num_classes
    return ImageDataset("toy", images, labels, tuple(f"c{k}" for k in range(num_classes)))


# ---------------------------------------------------------------------------------- ImageDataset


def test_image_dataset_properties_and_subset() -> None:
    ds = _dataset(n=6, channels=3)
    assert len(ds) == 6 and ds.num_channels == 3 and ds.image_size == (4, 4)
    sub = ds.subset([4, 1])
    assert len(sub) == 2 and sub.classes == ds.classes
    assert torch.equal(sub.images[0], ds.images[4]) and sub.labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="indices must lie"):
        ds.subset([6])


def test_image_dataset_is_frozen_and_hash_is_cached() -> None:
    ds = _dataset()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # type: ignore[misc]
    assert ds.content_hash is ds.content_hash
    assert len(ds.content_hash) == 64


def test_content_hash_depends_on_pixels_labels_and_shape() -> None:
    ds = _dataset()
    same = ImageDataset("renamed", ds.images.clone(), ds.labels.clone(), ds.classes)
    assert same.content_hash == ds.content_hash  # the name is not content
    pixels = ds.images.clone()
    pixels[0, 0, 0, 0] ^= 1
    assert ImageDataset("toy", pixels, ds.labels, ds.classes).content_hash != ds.content_hash
    labels = ds.labels.flip(0).contiguous()
    assert ImageDataset("toy", ds.images, labels, ds.classes).content_hash != ds.content_hash
    reshaped = ds.images.reshape(8, 1, 2, 8)
    assert ImageDataset("toy", reshaped, ds.labels, ds.classes).content_hash != ds.content_hash


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), "uint8"),
        (torch.zeros(2, 2, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "C in"),
        (torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "uint8"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), "int64"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32), "int64"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 5]), r"\[0, 2\)"),
    ],
)
def test_image_dataset_validates(images: torch.Tensor, labels: torch.Tensor, match: str) -> None:
    with pytest.raises(DataError, match=match):
        ImageDataset("bad", images, labels, ("a", "b"))


# ---------------------------------------------------------------------------------- registry


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("imagenet")
    for name in ("bundled", "fashion-mnist", "cifar10", "cifar100", "folder"):
        assert name in str(info.value)
    assert set(available_datasets()) == {
        "bundled",
        "fashion-mnist",
        "cifar10",
        "cifar100",
        "folder",
    }


def test_image_size_only_for_folders() -> None:
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("bundled", image_size=32)


# ---------------------------------------------------------------------------------- bundled


@pytest.mark.parametrize(("split", "per_class"), [("train", 400), ("test", 100)])
def test_bundled_fashion_mnist(split: str, per_class: int) -> None:
    ds = load_dataset("bundled", split=split)  # type: ignore[arg-type]
    assert ds.name == "bundled" and ds.split == split
    assert ds.images.shape == (10 * per_class, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64
    assert len(ds.classes) == 10 and ds.classes[0] == "T-shirt/top"
    assert torch.bincount(ds.labels).tolist() == [per_class] * 10
    assert ds.images.float().std() > 20  # real images, not blank


def test_bundled_licence_ships_next_to_the_data() -> None:
    from importlib import resources

    text = resources.files("sslmem.data").joinpath("bundled/LICENSE-fashion-mnist.txt").read_text()
    assert "Zalando SE" in text and "Permission is hereby granted" in text


# ---------------------------------------------------------------------------------- Fashion-MNIST


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def _write_fake_fashion_mnist(directory: Path, n: int, compress: bool) -> np.ndarray:
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress)
    return images


def test_full_fashion_mnist_from_debian() -> None:
    assert DEBIAN_FASHION_MNIST_DIR.is_dir(), "apt-get install dataset-fashion-mnist"
    ds = load_dataset("fashion-mnist", split="train", root=DEBIAN_FASHION_MNIST_DIR)
    assert ds.images.shape == (60000, 1, 28, 28)
    assert torch.bincount(ds.labels).tolist() == [6000] * 10
    test = load_dataset("fashion-mnist", split="test")  # default location
    assert len(test) == 10000


@pytest.mark.parametrize(
    ("layout", "compress"),
    [(".", True), ("FashionMNIST/raw", False)],
    ids=["flat-gz", "torchvision"],
)
def test_fashion_mnist_from_root(tmp_path: Path, layout: str, compress: bool) -> None:
    images = _write_fake_fashion_mnist(tmp_path / layout, n=12, compress=compress)
    ds = load_dataset("fashion-mnist", split="test", root=tmp_path)
    assert ds.images.shape == (12, 1, 28, 28)
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    assert ds.labels.tolist() == [k % 10 for k in range(12)]


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert "SSLMEM_DATA_DIR" in str(info.value)


def test_truncated_idx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte"
    _write_idx(path, np.arange(10), compress=False)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x03" + bytes(6))  # cut inside the 16-byte header
    with pytest.raises(DataError, match="truncated inside its header") as info:
        read_idx(path)
    assert info.value.fix is not None and "re-download" in info.value.fix
    path.write_bytes(b"\x00\x00\x0d\x01" + bytes(8))  # float IDX: not supported
    with pytest.raises(DataError, match="unsigned-byte"):
        read_idx(path)


# ---------------------------------------------------------------------------------- CIFAR


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _dump(path: Path, obj: object, protocol: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=protocol)


def test_cifar10_synthetic_directory(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    # Bytes keys and protocol 2, like the original Python 2 files.
    for i in range(1, 6):
        batch = {b"data": _cifar_rows(3, i), b"labels": [i % 10] * 3, b"batch_label": b"b"}
        _dump(folder / f"data_batch_{i}", batch, protocol=2)
    test_rows = _cifar_rows(4, 9)
    _dump(folder / "test_batch", {b"data": test_rows, b"labels": [0, 1, 2, 3]}, protocol=2)
    names = [n.encode() for n in ("airplane", "automobile", *(f"c{k}" for k in range(8)))]
    _dump(folder / "batches.meta", {b"label_names": names}, protocol=2)

    train = load_dataset("cifar10", root=tmp_path)
    assert train.images.shape == (15, 3, 32, 32) and train.labels.tolist()[:4] == [1, 1, 1, 2]
    test = load_dataset("cifar10", split="test", root=folder)  # the folder itself also works
    assert test.classes[:2] == ("airplane", "automobile")
    # Rows are channel-major: 1024 red, 1024 green, then 1024 blue values.
    assert test.images[2, 1, 3, 5] == test_rows[2, 1024 + 3 * 32 + 5]


def test_cifar100_synthetic_directory_protocol5(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    rows = _cifar_rows(5, 0)
    batch = {"data": rows, "fine_labels": [0, 1, 2, 3, 4], "coarse_labels": [0] * 5}
    _dump(folder / "train", batch, protocol=5)
    _dump(folder / "test", batch, protocol=5)
    _dump(folder / "meta", {"fine_label_names": [f"f{k}" for k in range(100)]}, protocol=5)
    ds = load_dataset("cifar100", root=tmp_path)
    assert ds.images.shape == (5, 3, 32, 32) and len(ds.classes) == 100
    assert np.array_equal(ds.images.reshape(5, -1).numpy(), rows)


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.target,))


def test_restricted_unpickler_refuses_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    _dump(folder / "batches.meta", {b"label_names": [b"a"], b"x": _Evil(marker)}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        _dump(folder / name, {b"data": _cifar_rows(1, 0), b"labels": [0]}, protocol=2)
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os|nt)\.mkdir"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()

    payload = pickle.dumps(eval, protocol=2)  # a global that would give code execution
    with pytest.raises(DataError, match=r"(__builtin__|builtins)\.eval"):
        RestrictedUnpickler(io.BytesIO(payload)).load()


def test_corrupt_cifar_file_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    for name in ("train", "meta"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read pickle"):
        load_dataset("cifar100", root=tmp_path)


def test_missing_cifar_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-10-batches-py") as info:
        load_dataset("cifar10", root=tmp_path)
    assert "--data-root" in str(info.value)


# ---------------------------------------------------------------------------------- folders


def _png(path: Path, mode: str, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour: int | tuple[int, int, int] = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, colour).save(path)


def test_folder_of_grey_images_stays_one_channel(tmp_path: Path) -> None:
    _png(tmp_path / "cat" / "1.png", "L", (6, 5), 10)  # PIL size is (W, H)
    _png(tmp_path / "cat" / "2.png", "L", (6, 5), 20)
    _png(tmp_path / "ant" / "1.png", "L", (12, 10), 30)
    (tmp_path / "ant" / "notes.txt").write_text("ignored")
    ds = load_dataset("folder", root=tmp_path)
    assert ds.classes == ("ant", "cat")
    assert ds.images.shape == (3, 1, 10, 12)  # first image's size (ant/1.png)
    assert ds.labels.tolist() == [0, 1, 1]
    assert set(ds.images[1].flatten().tolist()) == {10}


def test_folder_mixing_grey_and_rgb_becomes_rgb(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "grey.png", "L", (8, 8), 50)
    _png(tmp_path / "b" / "rgb.png", "RGB", (16, 16), 200)
    ds = load_dataset("folder", root=tmp_path, image_size=(4, 6))
    assert ds.images.shape == (2, 3, 4, 6)
    assert set(ds.images[0].flatten().tolist()) == {50}  # grey on all channels
    assert ds.images[1, :, 0, 0].tolist() == [200, 0, 55]


def test_folder_with_train_test_layout(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "x" / "1.png", "L", (4, 4), 1)
    _png(tmp_path / "test" / "x" / "1.png", "L", (4, 4), 2)
    _png(tmp_path / "test" / "y" / "1.png", "L", (4, 4), 3)
    assert len(load_dataset("folder", root=tmp_path)) == 1
    test = load_dataset("folder", split="test", root=tmp_path)
    assert test.split == "test" and test.classes == ("x", "y")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a directory"):
        load_dataset("folder")
    with pytest.raises(DataError, match="holds no images"):
        load_dataset("folder", root=tmp_path)
    _png(tmp_path / "x" / "1.png", "L", (4, 4), 1)
    with pytest.raises(DataError, match="no test split"):
        load_dataset("folder", split="test", root=tmp_path)
    (tmp_path / "x" / "2.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="cannot decode"):
        load_dataset("folder", root=tmp_path)
