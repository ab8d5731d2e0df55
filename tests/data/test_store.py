from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from sslmem.config import RuntimeSettings
from sslmem.data import store as store_module
from sslmem.data.store import (
    LocalStore,
    ObjectStore,
    S3Store,
    open_store,
    read_bytes,
    register_store_scheme,
    write_bytes,
)
from sslmem.errors import StoreError
from tests.servers import S3Server, free_port


def _settings(server: S3Server | None = None, **overrides: object) -> RuntimeSettings:
    values: dict[str, object] = {"s3_secure": False, "store_retries": 1}
    if server is not None:
        values.update(
            s3_endpoint=server.endpoint,
            s3_access_key=server.access_key,
            s3_secret_key=server.secret_key,
        )
    values.update(overrides)
    return RuntimeSettings.model_validate(values)


def _s3_store(
    server: S3Server, bucket: str, prefix: str = "", *, create_bucket: bool = False
) -> S3Store:
    return server.s3_store(bucket, prefix, create_bucket=create_bucket)


def _bucket() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- local store


def test_local_roundtrip_and_uri(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    assert not store.exists("a/b.bin")
    store.put_bytes("a/b.bin", b"\x00\x01payload")
    assert store.exists("a/b.bin")
    assert store.get_bytes("a/b.bin") == b"\x00\x01payload"
    store.put_bytes("a/b.bin", b"new")
    assert store.get_bytes("a/b.bin") == b"new"
    assert store.uri("a/b.bin") == (tmp_path / "root" / "a" / "b.bin").resolve().as_uri()


def test_local_list_is_sorted_and_filters_by_prefix(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for key in ["z.txt", "m/2.txt", "m/1.txt", "mx.txt", "other/deep/x"]:
        store.put_bytes(key, key.encode())
    assert store.list() == ["m/1.txt", "m/2.txt", "mx.txt", "other/deep/x", "z.txt"]
    assert store.list("m/") == ["m/1.txt", "m/2.txt"]
    assert store.list("m") == ["m/1.txt", "m/2.txt", "mx.txt"]
    assert store.list("nothing") == []
    assert LocalStore(tmp_path / "absent").list() == []


def test_local_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("k/obj", b"x" * 10_000)
    src = tmp_path / "src.bin"
    src.write_bytes(b"file-content")
    store.put_file("k/file", src)
    store.get_file("k/file", tmp_path / "out" / "copy.bin")
    assert (tmp_path / "out" / "copy.bin").read_bytes() == b"file-content"
    leftovers = [p.name for p in tmp_path.rglob("*") if ".sslmem-tmp-" in p.name]
    assert leftovers == []


def test_local_failed_write_keeps_previous_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("obj", b"old")

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StoreError, match="cannot write"):
        store.put_bytes("obj", b"new-but-never-visible")
    monkeypatch.undo()
    assert store.get_bytes("obj") == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj"]


@pytest.mark.parametrize(
    "key", ["", "../escape", "a/../../b", "/etc/passwd", "a//b", "./a", "a/.", "a\\b", "a/"]
)
def test_local_refuses_keys_escaping_the_root(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "root")
    with pytest.raises(StoreError, match="invalid object key"):
        store.put_bytes(key, b"x")
    with pytest.raises(StoreError, match="invalid object key"):
        store.get_bytes(key)
    assert not (tmp_path / "escape").exists()


def test_local_refuses_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "root" / "link")
    with pytest.raises(StoreError, match="outside the store root"):
        LocalStore(tmp_path / "root").put_bytes("link/x", b"x")


