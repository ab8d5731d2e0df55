"""Which locations the service may read: an allow-list of URI prefixes.

Every URI a model version names (its weights' download location, its split manifest, the
dataset the manifest names) comes from tags that anyone with registry access can edit. Before
anything is read, the URI must lie under one of the allowed prefixes: same scheme, same bucket
(or host), and a path under the prefix's path. Paths are normalised first: ``.`` and ``..``
segments are resolved (also when percent-encoded), a ``..`` that climbs above the root is
refused outright, and a prefix matches whole path segments only (``s3://b/pipe`` does not allow
``s3://b/pipeline``). Local paths are resolved to absolute, symlink-free paths, so a symlink
inside an allowed directory cannot point the service elsewhere.

Example:
    >>> policy = UriPolicy.of(["s3://data/sslmem", "mlflow-artifacts:/"])
    >>> policy.allows("s3://data/sslmem/splits/a.json")
    True
    >>> policy.allows("s3://data/sslmem/../other/a.json")
    False
    >>> policy.allows("s3://other-bucket/sslmem/a.json")
    False
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from sslmem.errors import DataError

__all__ = ["Location", "UriNotAllowedError", "UriPolicy", "parse_location"]

#: Schemes whose URIs name local files.
_LOCAL_SCHEMES = ("", "file")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


class UriNotAllowedError(DataError):
    """A URI lies outside the allowed locations, or cannot be parsed as one.

    A permanent input error: the input must point elsewhere (or the allow-list must grow)
    before anything can succeed. The message names what was checked and the setting, never the
    URI itself (it comes from user-editable tags).
    """


@dataclass(frozen=True)
class Location:
    """A parsed, normalised URI: ``scheme``, ``netloc`` (bucket or host) and path segments.

    Attributes:
        scheme: Lower-case scheme (``""`` for a plain local path, ``file`` for ``file://``
            URIs: both become ``file``).
        netloc: The bucket (``s3``) or host; ``""`` when there is none.
        segments: The path's segments after normalisation (no ``""``, ``.`` or ``..``).

    """

    scheme: str
    netloc: str
    segments: tuple[str, ...]

    def is_under(self, prefix: Location) -> bool:
        """Whether this location equals ``prefix`` or lies below it (whole segments only)."""
        return (
            self.scheme == prefix.scheme
            and self.netloc == prefix.netloc
            and self.segments[: len(prefix.segments)] == prefix.segments
        )


def _normalise(segments: Iterable[str]) -> tuple[str, ...] | None:
    """Resolve ``.`` and ``..``; ``None`` when a ``..`` climbs above the root."""
    out: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(segment)
    return tuple(out)


def parse_location(uri: str) -> Location | None:
    """Parse and normalise ``uri``; ``None`` if it is not a plain location.

    Refused (``None``): an empty URI, a ``..`` escaping the root, userinfo (``user@``), a
    query or fragment, NUL bytes or backslashes, a ``file://`` URI naming a remote host, a
    relative local path. Percent-encoded segments are decoded before normalisation, so
    ``%2e%2e`` is a ``..``.
    """
    text = str(uri)
    if not text or "\x00" in text or "\\" in text:
        return None
    if not _SCHEME.match(text):
        # A plain local path (no scheme): only absolute paths are locations.
        return _local(text) if text.startswith("/") else None
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    decoded = unquote(parts.path)
    if "\x00" in decoded or "\\" in decoded:
        return None
    if scheme in _LOCAL_SCHEMES:
        if parts.netloc not in ("", "localhost") or not decoded.startswith("/"):
            return None
        return _local(decoded)
    segments = _normalise(decoded.split("/"))
    if segments is None:
        return None
    return Location(scheme, parts.netloc.lower(), segments)


def _local(path: str) -> Location | None:
    """A local absolute path, ``..`` resolved and symlinks followed."""
    if _normalise(path.split("/")) is None:
        return None
    resolved = os.path.realpath(path)  # follows symlinks: a link cannot lead outside
    segments = _normalise(resolved.split("/"))
    return None if segments is None else Location("file", "", segments)


@dataclass(frozen=True)
class UriPolicy:
    """An allow-list of URI prefixes (see the module docstring).

    Attributes:
        prefixes: The allowed locations, parsed.
        setting: The setting that configures the list, named in refusals.

    """

    prefixes: tuple[Location, ...]
    setting: str = "SSLMEM_SERVICE_ALLOWED_URI_PREFIXES"

    @classmethod
    def of(cls, prefixes: Iterable[str], *, setting: str | None = None) -> UriPolicy:
        """Parse a list of prefixes (store URIs, ``s3://bucket/prefix``, ``mlflow-artifacts:/``).

        Raises:
            UriNotAllowedError: A prefix is not a plain location (the setting is named).

        """
        name = setting or cls.setting
        parsed = []
        for prefix in prefixes:
            if not str(prefix).strip():
                continue
            location = parse_location(str(prefix).strip())
            if location is None:
                raise UriNotAllowedError(
                    f"{name} holds an entry that is not a plain location",
                    "list absolute URIs such as s3://bucket/prefix or mlflow-artifacts:/ "
                    "(no '..', credentials, query or fragment; local paths absolute)",
                )
            parsed.append(location)
        return cls(tuple(dict.fromkeys(parsed)), name)

    def allows(self, uri: str) -> bool:
        """Whether ``uri`` lies under one of the prefixes."""
        location = parse_location(uri)
        return location is not None and any(location.is_under(p) for p in self.prefixes)

    def check(self, uri: str, what: str) -> None:
        """Raise unless ``uri`` is allowed.

        Args:
            uri: The location about to be read.
            what: What it is, for the message (e.g. ``"the split manifest URI (tag
                sslmem.split_manifest_uri)"``); the URI itself is never repeated.

        Raises:
            UriNotAllowedError: ``uri`` lies outside every prefix.

        """
        if not self.allows(uri):
            raise UriNotAllowedError(
                f"{what} lies outside the locations the service may read ({self.setting})",
                f"store it in the configured object store or MLflow's artifact store, or add "
                f"its location to {self.setting}",
            )
