"""Image datasets as uint8 tensors, loaded by name from local files.

Every loader returns an :class:`ImageDataset`: images ``uint8 [N, C, H, W]`` (``C`` = 1 for grey,
3 for RGB; one code path for both) and labels ``int64 [N]``. Nothing is downloaded: the bundled
Fashion-MNIST subset ships with the package, the full Fashion-MNIST comes from Debian's
``dataset-fashion-mnist`` package or a local directory, CIFAR and image folders from a local
directory (``--data-root`` / ``SSLMEM_DATA_DIR``).

Loaders are registered by name in :data:`_LOADERS` (torchvision-style builders, no if/elif chain);
:func:`load_dataset` is the one entry point.
"""

from __future__ import annotations

import gzip
import importlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

# Re-exported: the dataset type and its aliases were always imported from here.
from sslmem.data.images import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from sslmem.data.images import ImageDataset as ImageDataset
from sslmem.data.images import ImageSize as ImageSize
from sslmem.data.images import Split as Split
from sslmem.data.images import read_image
from sslmem.errors import ConfigError, DataError

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
BUNDLED_FILE = "fashion_mnist_subset.npz"


# --------------------------------------------------------------------------------------------
# Shared helpers


def _dataset_from_arrays(
    name: str,
    split: Split,
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[Any],
    classes: Sequence[str],
) -> ImageDataset:
    """Wrap ``images [N, C, H, W]`` or ``[N, H, W]`` (grey) and ``labels [N]`` as a dataset."""
    if images.ndim == 3:
        images = images[:, None]
    return ImageDataset(
        name=name,
        images=torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
        labels=torch.from_numpy(np.asarray(labels, dtype=np.int64).copy()),
        classes=tuple(classes),
        split=split,
    )


def _default_data_dir() -> Path:
    # Imported lazily: settings read the environment, which must happen at call time.
    from sslmem.config import RuntimeSettings

    return RuntimeSettings().data_dir


def _not_found(name: str, looked_in: Sequence[Path], what: str, install: str = "") -> DataError:
    places = ", ".join(str(p) for p in looked_in)
    return DataError(
        f"dataset {name!r} not found: no {what} in {places}",
        f"{install}point --data-root (or SSLMEM_DATA_DIR) to a directory that holds {what}",
    )


# --------------------------------------------------------------------------------------------
# Bundled subset and Fashion-MNIST (IDX files)


def _load_bundled(split: Split, root: Path | None) -> ImageDataset:
    """Load the Fashion-MNIST subset shipped in the package (4,000 train / 1,000 test, 28x28)."""
    if root is not None:
        raise ConfigError(
            "dataset 'bundled' ships with the package and takes no data root",
            "drop --data-root, or use dataset 'fashion-mnist' with that root",
        )
    ref = resources.files("sslmem.data").joinpath("bundled", BUNDLED_FILE)
    # as_file also works when the package is installed as a zip archive.
    with resources.as_file(ref) as path:
        if not path.is_file():
            raise DataError(
                f"bundled dataset file {path} is missing from the installed package",
                "reinstall sslmem, or regenerate it with `make bundle-data`",
            )
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    return _dataset_from_arrays("bundled", split, images, labels, FASHION_MNIST_CLASSES)


_IDX_UBYTE = 0x08


