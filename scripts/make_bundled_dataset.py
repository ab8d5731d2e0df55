"""Regenerate the Fashion-MNIST subset bundled with sslmem, reproducibly.

Draws a stratified, seeded subset from Debian's ``dataset-fashion-mnist``
(``apt-get install dataset-fashion-mnist``): 400 images per class from the training set (4,000)
and 100 per class from the test set (1,000), kept in their original order. Writes
``src/sslmem/data/bundled/fashion_mnist_subset.npz`` with keys ``train_images`` (uint8
[4000, 28, 28]), ``train_labels`` (uint8 [4000]), ``test_images`` (uint8 [1000, 28, 28]) and
``test_labels`` (uint8 [1000]).

``np.savez_compressed`` stamps each zip member with the current time, so its output differs on
every run; this script writes the zip itself with a fixed timestamp and fixed member attributes,
so a re-run on the same numpy/zlib produces a byte-identical file.

Usage: python scripts/make_bundled_dataset.py [--source DIR] [--output FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sslmem.data.datasets import DEBIAN_FASHION_MNIST_DIR, read_idx

SEED = 20240123  # fixed: changing it changes the bundled data and every hash derived from it
PER_CLASS = {"train": 400, "t10k": 100}
OUTPUT = Path(__file__).resolve().parents[1] / "src/sslmem/data/bundled/fashion_mnist_subset.npz"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold


def stratified_indices(
    labels: npt.NDArray[np.uint8], per_class: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Pick ``per_class`` random indices of every class; returned sorted (original order)."""
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in np.unique(labels)
    ]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def write_deterministic_npz(path: Path, arrays: dict[str, npt.NDArray[np.uint8]]) -> None:
    """Write an ``.npz`` (deflated ``.npy`` members) with no time- or host-dependent bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever the host
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue(), compresslevel=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_FASHION_MNIST_DIR)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()

    rng = np.random.Generator(np.random.PCG64(SEED))
    arrays: dict[str, npt.NDArray[np.uint8]] = {}
    for prefix, split in (("train", "train"), ("t10k", "test")):
        images = read_idx(args.source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{prefix}-labels-idx1-ubyte.gz")
        keep = stratified_indices(labels, PER_CLASS[prefix], rng)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[keep], labels[keep]

    write_deterministic_npz(args.output, arrays)
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()
