"""Datasets in S3: image class folders or WebDataset tar shards, cached per node.

A dataset URI ``s3://bucket/prefix/`` (endpoint and credentials from ``SSLMEM_S3_*``) holds

* class folders: ``prefix/<class>/<image>.png|jpg|...``; labels are the sorted folder names;
* or WebDataset shards: ``prefix/*.tar``, each sample an image (``png``/``jpg``/``jpeg``) and an
  integer ``cls``, read with the ``webdataset`` library.

Either may be split as ``prefix/{train,test}/...``. The dataset's identity is the SHA-256 of its
listing (key, size, ETag of every object used, sorted by key): split manifests record it, so a
manifest made before an object was added, removed or replaced is refused without decoding any
pixel.

Reading streams: objects are downloaded one at a time (a shard just before it is read) into a
node-local cache (``SSLMEM_DATA_DIR/s3-cache`` or ``--data-root``), one file per (object, ETag),
written atomically, and decoded one image at a time into a memory-mapped ``uint8`` file
(:mod:`sslmem.data.decoded`), so neither the download nor the decoding holds the dataset in
memory, and training and scoring read pages of the mapped file as they need them. A re-run on
the node only lists the bucket and maps the decoded file.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sslmem.atomic import atomic_write_bytes
from sslmem.data.decoded import load_decoded
from sslmem.data.images import IMAGE_SUFFIXES, ImageDataset, ImageSize, Split, read_image
from sslmem.data.store import ObjectInfo, S3Store, open_store
from sslmem.errors import DataError, StoreError

if TYPE_CHECKING:
    from sslmem.config import RuntimeSettings

__all__ = ["ObjectCache", "S3Listing", "WebDatasetShards", "list_s3_dataset", "load_s3_dataset"]

_LISTING_FORMAT = b"sslmem-s3-listing-v1"
_INDEX_FORMAT = 1
# Bump when decoding changes (colour conversion, resampling): decoded copies are then rebuilt.
_DECODE_FORMAT = 1
_IMAGE_KEYS = ("png", "jpg", "jpeg")
# WebDataset's sample key rule (webdataset.tariterators.base_plus_ext): everything up to the
# first dot of the file name is the sample key, the rest the field name.
_KEY_SPLIT = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")


@dataclass(frozen=True)
class S3Listing:
    """The objects a dataset is made of.

    Attributes:
        uri: Canonical dataset URI, ``s3://bucket/prefix/`` (the dataset's name).
        kind: ``"folders"`` (``<class>/<image>``) or ``"webdataset"`` (``*.tar`` shards).
        objects: The objects used, sorted by key; keys are relative to the store prefix.
    """

    uri: str
    kind: str
    objects: tuple[ObjectInfo, ...]

    @cached_property
    def sha256(self) -> str:
        """SHA-256 over ``key, size, etag`` of every object, in key order."""
        digest = hashlib.sha256(_LISTING_FORMAT)
        for info in self.objects:
            digest.update(f"\n{info.key}\t{info.size}\t{info.etag}".encode())
        return digest.hexdigest()


class ObjectCache:
    """Node-local copies of S3 objects, one file per (object, ETag).

    A replaced object has a new ETag and hence a new cache file; a cache file is written through a
    temporary file and renamed, so a crash never leaves a partial copy that a later run trusts.

    Args:
        store: The store the objects come from.
        root: Cache directory (created on the first download).

    """

    def __init__(self, store: S3Store, root: Path) -> None:
        self.store = store
        self.root = root
        # Two endpoints or buckets may hold the same key: the source is part of the file name.
        self._source = f"{store.endpoint}/{store.bucket}/{store.prefix}"

    def path(self, info: ObjectInfo) -> Path:
        """Where ``info``'s bytes are (or will be) cached."""
        digest = hashlib.sha256(f"{self._source}{info.key}".encode()).hexdigest()[:32]
        etag = re.sub(r"[^0-9A-Za-z-]", "_", info.etag) or "none"
        suffix = Path(info.key).suffix.lower()
        return self.root / "objects" / digest[:2] / f"{digest}-{etag}{suffix}"

    def fetch(self, info: ObjectInfo) -> Path:
        """The cached file of ``info``, downloaded (streaming, atomically) if not cached yet.

        Raises:
            StoreError: The object cannot be downloaded or the cache cannot be written.

        """
        path = self.path(info)
        if path.is_file() and path.stat().st_size == info.size:
            return path
        self.store.get_file(info.key, path)
        return path


