"""Object stores: a local directory or an S3-compatible bucket (MinIO, SeaweedFS, AWS S3).

Everything the project persists outside MLflow (split manifests, checkpoints, score tables) goes
through :class:`ObjectStore`. A store is addressed by a URI:

* ``/abs/dir``, ``rel/dir`` or ``file:///abs/dir`` -- :class:`LocalStore` (the embedded default);
* ``s3://bucket/prefix`` -- :class:`S3Store`, configured from
  :class:`~sslmem.config.RuntimeSettings` (``SSLMEM_S3_ENDPOINT``, ``SSLMEM_S3_ACCESS_KEY``,
  ``SSLMEM_S3_SECRET_KEY``, ``SSLMEM_S3_SECURE``, ``SSLMEM_S3_REGION``, ``SSLMEM_STORE_RETRIES``).

Keys are relative POSIX paths (``manifests/split-0.json``); keys that could escape the store root
(``..``, absolute paths, empty segments) are refused. Writes are atomic: a reader sees either the
previous object or the new one, never a partial one.
"""

from __future__ import annotations

import builtins
import functools
import io
import os
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from minio.helpers import check_bucket_name
from pydantic import SecretStr

from sslmem.atomic import TMP_MARKER, atomic_write_bytes, atomic_writer
from sslmem.errors import StoreError, StoreNotFoundError, StoreUnavailableError
from sslmem.redaction import redact

if TYPE_CHECKING:
    from sslmem.config import RuntimeSettings

__all__ = [
    "LocalStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "open_store",
    "read_bytes",
    "register_store_scheme",
    "write_bytes",
]

_T = TypeVar("_T")
_CHUNK = 1 << 20
_ENDPOINT_FIX = (
    "check SSLMEM_S3_ENDPOINT (host:port, no path), SSLMEM_S3_SECURE (TLS or not) and that the "
    "server is running and reachable from here"
)
#: S3 error codes of a server that is busy, throttling or failing (retry later).
_TRANSIENT_S3_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "OperationAborted",
    }
)


def _retryable(exc: S3Error) -> bool:
    """Whether the HTTP status of an S3 error answer is 5xx, 408 or 429."""
    status = getattr(exc.response, "status", None)
    return isinstance(status, int) and (status >= 500 or status in (408, 429))


_CREDENTIALS_FIX = "check SSLMEM_S3_ACCESS_KEY and SSLMEM_S3_SECRET_KEY and the user's permissions"
_NO_USERINFO_FIX = (
    "remove user:password@ from it; S3 credentials come from SSLMEM_S3_ACCESS_KEY and "
    "SSLMEM_S3_SECRET_KEY (a Kubernetes Secret on a cluster)"
)


def _refuse_userinfo(what: str, uri: str) -> None:
    """Credentials in a store URI or endpoint would reach tags and logs: refuse them."""
    bare = "://" not in uri  # host:port
    text = f"s3://{uri}" if bare else uri
    if redact(text) != text:
        shown = redact(text).removeprefix("s3://") if bare else redact(text)
        raise StoreError(f"{what} {shown!r} carries credentials", _NO_USERINFO_FIX)


def _validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative POSIX path, else raise :class:`StoreError`."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise StoreError(
            f"invalid object key {key!r}: keys are relative POSIX paths without '.', '..', "
            "empty segments, backslashes or a leading '/'",
            "use a key like 'manifests/split-0.json'",
        )
    return key


