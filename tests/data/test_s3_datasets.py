"""Datasets in S3 (class folders and WebDataset shards) against a real S3 server (SeaweedFS).

The expectation is always the bundled pixels written into the uploaded PNGs (PNG is lossless),
in the order fixed by hand: classes sorted by folder name, files sorted within a class; for the
shards, tar order.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import urllib3
from minio import Minio
from PIL import Image

from sslmem.cli import main
from sslmem.data import load_dataset, make_split
from sslmem.data.s3 import ObjectCache, WebDatasetShards, list_s3_dataset, load_s3_dataset
from sslmem.data.store import S3Store
from sslmem.errors import DataError, ManifestMismatchError, StoreError
from tests.servers import S3Server

# Three class folders, deliberately not uploaded in sorted order; sorted: bag, coat, trouser.
FOLDERS = {"trouser": [1, 2, 3], "bag": [4, 5], "coat": [6, 7, 8, 9]}


def _bundled() -> npt.NDArray[np.uint8]:
    """``[N, 28, 28]`` grey bundled training images."""
    return load_dataset("bundled").images[:, 0].numpy()


def _png(array: npt.NDArray[np.uint8]) -> bytes:
    # Uncompressed: every 28x28 PNG has the same size, so a replaced object differs in ETag only.
    out = io.BytesIO()
    Image.fromarray(array, mode="L").save(out, format="PNG", compress_level=0)
    return out.getvalue()


def _client(server: S3Server) -> Minio:
    return Minio(
        server.endpoint, access_key=server.access_key, secret_key=server.secret_key, secure=False
    )


def _put(server: S3Server, bucket: str, key: str, data: bytes) -> None:
    _client(server).put_object(bucket, key, io.BytesIO(data), len(data))


class CountingPool(urllib3.PoolManager):
    """A real connection pool that records every request's method and URL."""

    def __init__(self) -> None:
        super().__init__(timeout=urllib3.Timeout(connect=2, read=30))
        self.requests: list[tuple[str, str]] = []

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        self.requests.append((method, url))
        return super().urlopen(method, url, redirect=redirect, **kw)

    def object_reads(self) -> int:
        """GETs of objects (a listing is a GET of the bucket with a query string)."""
        return sum(1 for method, url in self.requests if method == "GET" and "?" not in url)


def _store(server: S3Server, bucket: str, prefix: str, pool: CountingPool) -> S3Store:
    return server.s3_store(bucket, prefix, http_client=pool)


@pytest.fixture
def folders(s3_server: S3Server) -> tuple[str, npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """A bucket with ``imgs/<class>/<n>.png``; the expected images ``[9, 28, 28]`` and labels."""
    bucket = s3_server.make_bucket("s3data")
    bundled = _bundled()
    for name, indices in FOLDERS.items():
        for i in indices:
            _put(s3_server, bucket, f"imgs/{name}/{i:03d}.png", _png(bundled[i]))
    _put(s3_server, bucket, "imgs/README.txt", b"not an image: ignored")
    order = [*FOLDERS["bag"], *FOLDERS["coat"], *FOLDERS["trouser"]]
    labels = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2], dtype=np.int64)
    return f"s3://{bucket}/imgs/", bundled[order], labels


