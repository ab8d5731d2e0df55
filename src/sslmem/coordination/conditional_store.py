"""Compare-and-swap on single objects: the primitive under :mod:`sslmem.coordination.lease`.

A :class:`ConditionalStore` offers four operations on one key, each atomic on the server:

* :meth:`~ConditionalStore.read` -- the bytes and their version tag (``etag``), or ``None``;
* :meth:`~ConditionalStore.create` -- write only if the key is absent (else ``None``);
* :meth:`~ConditionalStore.replace` -- write only if the current etag is the given one;
* :meth:`~ConditionalStore.delete` -- delete only if the current etag is the given one.

Two backends, chosen by the store URI like :func:`sslmem.data.store.open_store`:

* :class:`S3ConditionalStore` (``s3://bucket/prefix``): S3 conditional requests --
  ``PutObject`` with ``If-None-Match: *`` / ``If-Match: <etag>`` and ``DeleteObject`` with
  ``If-Match`` -- answered ``412 Precondition Failed`` for every writer but one (SeaweedFS 4.48,
  MinIO and AWS S3 honour them). The ``minio`` client's public API cannot send these headers, so
  requests are presigned with it (same endpoint, credentials and region as the project's
  :class:`~sslmem.data.store.S3Store`) and sent with urllib3. Presigned URLs carry a signature
  and the access-key id: they are never put in messages or logs. A URL is signed "now" by the
  local clock and valid for :data:`PRESIGN_LIFETIME` (15 min): S3 refuses a URL whose signing
  time is more than about 15 min ahead of its own clock whatever the lifetime, so 15 min
  tolerates the same skew in the other direction (a local clock behind the server's), and
  the URL is used at once and never shown, so a longer life buys nothing.
* :class:`LocalConditionalStore` (a directory, the embedded default): each write is a new
  *generation* file ``<key>/g<N>`` created exclusively (``link(2)`` of a fully written temporary
  file, which fails with ``EEXIST`` like ``O_CREAT|O_EXCL``), and the etag is the generation.
  ``replace`` from etag ``N`` creates ``g<N+1>``: of several writers holding ``N`` exactly one
  succeeds. A rename-based swap was rejected because it leaves the key briefly absent, letting a
  plain create slip in beside a live lease. A delete writes an empty tombstone generation. Old
  generations are pruned; a writer whose stale generation reappears after pruning sees a higher
  one and reports failure. Guarantees hold on one POSIX file system with atomic ``link`` (local
  disks; not every network file system).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import urllib3
from minio import Minio
from pydantic import SecretStr

from sslmem.atomic import TMP_MARKER
from sslmem.data.store import LocalStore, S3Store, _tls_context, open_store
from sslmem.errors import StoreError, StoreUnavailableError

if TYPE_CHECKING:
    from sslmem.config import RuntimeSettings

__all__ = [
    "PRESIGN_LIFETIME",
    "ConditionalStore",
    "LocalConditionalStore",
    "S3ConditionalStore",
    "open_conditional_store",
]


#: How long a presigned conditional request stays valid (see the module docstring).
PRESIGN_LIFETIME = dt.timedelta(minutes=15)


class ConditionalStore(Protocol):
    """Atomic compare-and-swap on single objects (see the module docstring)."""

    def read(self, key: str) -> tuple[bytes, str] | None:
        """Return ``(data, etag)`` of ``key``, or ``None`` if it does not exist."""

    def create(self, key: str, data: bytes) -> str | None:
        """Write ``data`` only if ``key`` does not exist; return the new etag, else ``None``."""

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        """Write ``data`` only if ``key``'s etag is ``etag``; return the new etag, else ``None``."""

    def delete(self, key: str, etag: str) -> bool:
        """Delete ``key`` only if its etag is ``etag``; return whether it was deleted."""

    def uri(self, key: str) -> str:
        """The full URI of ``key`` (for messages)."""