def test_local_missing_key_names_uri(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(StoreError, match=r"file://.*missing\.bin does not exist"):
        store.get_bytes("missing.bin")
    with pytest.raises(StoreError, match="does not exist"):
        store.get_file("missing.bin", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_open_store_local_forms(tmp_path: Path) -> None:
    uris: list[str | Path] = [
        str(tmp_path),
        tmp_path,
        tmp_path.as_uri(),
        f"file://localhost{tmp_path}",
    ]
    for uri in uris:
        store = open_store(uri)
        assert isinstance(store, LocalStore)
        assert store.root == tmp_path.resolve()


def test_open_store_rejects_unknown_scheme_and_bad_file_uri() -> None:
    with pytest.raises(StoreError, match="unsupported store URI scheme 'gs'"):
        open_store("gs://bucket/x")
    with pytest.raises(StoreError, match="unsupported file URI"):
        open_store("file://otherhost/x")
    with pytest.raises(StoreError, match="empty"):
        open_store("")


def test_register_store_scheme(tmp_path: Path) -> None:
    register_store_scheme("memtest", lambda uri, settings: LocalStore(tmp_path))
    try:
        assert isinstance(open_store("memtest://anything"), LocalStore)
    finally:
        store_module._OPENERS.pop("memtest")


def test_read_write_bytes_local(tmp_path: Path) -> None:
    target = tmp_path / "d" / "obj.bin"
    write_bytes(target, b"abc")
    assert read_bytes(str(target)) == b"abc"
    assert read_bytes(target.as_uri()) == b"abc"
    write_bytes(tmp_path.as_uri() + "/uri.bin", b"via-uri")
    assert (tmp_path / "uri.bin").read_bytes() == b"via-uri"
    with pytest.raises(StoreError, match="does not name an object"):
        read_bytes(str(tmp_path) + "/")
    with pytest.raises(StoreError, match="does not exist"):
        read_bytes(tmp_path / "nope")


def test_relative_local_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_bytes("rel.bin", b"r")
    assert (tmp_path / "rel.bin").read_bytes() == b"r"


# --------------------------------------------------------------------------- S3 configuration


def test_s3_requires_endpoint() -> None:
    settings = RuntimeSettings.model_validate({"s3_endpoint": None})
    with pytest.raises(StoreError, match="no S3 endpoint") as info:
        open_store("s3://bucket/prefix", settings)
    assert info.value.fix is not None and "SSLMEM_S3_ENDPOINT" in info.value.fix
    with pytest.raises(StoreError, match="no S3 endpoint"):
        read_bytes("s3://bucket/key", settings)


def test_s3_uri_needs_bucket_and_key() -> None:
    settings = _settings(s3_endpoint="127.0.0.1:1")
    with pytest.raises(StoreError, match="no bucket"):
        open_store("s3:///x", settings)
    with pytest.raises(StoreError, match="does not name an object"):
        read_bytes("s3://bucket", settings)


def test_s3_invalid_bucket_name() -> None:
    with pytest.raises(StoreError, match="invalid S3 bucket name 'B_'"):
        open_store("s3://B_/x", _settings(s3_endpoint="h:1"))


def test_s3_incomplete_credentials() -> None:
    with pytest.raises(StoreError, match="incomplete") as info:
        open_store("s3://bucket", _settings(s3_endpoint="h:1", s3_access_key="only-access"))
    assert info.value.fix is not None and "SSLMEM_S3_SECRET_KEY" in info.value.fix


def test_s3_store_from_settings_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store("s3://bkt/some/prefix/", _settings(s3_endpoint="http://h:9000"))
    assert isinstance(store, S3Store)
    assert store.uri("k/x") == "s3://bkt/some/prefix/k/x"
    assert store.endpoint == "h:9000" and store.secure is False
    monkeypatch.setenv("SSLMEM_S3_ENDPOINT", "envhost:9000")
    monkeypatch.setenv("SSLMEM_S3_SECRET_KEY", "s3cr3t-value")
    monkeypatch.setenv("SSLMEM_S3_ACCESS_KEY", "ak")
    from_env = open_store("s3://bkt")
    assert isinstance(from_env, S3Store) and from_env.endpoint == "envhost:9000"
    assert from_env.secure is True
    assert "s3cr3t-value" not in repr(from_env)


@pytest.mark.s3
def test_s3_unreachable_endpoint_fails_with_store_error() -> None:
    port = free_port()  # nothing listens here
    store = open_store(
        "s3://bucket/p",
        _settings(s3_endpoint=f"127.0.0.1:{port}", s3_access_key="a", s3_secret_key="b"),
    )
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}") as info:
        store.get_bytes("x")
    assert info.value.fix is not None and "SSLMEM_S3_ENDPOINT" in info.value.fix
    with pytest.raises(StoreError, match="SSLMEM_S3_ENDPOINT"):
        S3Store(
            "bucket",
            endpoint=f"127.0.0.1:{port}",
            access_key=None,
            secret_key=None,
            secure=False,
            retries=0,
            create_bucket=True,
        )


# --------------------------------------------------------------------------- real S3 server


@pytest.mark.s3
def test_s3_tls_against_plain_http_server_fails_clearly(s3_server: S3Server) -> None:
    store = open_store("s3://bucket/p", _settings(s3_server, s3_secure=True))
    with pytest.raises(StoreError, match="SSLMEM_S3_SECURE"):
        store.exists("x")


@pytest.mark.s3
def test_s3_missing_bucket_needs_create_bucket(s3_server: S3Server) -> None:
    bucket = _bucket()
    store = _s3_store(s3_server, bucket)
    with pytest.raises(StoreError, match=f"bucket '{bucket}' does not exist"):
        store.put_bytes("k", b"v")
    created = _s3_store(s3_server, bucket, create_bucket=True)
    created.put_bytes("k", b"v")
    _s3_store(s3_server, bucket, create_bucket=True)  # idempotent
    assert store.get_bytes("k") == b"v"


@pytest.mark.s3
def test_s3_roundtrip_exists_list(s3_server: S3Server) -> None:
    store = _s3_store(s3_server, _bucket(), "runs/exp1", create_bucket=True)
    other = _s3_store(s3_server, store.bucket, "runs/exp2")
    assert store.list() == []
    assert not store.exists("a/b.bin")
    store.put_bytes("a/b.bin", b"\x00payload")
    store.put_bytes("a/c.bin", b"c")
    store.put_bytes("z.bin", b"")
    other.put_bytes("a/b.bin", b"other")
    assert store.exists("a/b.bin")
    assert store.get_bytes("a/b.bin") == b"\x00payload"
    assert store.get_bytes("z.bin") == b""
    assert store.list() == ["a/b.bin", "a/c.bin", "z.bin"]
    assert store.list("a/") == ["a/b.bin", "a/c.bin"]
    assert other.list() == ["a/b.bin"]
    assert store.uri("a/b.bin") == f"s3://{store.bucket}/runs/exp1/a/b.bin"
    with pytest.raises(StoreError, match="invalid object key"):
        store.put_bytes("../exp2/a/b.bin", b"x")


@pytest.mark.s3
def test_s3_missing_key_names_uri(s3_server: S3Server, tmp_path: Path) -> None:
    store = _s3_store(s3_server, _bucket(), "p", create_bucket=True)
    uri = f"s3://{store.bucket}/p/missing.bin"
    with pytest.raises(StoreError, match=f"object {uri} does not exist"):
        store.get_bytes("missing.bin")
    with pytest.raises(StoreError, match="does not exist"):
        store.get_file("missing.bin", tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.s3
def test_s3_put_file_get_file(s3_server: S3Server, tmp_path: Path) -> None:
    store = _s3_store(s3_server, _bucket(), create_bucket=True)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    store.put_file("files/big.bin", src)
    dst = tmp_path / "out" / "big.bin"
    store.get_file("files/big.bin", dst)
    assert dst.read_bytes() == payload
    assert [p.name for p in dst.parent.iterdir()] == ["big.bin"]
    with pytest.raises(StoreError, match="not a file"):
        store.put_file("x", tmp_path / "absent")


@pytest.mark.s3
def test_s3_bad_credentials(s3_server: S3Server) -> None:
    bucket = _bucket()
    _s3_store(s3_server, bucket, create_bucket=True)
    bad = S3Store(
        bucket,
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key="wrong-secret",
        secure=False,
        region="us-east-1",
    )
    with pytest.raises(StoreError, match=r"SignatureDoesNotMatch|AccessDenied") as info:
        bad.put_bytes("k", b"v")
    assert info.value.fix is not None and "SSLMEM_S3_SECRET_KEY" in info.value.fix


@pytest.mark.s3
def test_s3_read_write_bytes_uris(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = _bucket()
    _s3_store(s3_server, bucket, create_bucket=True)
    settings = _settings(s3_server)
    write_bytes(f"s3://{bucket}/deep/dir/obj.json", b'{"a": 1}', settings)
    assert read_bytes(f"s3://{bucket}/deep/dir/obj.json", settings) == b'{"a": 1}'
    write_bytes(f"s3://{bucket}/top.bin", b"top", settings)
    assert read_bytes(f"s3://{bucket}/top.bin", settings) == b"top"
    store: ObjectStore = open_store(f"s3://{bucket}/deep", settings)
    assert store.list() == ["dir/obj.json"]
    with pytest.raises(StoreError, match=f"s3://{bucket}/deep/nope does not exist"):
        read_bytes(f"s3://{bucket}/deep/nope", settings)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    assert read_bytes(f"s3://{bucket}/top.bin") == b"top"  # settings from the environment


def test_local_delete_removes_only_that_object_and_tolerates_a_missing_one(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "root")
    store.put_bytes("a/b.bin", b"b")
    store.put_bytes("a/c.bin", b"c")
    store.delete("a/b.bin")
    assert store.list() == ["a/c.bin"]
    store.delete("a/b.bin")  # gone already: not an error, as in S3
    store.delete("never/written.bin")
    assert store.list() == ["a/c.bin"]
    with pytest.raises(StoreError, match="invalid object key"):
        store.delete("../outside.bin")


@pytest.mark.s3
def test_s3_delete_removes_only_that_object_and_tolerates_a_missing_one(
    s3_server: S3Server,
) -> None:
    store = _s3_store(s3_server, _bucket(), "p", create_bucket=True)
    store.put_bytes("a/b.bin", b"b")
    store.put_bytes("a/c.bin", b"c")
    store.delete("a/b.bin")
    assert store.list() == ["a/c.bin"]
    assert not store.exists("a/b.bin")
    store.delete("a/b.bin")
    assert store.list() == ["a/c.bin"]
