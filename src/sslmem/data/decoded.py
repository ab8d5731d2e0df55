"""Node-local decoded copies of remote datasets, memory-mapped.

Decoding a million PNGs costs more than an epoch of a small encoder, and holding them decoded in
RAM costs ``N * C * H * W`` bytes per process -- per rank under ``torchrun``. So a remote dataset
is decoded once per node, one image at a time, into a raw ``uint8 [N, C, H, W]`` file next to the
object cache, and every later load (every rank, every pipeline step on that node) memory-maps it:
the kernel's page cache holds the pages actually read, shares them between processes and evicts
them under pressure, so a process's resident memory does not grow with the dataset.

An entry is three files named by its key: ``<key>.u8`` (pixels), ``<key>.labels.npy`` and
``<key>.json`` (shape and format), each written atomically and the JSON last: an entry without
its JSON, or whose pixel file has the wrong size, is rebuilt. A file lock per key makes
concurrent loaders on one node (the ranks of one pod) decode once; the others wait and map it.
"""

from __future__ import annotations

import json
import logging
import re
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from filelock import FileLock

from sslmem.atomic import atomic_path, atomic_write_bytes
from sslmem.errors import DataError

__all__ = ["DecodedImages", "load_decoded"]

logger = logging.getLogger(__name__)

_FORMAT = 1
_KEY = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")

#: Yields ``(image, label)``: ``[H, W]`` grey or ``[H, W, 3]`` RGB ``uint8`` images, all of one
#: ``(H, W)``, in dataset order.
SampleSource = Callable[[], Iterable[tuple[npt.NDArray[np.uint8], int]]]


@dataclass(frozen=True, eq=False)
class DecodedImages:
    """A decoded dataset, its pixels memory-mapped from the node-local file.

    Attributes:
        images: ``uint8 [N, C, H, W]``, mapped copy-on-write from :attr:`path` (writes stay in
            the process; the file is never modified).
        labels: ``int64 [N]`` (resident: 8 bytes per image).
        path: The pixel file.

    """

    images: torch.Tensor
    labels: torch.Tensor
    path: Path


class _ColourAfterGreyError(Exception):
    """A colour image followed grey ones: decode again with every image as RGB."""


def _write_pixels(
    path: Path, samples: SampleSource, rgb: bool
) -> tuple[tuple[int, int, int, int], array[int]]:
    """Stream ``samples`` into ``path`` as ``[C, H, W]`` rows; return the shape and labels."""
    labels: array[int] = array("q")
    first: tuple[int, ...] | None = None
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        for image, label in samples():
            if image.ndim == 3 and not rgb:
                if first is not None:
                    raise _ColourAfterGreyError
                rgb = True
            chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
            if rgb and chw.shape[0] == 1:
                chw = np.repeat(chw, 3, axis=0)  # a grey image in a colour set
            if first is None:
                first = chw.shape
            elif chw.shape != first:  # pragma: no cover - sources resize to the first size
                raise DataError(f"image {len(labels)} has shape {chw.shape}, not {first}")
            handle.write(np.ascontiguousarray(chw, dtype=np.uint8).tobytes())
            labels.append(int(label))
        if first is None:  # inside the block: the empty temporary file is removed
            raise DataError(f"no images to decode into {path}")
        handle.flush()
    channels, height, width = first
    return (len(labels), channels, height, width), labels


def _open(path: Path, meta: Path, labels_path: Path) -> DecodedImages | None:
    """Map an existing complete entry; ``None`` if it is missing or incomplete."""
    try:
        document = json.loads(meta.read_text())
        shape = tuple(int(v) for v in document["shape"])
        if document.get("format") != _FORMAT or len(shape) != 4:
            return None
        if path.stat().st_size != int(np.prod(shape)):
            return None
        labels = np.load(labels_path, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if labels.shape != (shape[0],) or labels.dtype != np.int64:
        return None
    # mode "c": a writable array (torch refuses to wrap read-only ones silently) whose writes
    # never reach the file.
    pixels = np.memmap(path, dtype=np.uint8, mode="c", shape=shape)
    return DecodedImages(torch.from_numpy(pixels), torch.from_numpy(labels), path)


def load_decoded(root: Path, key: str, samples: SampleSource) -> DecodedImages:
    """Map the decoded entry ``key`` under ``root``, decoding ``samples`` first if needed.

    Args:
        root: The node-local directory of decoded entries (created if missing).
        key: Names the entry; it must identify the source exactly (e.g. the listing hash and
            the image size), since an existing entry is trusted without decoding anything.
        samples: Called (at most twice: once more if a colour image follows grey ones) to
            stream the images in dataset order.

    Returns:
        The mapped images ``uint8 [N, C, H, W]`` and labels ``int64 [N]``; a set mixing grey
        and colour images is all RGB (grey replicated), as for in-memory loading.

    Raises:
        DataError: ``key`` is not a plain file name, or the source yields no images.
        OSError: ``root`` cannot be written (nothing partial is left behind).

    """
    if not _KEY.match(key):
        raise DataError(f"decoded-cache key {key!r} is not a plain file name")
    root.mkdir(parents=True, exist_ok=True)
    path, meta = root / f"{key}.u8", root / f"{key}.json"
    labels_path = root / f"{key}.labels.npy"
    with FileLock(str(root / f"{key}.lock")):
        found = _open(path, meta, labels_path)
        if found is not None:
            return found
        logger.info("decoding %s into %s (once per node)", key, path)
        try:
            shape, labels = _write_pixels(path, samples, rgb=False)
        except _ColourAfterGreyError:
            shape, labels = _write_pixels(path, samples, rgb=True)
        with atomic_path(labels_path, suffix=".npy") as tmp:
            np.save(tmp, np.frombuffer(labels, dtype=np.int64), allow_pickle=False)
        document = {"format": _FORMAT, "shape": list(shape), "dtype": "uint8"}
        atomic_write_bytes(meta, json.dumps(document).encode())  # last: marks the entry done
        found = _open(path, meta, labels_path)
    if found is None:  # pragma: no cover - just written under the lock
        raise DataError(f"decoded cache {path} could not be read back after writing")
    return found