def _tar(samples: list[tuple[str, bytes, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for key, png, label in samples:
            for name, data in ((f"{key}.png", png), (f"{key}.cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def shards(s3_server: S3Server) -> tuple[str, npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Two WebDataset shards of 3 and 4 samples; expected images ``[7, 28, 28]`` and labels."""
    bucket = s3_server.make_bucket("s3wds")
    bundled = _bundled()
    picks = [(10, 3), (11, 0), (12, 3), (13, 1), (14, 1), (15, 0), (16, 2)]
    samples = [(f"s{i:04d}", _png(bundled[i]), label) for i, label in picks]
    _put(s3_server, bucket, "wds/shard-000001.tar", _tar(samples[3:]))
    _put(s3_server, bucket, "wds/shard-000000.tar", _tar(samples[:3]))
    images = bundled[[i for i, _ in picks]]
    return f"s3://{bucket}/wds/", images, np.array([lab for _, lab in picks], dtype=np.int64)


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix


def test_class_folders_equal_the_uploaded_pngs_and_rerun_reads_the_cache(
    s3_server: S3Server, folders: tuple[str, Any, Any], tmp_path: Path
) -> None:
    uri, images, labels = folders
    bucket, prefix = _split_uri(uri)
    first = CountingPool()
    data = load_s3_dataset(uri, cache_dir=tmp_path, store=_store(s3_server, bucket, prefix, first))
    assert data.name == uri
    assert data.classes == ("bag", "coat", "trouser")
    np.testing.assert_array_equal(data.images[:, 0].numpy(), images)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    assert first.object_reads() == 9  # every image downloaded once; README not read

    again = CountingPool()
    cached = load_s3_dataset(
        uri, cache_dir=tmp_path, store=_store(s3_server, bucket, prefix, again)
    )
    assert again.object_reads() == 0  # listed only; every image came from the cache
    np.testing.assert_array_equal(cached.images.numpy(), data.images.numpy())
    assert cached.source_sha256 == data.source_sha256


def test_webdataset_shards_stream_and_index_equal_the_uploaded_pngs(
    s3_server: S3Server, shards: tuple[str, Any, Any], tmp_path: Path
) -> None:
    uri, images, labels = shards
    bucket, prefix = _split_uri(uri)
    pool = CountingPool()
    store = _store(s3_server, bucket, prefix, pool)
    data = load_s3_dataset(uri, cache_dir=tmp_path, store=store)
    np.testing.assert_array_equal(data.images[:, 0].numpy(), images)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    assert data.classes == ("0", "1", "2", "3")
    assert pool.object_reads() == 2  # two shards, each downloaded once

    # Indexed access (the scoring protocol's dataset index -> image), in reverse order.
    listing, _ = list_s3_dataset(uri, store=store)
    access = WebDatasetShards(listing, ObjectCache(store, tmp_path))
    assert len(access) == 7
    for i in reversed(range(7)):
        np.testing.assert_array_equal(access.image(i), images[i])
    np.testing.assert_array_equal(access.labels, labels)
    index_files = list((tmp_path / "index").glob("*.json"))
    assert [p.stem for p in index_files] == [listing.sha256]
    assert len(json.loads(index_files[0].read_text())["samples"]) == 7
    with pytest.raises(DataError, match="out of range"):
        access.image(7)


def test_a_changed_bucket_changes_the_listing_hash_and_refuses_the_old_manifest(
    s3_server: S3Server, folders: tuple[str, Any, Any], tmp_path: Path
) -> None:
    uri, images, _ = folders
    bucket, prefix = _split_uri(uri)
    store = _store(s3_server, bucket, prefix, CountingPool())
    before = load_s3_dataset(uri, cache_dir=tmp_path, store=store)
    manifest = make_split(before)
    assert manifest.dataset.name == uri
    assert manifest.dataset.content_sha256 == before.source_sha256
    manifest.verify_against(load_s3_dataset(uri, cache_dir=tmp_path, store=store))

    replacement = _bundled()[100]
    assert not np.array_equal(replacement, images[0])
    assert len(_png(replacement)) == len(_png(images[0]))  # same size: only the ETag tells
    _put(s3_server, bucket, f"{prefix}bag/004.png", _png(replacement))  # first sample (bag/004)
    after = load_s3_dataset(uri, cache_dir=tmp_path, store=store)
    assert after.source_sha256 != before.source_sha256
    # The replaced object has a new ETag: the cache serves the new bytes, not the stale ones.
    np.testing.assert_array_equal(after.images[0, 0].numpy(), replacement)
    with pytest.raises(ManifestMismatchError) as caught:
        manifest.verify_against(after)
    message = str(caught.value)
    assert uri in message and "older listing" in message
    assert f"sslmem split --data {uri}" in message


def test_bad_uri_bucket_prefix_and_credentials_are_clear_errors(
    s3_server: S3Server, folders: tuple[str, Any, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    uri, _, _ = folders
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SSLMEM_STORE_RETRIES", "0")
    with pytest.raises(StoreError, match="has no bucket"):
        load_dataset("s3:///imgs/", root=tmp_path)
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-x1' does not exist"):
        load_dataset("s3://no-such-bucket-x1/imgs/", root=tmp_path)
    with pytest.raises(DataError, match=r"no images in class folders and no \.tar shards") as empty:
        load_dataset(uri.replace("/imgs/", "/nothing/"), root=tmp_path)
    assert empty.value.fix is not None and "<class>/<image>.png" in empty.value.fix
    with pytest.raises(DataError, match="has no test split"):
        load_dataset(uri, split="test", root=tmp_path)
    monkeypatch.setenv("SSLMEM_S3_SECRET_KEY", "wrong-secret-value")
    with pytest.raises(StoreError, match="refused") as refused:
        load_dataset(uri, root=tmp_path)
    assert "SSLMEM_S3_SECRET_KEY" in str(refused.value)
    assert "wrong-secret-value" not in str(refused.value)
    assert not any(tmp_path.rglob("*.png"))  # nothing cached from a refused listing


def test_sslmem_split_on_s3_images_end_to_end(
    s3_server: S3Server, folders: tuple[str, Any, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    uri, images, labels = folders
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SSLMEM_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "split.json"
    argv = ["split", "--set", f"data.dataset={uri}", "--pool-size", "8", "--out", str(out)]
    assert main(argv) == 0
    document = json.loads(out.read_text())
    assert document["dataset"]["name"] == uri
    assert document["dataset"]["num_samples"] == 9
    # The node-local cache holds one copy of each image, byte-for-byte the uploaded PNG.
    cached = sorted((tmp_path / "data" / "s3-cache" / "objects").rglob("*.png"))
    assert sorted(p.read_bytes() for p in cached) == sorted(_png(image) for image in images)
    # The manifest loads its dataset back by name (as train and score do) and verifies.
    from sslmem.data.splits import load_manifest, manifest_dataset

    manifest = load_manifest(out)
    dataset = manifest_dataset(manifest)
    manifest.verify_against(dataset)
    np.testing.assert_array_equal(dataset.labels.numpy(), labels)


def test_images_are_resized_to_image_size(
    s3_server: S3Server, folders: tuple[str, Any, Any], tmp_path: Path
) -> None:
    uri, images, _ = folders
    bucket, prefix = _split_uri(uri)
    store = _store(s3_server, bucket, prefix, CountingPool())
    data = load_s3_dataset(uri, cache_dir=tmp_path, store=store, image_size=(14, 14))
    assert list(data.images.shape) == [9, 1, 14, 14]
    # Independent reference: PIL's bilinear resize of the uploaded image.
    expected = Image.fromarray(images[0], mode="L").resize((14, 14), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(data.images[0, 0].numpy(), np.asarray(expected))


def test_a_shard_sample_without_a_label_is_a_clear_error(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket("s3bad")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        png = _png(_bundled()[0])
        info = tarfile.TarInfo("k0.png")
        info.size = len(png)
        tar.addfile(info, io.BytesIO(png))
    _put(s3_server, bucket, "wds/shard-0.tar", out.getvalue())
    store = _store(s3_server, bucket, "wds", CountingPool())
    with pytest.raises(DataError, match=r"sample 'k0' in shard s3://.*shard-0\.tar lacks") as bad:
        load_s3_dataset(f"s3://{bucket}/wds/", cache_dir=tmp_path, store=store)
    assert bad.value.fix is not None and "'cls'" in bad.value.fix


def _split_train_score(data: list[str], root: Path, data_root: list[str]) -> Any:
    """``sslmem split``, ``train`` (candidate, reference), ``score`` through the CLI; the scores.

    ``data_root`` is passed to train and score (a local folder's manifest names no directory).
    """
    import pyarrow.parquet as pq

    tiny = ["--set", "model.arch_kwargs={widths: [8, 8, 8]}", "--set", "model.head_hidden_dim=16",
            "--set", "model.head_output_dim=16"]  # fmt: skip
    split = root / "split.json"
    assert main(["split", *data, "--out", str(split)]) == 0
    for role in ("candidate", "reference"):
        argv = ["train", "--split", str(split), "--role", role, "--epochs", "1",
                "--batch-size", "16", *tiny, *data_root, "--no-progress",
                "--out", str(root / role)]  # fmt: skip
        assert main(argv) == 0
    argv = ["score", "--candidate", str(root / "candidate" / "encoder.safetensors"),
            "--reference", str(root / "reference" / "encoder.safetensors"), "--split", str(split),
            "--views", "2", "--no-plots", *data_root, "--no-progress",
            "--out", str(root / "scores")]  # fmt: skip
    assert main(argv) == 0
    return pq.read_table(root / "scores" / "scores.parquet").to_pandas()


@pytest.mark.slow
def test_split_train_and_score_on_s3_equal_the_same_pngs_in_a_local_folder(
    s3_server: S3Server, tmp_path: Path, monkeypatch: Any
) -> None:
    """The streamed, memory-mapped S3 path gives the scores of the in-memory folder loader."""
    bucket = s3_server.make_bucket("s3e2e")
    bundled = _bundled()
    for k in range(60):
        name, png = f"class{k % 4}/{k:03d}.png", _png(bundled[k])
        _put(s3_server, bucket, f"imgs/{name}", png)
        (tmp_path / "folder" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / name).write_bytes(png)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SSLMEM_DATA_DIR", str(tmp_path / "node"))
    s3 = _split_train_score(["--set", f"data.dataset=s3://{bucket}/imgs/"], tmp_path / "s3", [])
    folder = ["--set", f"data.root={tmp_path / 'folder'}"]
    local = _split_train_score(
        ["--set", "data.dataset=folder", *folder], tmp_path / "local", folder
    )
    # The S3 run read the decoded, memory-mapped copy (one file per node), not resident pixels.
    assert len(list((tmp_path / "node" / "s3-cache" / "decoded").glob("*.u8"))) == 1
    assert len(s3) == len(local) > 0
    assert s3["sample_index"].tolist() == local["sample_index"].tolist()
    for column in ("sslmem_raw", "candidate_alignment", "reference_alignment"):
        np.testing.assert_array_equal(s3[column].to_numpy(), local[column].to_numpy())