def _open_s3_store(uri: str, settings: RuntimeSettings | None) -> S3Store:
    store = open_store(uri, settings)
    if not isinstance(store, S3Store):  # pragma: no cover - the s3 scheme opens an S3Store
        raise StoreError(f"{uri} did not open an S3 store")
    return store


def _split_head(uri: str, objects: Sequence[ObjectInfo], split: Split) -> str:
    """``"train/"`` or ``"test/"`` if the dataset has both folders, else ``""`` (train only)."""
    tops = {info.key.split("/", 1)[0] for info in objects if "/" in info.key}
    if {"train", "test"} <= tops:
        return f"{split}/"
    if split == "test":
        raise DataError(
            f"dataset {uri} has no test split",
            f"put test data under {uri}test/ and training data under {uri}train/",
        )
    return ""


def list_s3_dataset(
    uri: str,
    *,
    split: Split = "train",
    settings: RuntimeSettings | None = None,
    store: S3Store | None = None,
) -> tuple[S3Listing, S3Store]:
    """List the objects of an S3 dataset (one LIST request per 1,000 objects; nothing is read).

    Args:
        uri: ``s3://bucket/prefix/``.
        split: ``"train"`` or ``"test"`` (``prefix/{train,test}/`` if both exist).
        settings: Endpoint and credentials; read from the environment when omitted.
        store: An already opened store for ``uri`` (settings are then ignored).

    Returns:
        The listing (its keys carry the split folder, if any) and the store.

    Raises:
        StoreError: Bad URI, unknown bucket, refused credentials or unreachable endpoint.
        DataError: No images or shards under the prefix.

    """
    store = store or _open_s3_store(uri, settings)
    name = store.uri("")
    everything = store.list_info()
    head = _split_head(name, everything, split)
    chosen = [
        ObjectInfo(info.key[len(head) :], info.size, info.etag)
        for info in everything
        if info.key.startswith(head)
    ]
    shards = [info for info in chosen if info.key.lower().endswith(".tar")]
    if shards:
        kind, used = "webdataset", shards
    else:
        kind = "folders"
        used = [
            info
            for info in chosen
            if info.key.count("/") == 1
            and Path(info.key).suffix.lower() in IMAGE_SUFFIXES
            and not Path(info.key).name.startswith(".")
        ]
    if not used:
        raise DataError(
            f"dataset {name} holds no images in class folders and no .tar shards",
            f"upload images as {name}<class>/<image>.png (or .jpg), or WebDataset shards as "
            f"{name}<shard>.tar; check the bucket and prefix",
        )
    # Keys in the listing are relative to the store prefix, so that the same cache serves them.
    full = tuple(ObjectInfo(head + i.key, i.size, i.etag) for i in sorted(used, key=_key))
    return S3Listing(uri=name, kind=kind, objects=full), store


def _key(info: ObjectInfo) -> str:
    return info.key


def _default_cache_dir(settings: RuntimeSettings | None) -> Path:
    from sslmem.config import RuntimeSettings  # deferred: settings read the environment

    return (settings or RuntimeSettings()).data_dir / "s3-cache"


def _folder_samples(
    listing: S3Listing, cache: ObjectCache, image_size: ImageSize | None
) -> Iterator[tuple[npt.NDArray[np.uint8], int]]:
    """Decode class-folder images in key order (class folder, then file name), one at a time."""
    label_of = {name: k for k, name in enumerate(_folder_classes(listing))}
    for info in listing.objects:
        # Every image after the first is resized to the first one's size unless given.
        array = read_image(cache.fetch(info), image_size, name=f"{listing.uri}{info.key}")
        image_size = image_size or (array.shape[0], array.shape[1])
        yield array, label_of[info.key.rsplit("/", 2)[-2]]


def _folder_classes(listing: S3Listing) -> list[str]:
    return sorted({info.key.rsplit("/", 2)[-2] for info in listing.objects})