class ObjectStore(ABC):
    """A flat namespace of byte objects addressed by relative POSIX keys.

    Subclasses implement the byte-level operations; :meth:`put_file` and :meth:`get_file` have
    generic implementations that subclasses may replace with streaming ones.
    """

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically, replacing any existing object.

        Raises:
            StoreError: The key is invalid or the store cannot be written.

        """

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the object stored under ``key``.

        Raises:
            StoreError: The object does not exist (the message names its URI) or the store
                cannot be read.

        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Return whether an object is stored under ``key``."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Return the sorted keys that start with ``prefix`` (a string prefix, not a directory)."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Return the full URI of ``key`` (``file:///...`` or ``s3://bucket/...``)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object under ``key``; a missing object is not an error (as in S3).

        Raises:
            StoreError: The key is invalid or the store cannot be written.

        """

    def put_file(self, key: str, path: Path | str) -> None:
        """Upload the local file ``path`` to ``key`` atomically.

        Raises:
            StoreError: ``path`` is not a file, or the store cannot be written.

        """
        source = Path(path)
        if not source.is_file():
            raise StoreError(f"cannot upload {source}: not a file", "pass an existing file")
        self.put_bytes(key, source.read_bytes())

    def get_file(self, key: str, path: Path | str) -> None:
        """Download ``key`` to the local file ``path`` atomically (parents are created).

        Raises:
            StoreError: The object does not exist or the store cannot be read.

        """
        data, target = self.get_bytes(key), Path(path)
        try:
            atomic_write_bytes(target, data)
        except OSError as exc:
            raise StoreError(
                f"cannot write {target}: {exc}", f"check that {target.parent} is writable"
            ) from exc


class LocalStore(ObjectStore):
    """An object store in a local directory (the embedded default).

    Args:
        root: Directory holding the objects; created on the first write.

    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*_validate_key(key).split("/"))
        if not path.resolve().is_relative_to(self.root):
            raise StoreError(
                f"object key {key!r} resolves outside the store root {self.root} (via a symlink)",
                "remove the symlink or use another key",
            )
        return path

    def put_bytes(self, key: str, data: bytes) -> None:  # noqa: D102 - documented on the ABC
        path = self._path(key)
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot write {self.uri(key)}: {exc}", f"check that {self.root} is writable"
            ) from exc

    def get_bytes(self, key: str) -> bytes:  # noqa: D102 - documented on the ABC
        path = self._path(key)
        try:
            return path.read_bytes()
        except IsADirectoryError as exc:
            raise StoreError(
                f"{self.uri(key)} is a directory, not an object", "pass the file inside it"
            ) from exc
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise StoreNotFoundError(
                f"object {self.uri(key)} does not exist",
                f"check the key and the store root ({self.root})",
            ) from exc
        except OSError as exc:
            raise StoreUnavailableError(f"cannot read {self.uri(key)}: {exc}") from exc

    def exists(self, key: str) -> bool:  # noqa: D102 - documented on the ABC
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:  # noqa: D102 - documented on the ABC
        if not self.root.is_dir():
            return []
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(self.root):
            rel_dir = PurePosixPath(Path(dirpath).relative_to(self.root).as_posix())
            for name in filenames:
                if TMP_MARKER in name:
                    continue
                key = (rel_dir / name).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def uri(self, key: str) -> str:  # noqa: D102 - documented on the ABC
        return self.root.joinpath(*_validate_key(key).split("/")).as_uri()

    def delete(self, key: str) -> None:  # noqa: D102 - documented on the ABC
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot delete {self.uri(key)}: {exc}", f"check that {self.root} is writable"
            ) from exc

    def put_file(self, key: str, path: Path | str) -> None:  # noqa: D102 - documented on the ABC
        source = Path(path)
        if not source.is_file():
            raise StoreError(f"cannot upload {source}: not a file", "pass an existing file")
        target = self._path(key)
        try:
            with atomic_writer(target) as out, source.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot write {self.uri(key)}: {exc}", f"check that {self.root} is writable"
            ) from exc


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key (relative to the store prefix), size in bytes and ETag."""

    key: str
    size: int
    etag: str


