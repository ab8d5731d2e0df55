"""A labelled image set in memory, and decoding one image: what every dataset source shares.

Below both the local loaders (:mod:`sslmem.data.datasets`) and the object-store loader
(:mod:`sslmem.data.s3`), so neither imports the other for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt
import torch

from sslmem.errors import DataError

Split = Literal["train", "test"]
ImageSize = tuple[int, int]
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
_HASH_FORMAT = b"sslmem-image-dataset-v1"


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image set, in memory or memory-mapped from a node-local file.

    ``eq=False``: tensors have no boolean equality, so identity semantics are the honest choice;
    compare datasets by :attr:`content_hash`.

    Attributes:
        name: Registry name of the source (``"bundled"``, ``"cifar10"``, ...).
        images: ``uint8 [N, C, H, W]`` with ``C`` in ``{1, 3}``.
        labels: ``int64 [N]``, each in ``[0, len(classes))``.
        classes: Class names; ``classes[k]`` names label ``k``.
        split: Which split of the source the images come from.
        source_sha256: For remote datasets (``s3://...``), the SHA-256 of the source listing
            (keys, sizes, ETags); split manifests then record it instead of the pixel hash, so
            a changed bucket is detected before anything is decoded. ``None`` for local data.
        mapped_from: The file ``images`` is memory-mapped from (remote datasets, decoded once
            per node); ``None`` when the pixels are resident. Consumers gather the rows they
            need from a mapped dataset instead of copying it whole.

    Raises:
        DataError: On construction, if a shape, dtype or label is invalid.

    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    split: str = "train"
    source_sha256: str | None = None
    mapped_from: Path | None = None

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise DataError(
                f"dataset {self.name!r}: images must be uint8 [N, C, H, W] with C in (1, 3), "
                f"got {images.dtype} {list(images.shape)}"
            )
        if labels.dtype != torch.int64 or labels.dim() != 1 or len(labels) != len(images):
            raise DataError(
                f"dataset {self.name!r}: labels must be int64 [N] with N = {len(images)}, "
                f"got {labels.dtype} {list(labels.shape)}"
            )
        if not self.classes:
            raise DataError(f"dataset {self.name!r}: no class names given")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise DataError(
                f"dataset {self.name!r}: labels must lie in [0, {len(self.classes)}), "
                f"got [{int(labels.min())}, {int(labels.max())}]"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_channels(self) -> int:
        """Channels ``C`` of the images (1 grey, 3 RGB)."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> ImageSize:
        """``(H, W)`` of the images."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    # cached_property writes to the instance __dict__ directly, bypassing the frozen
    # dataclass's __setattr__, so the hash is computed once per (immutable) dataset.
    @cached_property
    def content_hash(self) -> str:
        """SHA-256 hex digest of the pixels and labels (name and class names excluded).

        A small header with shapes and dtypes is hashed first, so the same bytes arranged in a
        different shape hash differently.
        """
        digest = hashlib.sha256(_HASH_FORMAT)
        for label, tensor in (("images", self.images), ("labels", self.labels)):
            array = np.ascontiguousarray(tensor.detach().cpu().numpy())
            digest.update(f"|{label}:{array.dtype.str}:{list(array.shape)}|".encode())
            digest.update(array.reshape(-1).view(np.uint8).data)
        return digest.hexdigest()

    @property
    def identity_sha256(self) -> str:
        """The hash a split manifest records: a remote dataset's listing hash, else the pixels'."""
        return self.source_sha256 or self.content_hash

    def subset(
        self, indices: Sequence[int] | npt.NDArray[np.integer[Any]] | torch.Tensor
    ) -> ImageDataset:
        """Select points by index, in the given order.

        Args:
            indices: ``[M]`` integer indices into this dataset.

        Returns:
            A new dataset with images ``[M, C, H, W]`` and labels ``[M]`` (resident copies,
            also of a mapped dataset).

        Raises:
            DataError: If an index is out of range.

        """
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64)).reshape(-1)
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise DataError(
                f"subset of dataset {self.name!r}: indices must lie in [0, {len(self)}), "
                f"got [{int(index.min())}, {int(index.max())}]"
            )
        return ImageDataset(
            name=self.name,
            images=self.images.index_select(0, index),
            labels=self.labels.index_select(0, index),
            classes=self.classes,
            split=self.split,
        )


def read_image(
    path: Path | BinaryIO, size: ImageSize | None, name: str | None = None
) -> npt.NDArray[np.uint8]:
    """Decode one image to ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB), resized to ``size``.

    ``path`` is a file or an open binary stream; ``name`` names it in errors (default ``path``).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as raw:
            image = raw.convert("L" if raw.mode in ("1", "L", "LA") else "RGB")
        if size is not None and (image.height, image.width) != size:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(
            f"cannot decode image {name or path}: {exc}", "remove or fix the file"
        ) from exc