@dataclass(frozen=True)
class _Entry:
    """Where one WebDataset sample's image lies: shard, tar member, byte range; and its label."""

    shard: int
    key: str
    member: str
    offset: int
    size: int
    label: int


class WebDatasetShards:
    """WebDataset tar shards in S3: an index for random access, and shard-by-shard streaming.

    The index (shard, member, byte offset and label of every sample, in shard order then tar
    order -- the order streaming yields them) is built once per listing and cached next to the
    shards as JSON, so dataset index ``i`` maps to the same image on every node and every run.

    Args:
        listing: A ``"webdataset"`` listing (:func:`list_s3_dataset`).
        cache: Where the shards are cached.

    """

    def __init__(self, listing: S3Listing, cache: ObjectCache) -> None:
        if listing.kind != "webdataset":
            raise DataError(f"dataset {listing.uri} is not made of WebDataset .tar shards")
        self.listing = listing
        self.cache = cache

    @cached_property
    def index(self) -> tuple[_Entry, ...]:
        """One entry per sample, dataset order (built once per listing, then read from cache)."""
        path = self.cache.root / "index" / f"{self.listing.sha256}.json"
        if path.is_file():
            document = json.loads(path.read_text())
            if document.get("format") == _INDEX_FORMAT:
                return tuple(_Entry(*row) for row in document["samples"])
        entries = tuple(
            entry for shard in range(len(self.listing.objects)) for entry in self._scan(shard)
        )
        rows = [
            [e.shard, e.key, e.member, e.offset, e.size, e.label] for e in entries
        ]  # compact: one small list per sample
        payload = {"format": _INDEX_FORMAT, "uri": self.listing.uri, "samples": rows}
        atomic_write_bytes(path, json.dumps(payload, separators=(",", ":")).encode())
        return entries

    def _scan(self, shard: int) -> list[_Entry]:
        """Index one shard with :mod:`tarfile` (member offsets), grouping as WebDataset does."""
        info = self.listing.objects[shard]
        name = f"{self.listing.uri}{info.key}"
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        order: list[str] = []
        try:
            with tarfile.open(self.cache.fetch(info), "r:") as tar:
                labels: dict[str, bytes] = {}
                for member in tar:
                    match = _KEY_SPLIT.match(member.name)
                    if not member.isfile() or match is None:
                        continue
                    key, field = match.group(1), match.group(2).lower()
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    samples[key][field] = member
                    if field == "cls":
                        handle = tar.extractfile(member)
                        labels[key] = handle.read() if handle is not None else b""
        except tarfile.TarError as exc:
            raise DataError(f"shard {name} is not a valid tar file: {exc}") from exc
        entries: list[_Entry] = []
        for key in order:
            fields = samples[key]
            image = next((fields[k] for k in _IMAGE_KEYS if k in fields), None)
            if image is None or key not in labels:
                raise _incomplete(key, name)
            entries.append(
                _Entry(
                    shard,
                    key,
                    image.name,
                    image.offset_data,
                    image.size,
                    _label(labels[key], key, name),
                )
            )
        return entries

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """``int64 [N]`` labels in dataset order."""
        return np.asarray([entry.label for entry in self.index], dtype=np.int64)

    def image(self, i: int, size: ImageSize | None = None) -> npt.NDArray[np.uint8]:
        """Decode sample ``i`` (dataset order) by seeking into its cached shard.

        Returns:
            ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) ``uint8``.

        Raises:
            DataError: ``i`` is out of range or the image cannot be decoded.

        """
        if not 0 <= i < len(self):
            raise DataError(f"sample index {i} out of range [0, {len(self)}) of {self.listing.uri}")
        entry = self.index[i]
        info = self.listing.objects[entry.shard]
        with self.cache.fetch(info).open("rb") as handle:
            handle.seek(entry.offset)
            data = handle.read(entry.size)
        name = f"{self.listing.uri}{info.key}:{entry.member}"
        return read_image(io.BytesIO(data), size, name=name)

    def stream(self, size: ImageSize | None = None) -> Iterator[tuple[npt.NDArray[np.uint8], int]]:
        """Yield ``(image, label)`` in dataset order, one shard at a time, with ``webdataset``.

        Each shard is fetched into the cache just before it is read, so a node holds only the
        shards it has reached and the consumer sees the first images before the last shard is
        downloaded.

        Args:
            size: Resize every image to ``(H, W)``; default the first image's size.

        """
        import webdataset as wds

        for info in self.listing.objects:
            path = self.cache.fetch(info)
            name = f"{self.listing.uri}{info.key}"
            pipeline = wds.WebDataset(str(path), shardshuffle=False, empty_check=False)
            for sample in pipeline:
                key = str(sample["__key__"])
                image = next((sample[k] for k in _IMAGE_KEYS if k in sample), None)
                if image is None or "cls" not in sample:
                    raise _incomplete(key, name)
                array = read_image(io.BytesIO(image), size, name=f"{name}:{key}")
                size = size or (array.shape[0], array.shape[1])
                yield array, _label(sample["cls"], key, name)