def _secret(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certifi's CAs plus the system's (which honours ``SSL_CERT_FILE``); built once, slow."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()
    return context


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """Accept ``host:port`` or ``http(s)://host:port``; a scheme, if given, decides TLS."""
    _refuse_userinfo("S3 endpoint", endpoint)
    if "://" not in endpoint:
        return endpoint.strip().rstrip("/"), secure
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise StoreError(
            f"invalid S3 endpoint {endpoint!r}",
            "set SSLMEM_S3_ENDPOINT to host:port (e.g. minio.storage:9000), with no path",
        )
    return parts.netloc, parts.scheme == "https"


class S3Store(ObjectStore):
    """An object store in an S3-compatible bucket, using the ``minio`` client.

    Connection errors are retried a bounded number of times with exponential backoff, with short
    connect timeouts, so an unreachable endpoint fails within seconds with a :class:`StoreError`
    naming it; a server that accepts connections but never answers fails after
    ``(retries + 1) * read_timeout`` seconds plus backoff (~33 s with the defaults) with an error
    naming the endpoint and the setting to raise. The constructor makes no request unless
    ``create_bucket`` is set.

    Args:
        bucket: Bucket name.
        prefix: Key prefix inside the bucket (``"runs/exp1"``); may be empty.
        endpoint: ``host:port`` of the server; ``http://`` or ``https://`` may be given and then
            decides TLS instead of ``secure``.
        access_key: Access key (``None`` for anonymous access).
        secret_key: Secret key.
        secure: Use TLS.
        region: Bucket region (``None`` lets the client ask the server).
        retries: Retries after a connection error or a 5xx answer (0 = one attempt only).
        create_bucket: Create the bucket now if it does not exist.
        connect_timeout: Seconds to wait for a TCP/TLS connection per attempt.
        read_timeout: Seconds to wait for data on an open connection per read.
        http_client: A ready ``urllib3.PoolManager`` to use instead of the one built from the
            timeouts and retries above (e.g. one that counts requests).

    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str,
        access_key: SecretStr | str | None,
        secret_key: SecretStr | str | None,
        secure: bool = True,
        region: str | None = None,
        retries: int = 3,
        create_bucket: bool = False,
        connect_timeout: float = 2.0,
        read_timeout: float = 8.0,
        http_client: urllib3.PoolManager | None = None,
    ) -> None:
        try:
            check_bucket_name(bucket)
        except ValueError as exc:
            raise StoreError(
                f"invalid S3 bucket name {bucket!r}",
                "use 3-63 lower-case letters, digits, '-' or '.' (s3://bucket/prefix)",
            ) from exc
        host, use_tls = _split_endpoint(endpoint, secure)
        if not host:
            raise StoreError("the S3 endpoint is empty", "set SSLMEM_S3_ENDPOINT to host:port")
        if (access_key is None) != (secret_key is None):
            raise StoreError(
                f"S3 credentials for {host} are incomplete: give both an access key and a secret "
                "key, or neither for anonymous access",
                _CREDENTIALS_FIX,
            )
        clean_prefix = prefix.strip("/")
        if clean_prefix:
            _validate_key(clean_prefix)
        self.bucket = bucket
        self.prefix = f"{clean_prefix}/" if clean_prefix else ""
        self.endpoint = host
        self.secure = use_tls
        self._bounds = (connect_timeout, read_timeout, retries)  # named in timeout errors
        http = http_client or urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=10,
            ssl_context=_tls_context() if use_tls else None,
            retries=urllib3.Retry(
                total=retries,
                connect=retries,
                read=retries,
                backoff_factor=0.2,
                backoff_max=5.0,
                status_forcelist=[500, 502, 503, 504],
            ),
        )
        try:
            self._client = Minio(
                host,
                access_key=_secret(access_key),
                secret_key=_secret(secret_key),
                secure=use_tls,
                region=region,
                http_client=http,
            )
        except ValueError as exc:
            raise StoreError(f"invalid S3 configuration for {host}: {exc}", _ENDPOINT_FIX) from exc
        if create_bucket:
            self.ensure_bucket()

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"S3Store({self.uri('')!r}, endpoint='{scheme}://{self.endpoint}')"

    def _name(self, key: str) -> str:
        return self.prefix + _validate_key(key)

    def _call(self, what: str, fn: Callable[[], _T], key: str | None = None) -> _T:
        """Run a client call, turning client and transport errors into :class:`StoreError`."""
        try:
            return fn()
        except S3Error as exc:
            self._raise_s3(exc, what, key)
        except urllib3.exceptions.HTTPError as exc:  # no connection, timeout, reset
            timeout = self._timeout_error(exc, what)
            if timeout is not None:
                raise timeout from exc
            raise StoreUnavailableError(
                f"S3 endpoint {self._endpoint_url()} failed while trying to {what}: {exc}",
                _ENDPOINT_FIX,
            ) from exc
        except MinioException as exc:  # ServerError (5xx), InvalidResponseError
            raise StoreUnavailableError(
                f"S3 endpoint {self._endpoint_url()} gave an invalid answer while trying to "
                f"{what}: {exc}",
                _ENDPOINT_FIX + "; make sure the endpoint is an S3 API, not a console/UI port",
            ) from exc

    def _timeout_error(
        self, exc: urllib3.exceptions.HTTPError, what: str
    ) -> StoreUnavailableError | None:
        """The error for a request that timed out, naming the setting that bounds it."""
        reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        connect_timeout, read_timeout, retries = self._bounds
        # NewConnectionError (refused, no route) subclasses ConnectTimeoutError: not a timeout.
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return None
        if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
            how = f"did not answer within {read_timeout:g} s (SSLMEM_S3_READ_TIMEOUT_S)"
            setting = "SSLMEM_S3_READ_TIMEOUT_S"
        elif isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
            how = f"did not accept a connection within {connect_timeout:g} s"
            how += " (SSLMEM_S3_CONNECT_TIMEOUT_S)"
            setting = "SSLMEM_S3_CONNECT_TIMEOUT_S"
        else:
            return None
        return StoreUnavailableError(
            f"S3 endpoint {self._endpoint_url()} {how} in any of {retries + 1} attempts "
            f"(SSLMEM_STORE_RETRIES={retries}) while trying to {what}",
            f"check that {self._endpoint_url()} is an S3 API that is up and answering "
            f"(SSLMEM_S3_ENDPOINT, SSLMEM_S3_SECURE); for a slow server raise {setting}",
        )

    def _endpoint_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    def _raise_s3(self, exc: S3Error, what: str, key: str | None) -> NoReturn:
        code = exc.code or ""
        if code in ("NoSuchKey", "NoSuchObject") and key is not None:
            raise StoreNotFoundError(
                f"object {self.uri(key)} does not exist", "check the key and the store URI"
            ) from exc
        if code == "NoSuchBucket":
            raise StoreNotFoundError(
                f"bucket {self.bucket!r} does not exist on {self._endpoint_url()}",
                "create the bucket (or open the store with create_bucket=True)",
            ) from exc
        if code in (
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "InvalidToken",
            "ExpiredToken",
        ):
            # The service's own credentials, not the input: retried, never a verdict on it.
            raise StoreUnavailableError(
                f"S3 endpoint {self._endpoint_url()} refused to {what} ({code})", _CREDENTIALS_FIX
            ) from exc
        if code in _TRANSIENT_S3_CODES or (exc.response is not None and _retryable(exc)):
            raise StoreUnavailableError(
                f"S3 endpoint {self._endpoint_url()} is unavailable while trying to {what} "
                f"({code})",
                _ENDPOINT_FIX,
            ) from exc
        raise StoreError(
            f"S3 error while trying to {what} on {self._endpoint_url()}: {code} {exc.message}"
        ) from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist.

        Raises:
            StoreError: The endpoint is unreachable or the credentials may not create it.

        """
        if self._call(
            f"check bucket {self.bucket!r}", lambda: self._client.bucket_exists(self.bucket)
        ):
            return
        try:
            self._call(
                f"create bucket {self.bucket!r}",
                lambda: self._client.make_bucket(self.bucket),
            )
        except StoreError as exc:
            cause = exc.__cause__
            if not (
                isinstance(cause, S3Error)
                and cause.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
            ):
                raise

    def put_bytes(self, key: str, data: bytes) -> None:  # noqa: D102 - documented on the ABC
        name = self._name(key)
        self._call(
            f"write {self.uri(key)}",
            lambda: self._client.put_object(
                bucket_name=self.bucket, object_name=name, data=io.BytesIO(data), length=len(data)
            ),
            key,
        )

    def get_bytes(self, key: str) -> bytes:  # noqa: D102 - documented on the ABC
        name = self._name(key)

        def fetch() -> bytes:
            response = self._client.get_object(bucket_name=self.bucket, object_name=name)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return self._call(f"read {self.uri(key)}", fetch, key)

    def exists(self, key: str) -> bool:  # noqa: D102 - documented on the ABC
        name = self._name(key)
        try:
            self._call(
                f"check {self.uri(key)}",
                lambda: self._client.stat_object(bucket_name=self.bucket, object_name=name),
                key,
            )
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code in ("NoSuchKey", "NoSuchObject"):
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[str]:  # noqa: D102 - documented on the ABC
        full = self.prefix + prefix

        def names() -> list[str]:
            objects = self._client.list_objects(
                bucket_name=self.bucket, prefix=full or None, recursive=True
            )
            return [str(obj.object_name) for obj in objects if not obj.is_dir]

        found = self._call(f"list {self.uri('')}{prefix}", names)
        return sorted(name[len(self.prefix) :] for name in found)

    def list_info(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Keys (relative to the store prefix), sizes and ETags under ``prefix``, sorted by key.

        Raises:
            StoreError: The bucket does not exist, the credentials are refused, or the endpoint
                cannot be reached.

        """
        full = self.prefix + prefix

        def infos() -> builtins.list[ObjectInfo]:
            objects = self._client.list_objects(
                bucket_name=self.bucket, prefix=full or None, recursive=True
            )
            return [
                ObjectInfo(
                    str(obj.object_name)[len(self.prefix) :],
                    int(obj.size or 0),
                    (obj.etag or "").strip('"'),
                )
                for obj in objects
                if not obj.is_dir
            ]

        found = self._call(f"list {self.uri('')}{prefix}", infos)
        return sorted(found, key=lambda info: info.key)

    def uri(self, key: str) -> str:  # noqa: D102 - documented on the ABC
        return f"s3://{self.bucket}/{self.prefix}{_validate_key(key) if key else ''}"

    def delete(self, key: str) -> None:  # noqa: D102 - documented on the ABC
        name = self._name(key)
        self._call(
            f"delete {self.uri(key)}",
            lambda: self._client.remove_object(bucket_name=self.bucket, object_name=name),
            key,
        )

    def put_file(self, key: str, path: Path | str) -> None:  # noqa: D102 - documented on the ABC
        source = Path(path)
        if not source.is_file():
            raise StoreError(f"cannot upload {source}: not a file", "pass an existing file")
        name = self._name(key)
        self._call(
            f"upload {source} to {self.uri(key)}",
            lambda: self._client.fput_object(
                bucket_name=self.bucket, object_name=name, file_path=str(source)
            ),
            key,
        )

    def get_file(self, key: str, path: Path | str) -> None:  # noqa: D102 - documented on the ABC
        name = self._name(key)
        target = Path(path)

        def fetch() -> None:
            response = self._client.get_object(bucket_name=self.bucket, object_name=name)
            try:
                with atomic_writer(target) as out:
                    for chunk in response.stream(_CHUNK):
                        out.write(chunk)
            finally:
                response.close()
                response.release_conn()

        try:
            self._call(f"download {self.uri(key)} to {target}", fetch, key)
        except OSError as exc:
            raise StoreError(
                f"cannot write {target}: {exc}", f"check that {target.parent} is writable"
            ) from exc


StoreOpener = Callable[[str, "RuntimeSettings | None"], ObjectStore]
"""Builds a store from a URI of its scheme and optional runtime settings."""


def _open_local(uri: str, settings: RuntimeSettings | None) -> ObjectStore:
    if "://" not in uri:
        return LocalStore(Path(uri))
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise StoreError(
            f"unsupported file URI {uri!r}", "use file:///absolute/path or a plain path"
        )
    return LocalStore(Path(unquote(parts.path)))


def _open_s3(uri: str, settings: RuntimeSettings | None) -> ObjectStore:
    _refuse_userinfo("store URI", uri)
    parts = urlsplit(uri)
    if not parts.netloc:
        raise StoreError(f"S3 URI {uri!r} has no bucket", "write s3://bucket/prefix")
    if settings is None:
        from sslmem.config import RuntimeSettings  # deferred: keeps this module light

        settings = RuntimeSettings()
    if not settings.s3_endpoint:
        raise StoreError(
            f"cannot open {uri}: no S3 endpoint is configured",
            "set SSLMEM_S3_ENDPOINT=host:port (plus SSLMEM_S3_ACCESS_KEY, SSLMEM_S3_SECRET_KEY "
            "and SSLMEM_S3_SECURE=false for a plain-HTTP server)",
        )
    return S3Store(
        parts.netloc,
        unquote(parts.path),
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
        retries=settings.store_retries,
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
    )


_OPENERS: dict[str, StoreOpener] = {"": _open_local, "file": _open_local, "s3": _open_s3}


def register_store_scheme(scheme: str, opener: StoreOpener) -> None:
    """Register (or replace) the opener for URIs ``scheme://...``.

    Args:
        scheme: Lower-case URI scheme, e.g. ``"gs"``.
        opener: Called as ``opener(uri, settings)``; returns the store rooted at ``uri``.

    """
    _OPENERS[scheme.lower()] = opener


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def open_store(uri: str | Path, settings: RuntimeSettings | None = None) -> ObjectStore:
    """Open the store rooted at ``uri``.

    Args:
        uri: A local directory, ``file:///dir`` or ``s3://bucket/prefix``.
        settings: Runtime settings for remote stores; read from the environment when omitted.

    Returns:
        The store. No request is made yet.

    Raises:
        StoreError: The scheme is unknown or its configuration is incomplete.

    """
    text = str(uri)
    if not text:
        raise StoreError("the store URI is empty", "set SSLMEM_STORE_URI to a directory or s3://")
    scheme = _scheme(text)
    opener = _OPENERS.get(scheme)
    if opener is None:
        known = ", ".join(f"{name}://" for name in sorted(_OPENERS) if name)
        raise StoreError(
            f"unsupported store URI scheme {scheme!r} in {text!r}",
            f"use a local path or one of: {known}",
        )
    return opener(text, settings)


def _open_object(uri: str | Path, settings: RuntimeSettings | None) -> tuple[ObjectStore, str]:
    """Split a full object URI into the store holding it and its key."""
    text = str(uri)
    scheme = _scheme(text)
    if scheme:
        rest = text.split("://", 1)[1]
        root_rest, sep, key = rest.rpartition("/")
        root = f"{scheme}://{root_rest or '/'}"
    else:
        root, sep, key = text.rpartition("/")
        root = (root or "/") if sep else "."
        sep = "/"  # a bare file name is an object in the current directory
    if not sep or not key:
        raise StoreError(
            f"{text!r} does not name an object",
            "pass a full object URI such as /dir/file.bin or s3://bucket/dir/file.bin",
        )
    return open_store(root, settings), key


def read_bytes(uri: str | Path, settings: RuntimeSettings | None = None) -> bytes:
    """Read one object given its full URI (``/abs/file``, ``file:///abs/file``, ``s3://b/key``).

    Raises:
        StoreError: The object does not exist or its store cannot be reached.

    """
    store, key = _open_object(uri, settings)
    return store.get_bytes(key)


def write_bytes(uri: str | Path, data: bytes, settings: RuntimeSettings | None = None) -> None:
    """Write one object atomically given its full URI (see :func:`read_bytes`).

    Raises:
        StoreError: The object cannot be written.

    """
    store, key = _open_object(uri, settings)
    store.put_bytes(key, data)