class S3ConditionalStore:
    """S3 conditional requests (``If-None-Match: *``, ``If-Match``) on one bucket and prefix.

    Connection failures (nothing sent) are retried; a read timeout or a 5xx answer is not,
    because the write may have happened: it raises
    :class:`~sslmem.errors.StoreUnavailableError` (transient) and the caller decides
    (:class:`~sslmem.coordination.lease.LeaseManager` reads the object back).

    Args:
        store: The project's S3 store (bucket, prefix, endpoint, TLS).
        access_key: Access key (``None``: anonymous).
        secret_key: Secret key.
        region: Bucket region (``None``: asked from the server once).
        retries: Retries after a failed connection.
        timeout: Read timeout per request, seconds (also the connect timeout's upper bound).
        connect_timeout: Connect timeout per request, seconds.
        clock: Unix seconds the requests are signed with (injectable to test clock skew).

    """

    def __init__(
        self,
        store: S3Store,
        *,
        access_key: str | None,
        secret_key: str | None,
        region: str | None = None,
        retries: int = 3,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, connect_timeout), read=timeout),
            maxsize=16,
            ssl_context=_tls_context() if store.secure else None,  # the same CAs as S3Store
            retries=urllib3.Retry(
                total=retries,
                connect=retries,
                read=0,
                status=0,
                other=0,
                redirect=0,
                backoff_factor=0.2,
                raise_on_status=False,
            ),
        )
        # Only presigns requests (and, without a region, asks the server for it once).
        self._signer = Minio(
            store.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=store.secure,
            region=region,
            http_client=self._http,
        )

    def __repr__(self) -> str:
        return f"S3ConditionalStore({self._store!r})"

    def uri(self, key: str) -> str:  # noqa: D102 - documented on the protocol
        return self._store.uri(key)

    def _request(
        self,
        method: str,
        key: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        name = self._store.uri(key)[len(f"s3://{self._store.bucket}/") :]  # validates the key
        what = f"{method} {self.uri(key)}"
        # Errors are raised outside the `except` blocks, so they carry no context: urllib3's
        # message holds the presigned URL (signature, access-key id).
        try:
            url = self._signer.get_presigned_url(
                method,
                self._store.bucket,
                name,
                expires=PRESIGN_LIFETIME,
                request_date=dt.datetime.fromtimestamp(self._clock(), dt.UTC),
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # the region lookup failed
            failure = type(exc).__name__
        except Exception as exc:  # minio's S3Error (refused region lookup), bad credentials
            failure = f"signing: {type(exc).__name__}"
        else:
            try:
                return self._http.request(method, url, body=body, headers=headers or {})
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                failure = type(exc).__name__
        raise StoreUnavailableError(
            f"S3 endpoint {self._store.endpoint} failed during {what} ({failure})",
            "check SSLMEM_S3_ENDPOINT, SSLMEM_S3_SECURE, SSLMEM_S3_REGION and the credentials, "
            "and that the server is reachable",
        )

    def _fail(self, response: urllib3.BaseHTTPResponse, what: str) -> StoreError:
        code = re.search(rb"<Code>([^<]{1,64})</Code>", response.data or b"")
        detail = code.group(1).decode("ascii", "replace") if code else ""
        fix = (
            "check SSLMEM_S3_ACCESS_KEY / SSLMEM_S3_SECRET_KEY and the user's permissions"
            if response.status == 403
            else "check the bucket exists and the server honours conditional requests"
        )
        if response.status >= 500 or response.status == 429 or detail == "SlowDown":
            return StoreUnavailableError(f"S3 answered {response.status} {detail} to {what}", fix)
        return StoreError(f"S3 answered {response.status} {detail} to {what}", fix)

    @staticmethod
    def _etag(response: urllib3.BaseHTTPResponse) -> str:
        etag = response.headers.get("ETag")
        if not etag:
            raise StoreError("S3 answered a write without an ETag", "use an S3-compatible server")
        return str(etag)

    def server_time(self, key: str) -> tuple[float, float]:
        """Ask the server its time: ``(local unix time mid-request, the server's Date header)``.

        Reads ``key`` (absent is fine: every answer carries ``Date``). ``Date`` has one-second
        resolution.

        Raises:
            StoreError: The server did not answer, or answered without a valid ``Date``.

        """
        before = self._clock()
        response = self._request("GET", key)
        after = self._clock()
        parsed = None
        with contextlib.suppress(TypeError, ValueError):
            parsed = email.utils.parsedate_to_datetime(response.headers.get("Date", ""))
        if parsed is None or parsed.tzinfo is None:
            raise StoreError(
                f"S3 endpoint {self._store.endpoint} answered without a valid Date header",
                "use an S3-compatible server (every S3 answer carries Date)",
            )
        return (before + after) / 2, parsed.timestamp()

    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (a listing; for pruning, not for decisions)."""
        return self._store.list(prefix)

    def read(self, key: str) -> tuple[bytes, str] | None:  # noqa: D102 - on the protocol
        response = self._request("GET", key)
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._fail(response, f"read {self.uri(key)}")
        return bytes(response.data), self._etag(response)

    def create(self, key: str, data: bytes) -> str | None:  # noqa: D102 - on the protocol
        response = self._request("PUT", key, data, {"If-None-Match": "*"})
        if response.status in (412, 409):  # 409: a concurrent conditional write (AWS)
            return None
        if response.status != 200:
            raise self._fail(response, f"create {self.uri(key)}")
        return self._etag(response)

    def replace(self, key: str, data: bytes, etag: str) -> str | None:  # noqa: D102
        response = self._request("PUT", key, data, {"If-Match": etag})
        if response.status in (412, 409, 404):
            return None
        if response.status != 200:
            raise self._fail(response, f"replace {self.uri(key)}")
        return self._etag(response)

    def delete(self, key: str, etag: str) -> bool:  # noqa: D102 - on the protocol
        response = self._request("DELETE", key, None, {"If-Match": etag})
        if response.status in (412, 409, 404):
            return False
        if response.status not in (200, 204):
            raise self._fail(response, f"delete {self.uri(key)}")
        return True


_GENERATION = re.compile(r"g(\d{20})")


class LocalConditionalStore:
    """Compare-and-swap in a local directory by exclusive generation files (module docstring).

    Args:
        store: The local store whose root holds the objects (``<root>/<key>/g<N>``).

    """

    def __init__(self, store: LocalStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"LocalConditionalStore({self._store!r})"

    def uri(self, key: str) -> str:  # noqa: D102 - documented on the protocol
        return self._store.uri(key)

    def _dir(self, key: str) -> Path:
        self._store.uri(key)  # validates the key (no '..', no absolute path)
        return self._store.root.joinpath(*key.split("/"))

    def _generations(self, folder: Path) -> list[int]:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {folder}: {exc.strerror}") from exc
        return sorted(int(m.group(1)) for n in names if (m := _GENERATION.fullmatch(n)))

    def _latest(self, key: str) -> tuple[int, bytes | None]:
        """The newest generation and its content (``None``: absent or deleted)."""
        folder = self._dir(key)
        for _ in range(100):  # a generation can be pruned between listing and reading it
            generations = self._generations(folder)
            if not generations:
                return 0, None
            latest = generations[-1]
            try:
                data = (folder / f"g{latest:020d}").read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot read {self.uri(key)}: {exc.strerror}") from exc
            return latest, (data or None)  # an empty generation is a delete's tombstone
        raise StoreError(f"{self.uri(key)} keeps changing under this reader; try again")

    def _write(self, key: str, generation: int, data: bytes) -> bool:
        """Create generation ``generation`` of ``key`` exclusively; ``True`` if ours is newest."""
        folder = self._dir(key)
        target = folder / f"g{generation:020d}"
        temp = folder / f".g{TMP_MARKER}{uuid.uuid4().hex}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with temp.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temp, target)  # atomic, and fails if the generation exists
            except FileExistsError:
                return False
        except OSError as exc:
            raise StoreError(
                f"cannot write {self.uri(key)}: {exc.strerror}",
                f"check that {self._store.root} is writable",
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()
        generations = self._generations(folder)
        if generations and generations[-1] > generation:
            return False  # a pruned, stale generation recreated: someone is ahead of us
        for old in generations:
            if old < generation - 1:  # keep the previous one: readers may be opening it
                with contextlib.suppress(OSError):
                    (folder / f"g{old:020d}").unlink()
        return True

    def keys(self, prefix: str) -> list[str]:
        """The keys directly under the folder ``prefix`` that hold an object (for pruning)."""
        folder = self._dir(prefix)
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {folder}: {exc.strerror}") from exc
        return [f"{prefix.rstrip('/')}/{n}" for n in names if self._generations(folder / n)]

    def read(self, key: str) -> tuple[bytes, str] | None:  # noqa: D102 - on the protocol
        generation, data = self._latest(key)
        return None if data is None else (data, f"g{generation}")

    def create(self, key: str, data: bytes) -> str | None:  # noqa: D102 - on the protocol
        if not data:
            raise StoreError("conditional objects must not be empty (empty marks a delete)")
        generation, current = self._latest(key)
        if current is not None:
            return None
        return f"g{generation + 1}" if self._write(key, generation + 1, data) else None

    def replace(self, key: str, data: bytes, etag: str) -> str | None:  # noqa: D102
        if not data:
            raise StoreError("conditional objects must not be empty (empty marks a delete)")
        base = _parse_etag(etag)
        if base is None:
            return None
        return f"g{base + 1}" if self._write(key, base + 1, data) else None

    def delete(self, key: str, etag: str) -> bool:  # noqa: D102 - on the protocol
        base = _parse_etag(etag)
        return base is not None and self._write(key, base + 1, b"")


def _parse_etag(etag: str) -> int | None:
    match = re.fullmatch(r"g(\d+)", etag)
    return int(match.group(1)) if match else None


def open_conditional_store(
    uri: str | Path, settings: RuntimeSettings | None = None
) -> ConditionalStore:
    """The conditional store for ``uri`` (a directory or ``s3://bucket/prefix``).

    Args:
        uri: Store root, as for :func:`sslmem.data.store.open_store` (``SSLMEM_STORE_URI``).
        settings: Runtime settings (S3 endpoint and credentials); from the environment if omitted.

    Raises:
        StoreError: The URI is invalid or its scheme has no conditional backend.

    """
    if settings is None:
        from sslmem.config import RuntimeSettings  # deferred: keeps this module light

        settings = RuntimeSettings()
    store = open_store(uri, settings)
    if isinstance(store, LocalStore):
        return LocalConditionalStore(store)
    if isinstance(store, S3Store):
        return S3ConditionalStore(
            store,
            access_key=_secret(settings.s3_access_key),
            secret_key=_secret(settings.s3_secret_key),
            region=settings.s3_region,
            retries=settings.store_retries,
            timeout=settings.s3_read_timeout_s,
            connect_timeout=settings.s3_connect_timeout_s,
        )
    raise StoreError(
        f"the store {uri} has no conditional-write backend for leases",
        "use a local directory or an s3:// store",
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