def _incomplete(key: str, shard: str) -> DataError:
    return DataError(
        f"sample {key!r} in shard {shard} lacks an image (png/jpg/jpeg) or a cls label",
        "write every sample with an image and a 'cls' entry (the WebDataset convention)",
    )


def _label(raw: bytes, key: str, shard: str) -> int:
    try:
        value = int(raw.decode().strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(
            f"sample {key!r} in shard {shard}: cls {raw[:20]!r} is not an integer",
            "store the class index as decimal text in the 'cls' entry",
        ) from exc
    if value < 0:
        raise DataError(f"sample {key!r} in shard {shard}: cls {value} is negative")
    return value


def _size_tag(image_size: ImageSize | None) -> str:
    return f"{image_size[0]}x{image_size[1]}" if image_size else "native"


def load_s3_dataset(
    uri: str,
    *,
    split: Split = "train",
    cache_dir: Path | None = None,
    image_size: ImageSize | None = None,
    settings: RuntimeSettings | None = None,
    store: S3Store | None = None,
) -> ImageDataset:
    """Load an S3 dataset (class folders or WebDataset shards), memory-mapped from the cache.

    The first load on a node streams the objects (one image, or one shard, at a time) through
    the object cache into a decoded ``uint8 [N, C, H, W]`` file (:mod:`sslmem.data.decoded`);
    every later load with the same listing and image size maps that file without downloading
    or decoding anything -- it only lists the bucket, to detect a changed dataset.

    Args:
        uri: ``s3://bucket/prefix/``.
        split: ``"train"`` or ``"test"``.
        cache_dir: Node-local cache; default ``SSLMEM_DATA_DIR/s3-cache``.
        image_size: Resize every image to ``(H, W)``; default the first image's size.
        settings: Endpoint and credentials; read from the environment when omitted.
        store: An already opened store for ``uri`` (settings are then ignored).

    Returns:
        Images ``uint8 [N, C, H, W]`` (memory-mapped: ``mapped_from`` names the file), labels
        ``int64 [N]``, named by the canonical URI, with ``source_sha256`` the listing hash.

    Raises:
        StoreError: Bad URI, unknown bucket, refused credentials or unreachable endpoint.
        DataError: No images or shards, or an object that cannot be decoded.

    """
    listing, store = list_s3_dataset(uri, split=split, settings=settings, store=store)
    cache = ObjectCache(store, cache_dir or _default_cache_dir(settings))
    samples: Callable[[], Iterable[tuple[npt.NDArray[np.uint8], int]]]
    if listing.kind == "webdataset":
        shards = WebDatasetShards(listing, cache)
        samples = partial(shards.stream, image_size)
    else:
        samples = partial(_folder_samples, listing, cache, image_size)
    # The key names exactly what was decoded: the listing (hence every object's bytes), the
    # size and the decoding rules' version.
    key = f"{listing.sha256}-{_size_tag(image_size)}-v{_DECODE_FORMAT}"
    decoded = load_decoded(cache.root / "decoded", key, samples)
    if listing.kind == "webdataset":
        classes = tuple(str(k) for k in range(int(decoded.labels.max()) + 1))
    else:
        classes = tuple(_folder_classes(listing))
    return ImageDataset(
        name=listing.uri,
        images=decoded.images,
        labels=decoded.labels,
        classes=classes,
        split=split,
        source_sha256=listing.sha256,
        mapped_from=decoded.path,
    )
