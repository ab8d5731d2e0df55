"""Secrets that follow their files: a rotated Kubernetes Secret takes effect without a restart.

A Secret mounted as a volume is updated in place by the kubelet (an atomic symlink swap, within
about a minute of the change). :class:`FileSecret` re-reads its file when the file's
modification time, size or inode change, looking at most every ``check_s`` seconds (one
``stat`` call), so the receiver picks up a new webhook secret, and a previous one during a
rotation, by itself. A value given directly (an environment variable) never changes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from sslmem.errors import ConfigError
from sslmem.service.settings import ServiceSettings, read_secret_file

__all__ = ["CHECK_S", "FileSecret", "api_token", "webhook_secrets"]

logger = logging.getLogger(__name__)

#: Seconds between two looks at a secret file.
CHECK_S = 5.0


class FileSecret:
    """A secret held in a file, re-read when the file changes (checked every ``check_s``).

    Args:
        path: The file (a mounted Secret's key).
        what: What the secret is, for messages (never its value).
        initial: The value already read at start-up (``None``: read now).
        optional: A missing or empty file means "no secret" instead of keeping the last value
            (the previous webhook secret: removed from the Secret once a rotation ends).
        check_s: Least seconds between two ``stat`` calls.
        clock: Monotonic seconds (injectable for tests).

    """

    def __init__(
        self,
        path: Path,
        what: str,
        *,
        initial: SecretStr | None = None,
        optional: bool = False,
        check_s: float = CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.what = what
        self.optional = optional
        self.check_s = check_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._value = initial if initial is not None else self._read()
        self._checked_at = clock()

    def __repr__(self) -> str:
        return f"FileSecret({str(self.path)!r}, {self.what!r})"

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)  # follows the Secret volume's symlinks
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> SecretStr | None:
        try:
            return read_secret_file(self.path, self.what)
        except ConfigError as exc:
            if self.optional:
                return None
            raise exc

    def get(self) -> SecretStr | None:
        """The current value; the file is re-read if it changed since the last look."""
        now = self._clock()
        with self._lock:
            if now - self._checked_at < self.check_s:
                return self._value
            self._checked_at = now
            stamp = self._stat()
            if stamp == self._stamp:
                return self._value
            try:
                value = self._read()
            except ConfigError as exc:
                # A required secret unreadable mid-rotation: keep the last good one, say so.
                logger.warning("%s kept as it was: %s", self.what, exc.problem)
                return self._value
            self._stamp = stamp
            if (
                value is None
                or self._value is None
                or (value.get_secret_value() != self._value.get_secret_value())
            ):
                logger.info("%s re-read from %s", self.what, self.path)
            self._value = value
            return self._value


class _Fixed:
    """A secret given as a value: never changes."""

    def __init__(self, value: SecretStr) -> None:
        self._value = value

    def __call__(self) -> SecretStr:
        return self._value


def webhook_secrets(
    settings: ServiceSettings, *, check_s: float = CHECK_S
) -> Callable[[], list[SecretStr]]:
    """The webhook secrets to verify with, current first: a callable for ``WebhookVerifier``.

    Values given directly are fixed; ``*_FILE`` ones are re-read when their files change. The
    previous secret's file may be missing or empty (no rotation under way).
    """
    sources: list[Callable[[], SecretStr | None]] = []
    for name, optional in (("webhook_secret", False), ("webhook_secret_previous", True)):
        value: SecretStr | None = getattr(settings, name)
        file: Path | None = getattr(settings, f"{name}_file")
        if file is not None:
            what = name.replace("_", " ")
            sources.append(
                FileSecret(file, what, initial=value, optional=optional, check_s=check_s).get
            )
        elif value is not None:
            sources.append(_Fixed(value))

    def current() -> list[SecretStr]:
        return [value for value in (source() for source in sources) if value is not None]

    return current


def api_token(
    settings: ServiceSettings, *, check_s: float = CHECK_S
) -> Callable[[], SecretStr | None]:
    """The API token now: re-read from ``API_TOKEN_FILE`` when it changes, else fixed."""
    if settings.api_token_file is not None:
        return FileSecret(
            settings.api_token_file, "API token", initial=settings.api_token, check_s=check_s
        ).get
    return _Optional(settings.api_token)


class _Optional:
    """A value that may be absent and never changes."""

    def __init__(self, value: SecretStr | None) -> None:
        self._value = value

    def __call__(self) -> SecretStr | None:
        return self._value