def read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """Parse an IDX file of unsigned bytes (the MNIST format), gzip-compressed or not.

    Args:
        path: ``*-idx{1,3}-ubyte`` or ``*-idx{1,3}-ubyte.gz``.

    Returns:
        The array with the file's dimensions, e.g. ``[N, 28, 28]`` images or ``[N]`` labels.

    Raises:
        DataError: If the file is not an unsigned-byte IDX file or is truncated.

    """
    fix = f"re-download {path.name} (or restore it from a backup); the file is damaged"
    try:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}", fix) from exc
    # Header: two zero bytes, a type code, the number of dimensions, then big-endian int32 dims.
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != _IDX_UBYTE:
        what = "truncated" if len(data) < 4 else "bad magic number"
        raise DataError(f"{path} is not an unsigned-byte IDX file ({what})", fix)
    ndim = data[3]
    header = 4 + 4 * ndim
    # A file cut inside its header: the dimensions themselves are incomplete.
    if len(data) < header:
        raise DataError(
            f"IDX file {path} is truncated inside its header: {len(data)} bytes, "
            f"the header of a {ndim}-dimensional IDX file takes {header}",
            fix,
        )
    dims = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">i4"))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(
            f"IDX file {path} is truncated or corrupt: header says {dims} "
            f"({expected} bytes), file holds {len(data) - header}",
            fix,
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_fashion_mnist(split: Split, root: Path | None) -> ImageDataset:
    """Full Fashion-MNIST (60,000 train / 10,000 test, 28x28 grey) from raw IDX files."""
    bases = [root] if root is not None else [_default_data_dir(), DEBIAN_FASHION_MNIST_DIR]
    # Accept a directory holding the raw files and torchvision's ROOT/FashionMNIST/raw layout.
    directories = [d for base in bases for d in (base, base / "FashionMNIST" / "raw")]
    prefix = "train" if split == "train" else "t10k"
    for directory in directories:
        image_file = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
        label_file = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
        if image_file is not None and label_file is not None:
            images, labels = read_idx(image_file), read_idx(label_file)
            if images.ndim != 3 or labels.shape != images.shape[:1]:
                raise DataError(
                    f"Fashion-MNIST files in {directory} disagree: images {images.shape}, "
                    f"labels {labels.shape}"
                )
            return _dataset_from_arrays(
                "fashion-mnist", split, images, labels, FASHION_MNIST_CLASSES
            )
    raise _not_found(
        "fashion-mnist",
        directories,
        f"{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]",
        install="install it with `apt-get install dataset-fashion-mnist`, or ",
    )


# --------------------------------------------------------------------------------------------
# CIFAR (python pickles, read with a restricted unpickler)


def _numpy_global(module: str, name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; the old path still works but warns.
    try:
        return getattr(importlib.import_module(f"numpy._core.{module}"), name)
    except ImportError:  # pragma: no cover - numpy < 2
        return getattr(importlib.import_module(f"numpy.core.{module}"), name)


@cache
def _safe_globals() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_global("multiarray", "_reconstruct")
    frombuffer = _numpy_global("numeric", "_frombuffer")
    return {
        # How numpy arrays pickle: protocol <= 4 (the CIFAR files) and protocol 5.
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles bytes as _codecs.encode(str, "latin1") under protocol 2.
        ("_codecs", "encode"): __import__("_codecs").encode,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build numpy arrays and builtin containers.

    A pickle can call any importable function while loading, so ``pickle.load`` on a downloaded
    file runs whatever code the file names. CIFAR batches need nothing beyond numpy array
    reconstruction and builtin types (dicts, lists, bytes, ints, which need no global at all);
    every other global is refused.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global only if it is on the allow-list.

        Raises:
            DataError: For any other global (the file is not a plain CIFAR batch).

        """
        allowed = _safe_globals().get((module, name))
        if allowed is None:
            raise DataError(
                f"refusing to unpickle {module}.{name}: the file asks to run code that a "
                "CIFAR batch never needs",
                "use the original CIFAR python files from the dataset's authors",
            )
        return allowed


def restricted_load(path: Path) -> Any:
    """Load a pickle file with :class:`RestrictedUnpickler`.

    ``encoding="bytes"`` keeps Python 2 strings (the CIFAR files) as ``bytes`` so numpy array
    payloads round-trip unchanged.

    Raises:
        DataError: If the file is unreadable, malformed or names a forbidden global.

    """
    try:
        with path.open("rb") as handle:
            return RestrictedUnpickler(handle, encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise DataError(f"cannot read pickle {path}: {type(exc).__name__}: {exc}") from exc


def _key(mapping: Any, key: str, path: Path) -> Any:
    # Python 2 pickles give bytes keys, Python 3 ones str keys.
    if isinstance(mapping, dict):
        for candidate in (key.encode(), key):
            if candidate in mapping:
                return mapping[candidate]
    raise DataError(f"{path} is not a CIFAR python file: no {key!r} entry")


def _names(values: Sequence[bytes | str]) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def _read_cifar_batch(path: Path, label_key: str) -> tuple[npt.NDArray[np.uint8], list[int]]:
    batch = restricted_load(path)
    data, labels = _key(batch, "data", path), list(_key(batch, label_key, path))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' must be a uint8 [N, 3072] array")
    if data.shape[1] != 3 * 32 * 32 or len(labels) != data.shape[0]:
        raise DataError(
            f"{path}: expected data [N, 3072] and N labels, got {data.shape}, {len(labels)}"
        )
    # Rows are channel-major (1024 red, 1024 green, 1024 blue), i.e. [3, 32, 32] each.
    return data.reshape(-1, 3, 32, 32), labels


@dataclass(frozen=True)
class _CifarLayout:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str


_CIFAR10 = _CifarLayout(
    name="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
)
_CIFAR100 = _CifarLayout(
    name="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
)


def _load_cifar(layout: _CifarLayout, split: Split, root: Path | None) -> ImageDataset:
    """CIFAR-10/100 python version (torchvision layout), 32x32 RGB."""
    base = root if root is not None else _default_data_dir()
    # Accept both ROOT (holding the extracted folder) and the extracted folder itself.
    candidates = [base / layout.folder, base]
    files = layout.train_files if split == "train" else layout.test_files
    for directory in candidates:
        if all((directory / f).is_file() for f in (*files, layout.meta_file)):
            break
    else:
        raise _not_found(
            layout.name,
            candidates,
            f"{layout.folder}/ ({', '.join((*files, layout.meta_file))}); "
            "extract the CIFAR python archive there,",
        )
    meta = restricted_load(directory / layout.meta_file)
    classes = _names(_key(meta, layout.names_key, directory / layout.meta_file))
    batches = [_read_cifar_batch(directory / f, layout.label_key) for f in files]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([np.asarray(labels, dtype=np.int64) for _, labels in batches])
    return _dataset_from_arrays(layout.name, split, images, labels, classes)


# --------------------------------------------------------------------------------------------
# Image folders


def _folder_split_root(root: Path, split: Split) -> Path:
    # Either root/<class>/<image> (train only) or root/{train,test}/<class>/<image>.
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root / split
    if split == "test":
        raise DataError(
            f"image folder {root} has no test split",
            f"put test images into {root}/test/<class>/ and training images into "
            f"{root}/train/<class>/",
        )
    return root


def _to_image_size(image_size: int | ImageSize | None) -> ImageSize | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return int(size[0]), int(size[1])


def _load_folder(split: Split, root: Path | None, image_size: ImageSize | None) -> ImageDataset:
    """Load an ImageFolder-style directory ``root/<class>/<image>`` (classes sorted by name).

    All images are resized to ``image_size`` (default: the first image's size). They stay grey
    (``C`` = 1) if every image is grey, else all become RGB (``C`` = 3).
    """
    if root is None:
        raise ConfigError(
            "dataset 'folder' needs a directory", "pass --data-root DIR holding DIR/<class>/<image>"
        )
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist", "pass an existing directory")
    base = _folder_split_root(root, split)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    arrays: list[npt.NDArray[np.uint8]] = []
    labels: list[int] = []
    for label, class_name in enumerate(classes):
        for file in sorted((base / class_name).iterdir()):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                arrays.append(read_image(file, image_size))
                image_size = image_size or (arrays[-1].shape[0], arrays[-1].shape[1])
                labels.append(label)
    if not arrays:
        raise DataError(
            f"image folder {base} holds no images",
            f"put images ({', '.join(sorted(IMAGE_SUFFIXES))}) into {base}/<class>/",
        )
    rgb = any(a.ndim == 3 for a in arrays)
    # One code path for grey and colour: promote grey images only if the folder mixes both.
    stacked = np.stack([_as_chw(a, rgb) for a in arrays])
    return _dataset_from_arrays("folder", split, stacked, np.asarray(labels), classes)


def _as_chw(array: npt.NDArray[np.uint8], rgb: bool) -> npt.NDArray[np.uint8]:
    """``[H, W]`` or ``[H, W, 3]`` -> ``[C, H, W]`` with ``C`` = 3 if ``rgb`` else 1."""
    if array.ndim == 2:
        array = array[None]
        return np.repeat(array, 3, axis=0) if rgb else array
    return array.transpose(2, 0, 1)


# --------------------------------------------------------------------------------------------
# Registry

_Loader = Callable[[Split, Path | None, ImageSize | None], ImageDataset]


def _fixed_size(name: str, load: Callable[[Split, Path | None], ImageDataset]) -> _Loader:
    """Adapt a loader of fixed-size images: ``image_size`` applies to image folders only."""

    def loader(split: Split, root: Path | None, image_size: ImageSize | None) -> ImageDataset:
        if image_size is not None:
            raise ConfigError(
                f"image_size is not supported for dataset {name!r} (its images have a fixed size)",
                "drop image_size; resizing for training belongs to the augmentation spec",
            )
        return load(split, root)

    return loader


_LOADERS: dict[str, _Loader] = {
    "bundled": _fixed_size("bundled", _load_bundled),
    "fashion-mnist": _fixed_size("fashion-mnist", _load_fashion_mnist),
    "cifar10": _fixed_size("cifar10", lambda split, root: _load_cifar(_CIFAR10, split, root)),
    "cifar100": _fixed_size("cifar100", lambda split, root: _load_cifar(_CIFAR100, split, root)),
    "folder": _load_folder,
}


def available_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return tuple(sorted(_LOADERS))


def load_dataset(
    name: str,
    *,
    split: Split = "train",
    root: Path | str | None = None,
    image_size: int | ImageSize | None = None,
) -> ImageDataset:
    """Load a dataset by registry name.

    Args:
        name: One of :func:`available_datasets`, or ``s3://bucket/prefix/`` holding
            ``<class>/<image>`` objects or WebDataset ``*.tar`` shards (:mod:`sslmem.data.s3`).
        split: ``"train"`` or ``"test"``.
        root: Local directory. ``"fashion-mnist"``: a directory with the raw IDX files (gzipped
            or not) or torchvision's ``ROOT/FashionMNIST/raw``; default ``SSLMEM_DATA_DIR``,
            then Debian's ``/usr/share/datasets/fashion-mnist``. ``"cifar10"``/``"cifar100"``:
            the directory holding ``cifar-10-batches-py``/``cifar-100-python`` (or that folder
            itself); default ``SSLMEM_DATA_DIR``. ``"folder"``: required. ``"bundled"``: none.
            ``s3://...``: the node-local cache directory (default ``SSLMEM_DATA_DIR/s3-cache``).
        image_size: ``"folder"`` and ``s3://`` only: resize every image to ``(H, W)`` (an int
            means square); default the first image's size.

    Returns:
        Images ``uint8 [N, C, H, W]`` and labels ``int64 [N]``.

    Raises:
        ConfigError: Unknown name or split, or an option the dataset does not take.
        DataError: The data is missing (the message says how to install it) or malformed.

    """
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}", "use 'train' or 'test'")
    if name.startswith("s3://"):
        from sslmem.data.s3 import load_s3_dataset  # local import: keeps local loading light

        return load_s3_dataset(
            name,
            split=split,
            cache_dir=Path(root) if root is not None else None,
            image_size=_to_image_size(image_size),
        )
    loader = _LOADERS.get(name)
    if loader is None:
        raise ConfigError(
            f"unknown dataset {name!r}",
            f"use one of: {', '.join(available_datasets())}, or s3://bucket/prefix/",
        )
    return loader(split, Path(root) if root is not None else None, _to_image_size(image_size))
