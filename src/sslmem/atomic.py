"""Atomic file writes: a reader sees the old file or the complete new one, never a part.

The one mechanism behind every file the project writes (checkpoints, resume files, manifests,
figures, evaluation JSON, the local object store): write a temporary file next to the target,
fsync it, ``os.replace`` it into place; on any error remove the temporary file and leave the
target untouched.

Files get the mode an ordinary ``open(path, "w")`` would give (``0o666`` less the umask, so
``0o644`` under the common umask 022): other users and pods sharing a volume can read the
results unless the umask says otherwise. (``tempfile.mkstemp`` would make every file ``0o600``.)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: Part of every temporary file's name, so listings can skip writes in progress.
TMP_MARKER = ".sslmem-tmp-"


def _create_temporary(target: Path, suffix: str) -> str:
    """Create a new, empty, uniquely named file next to ``target``; return its name.

    ``O_CREAT | O_EXCL`` with mode ``0o666``: the kernel applies the umask (and default ACLs),
    exactly as for a file created by ``open``; the exclusive flag makes the name ours alone.
    """
    for _ in range(100):
        name = str(target.parent / f".{target.name}{TMP_MARKER}{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits collide ~never
            continue
        os.close(fd)
        return name
    raise FileExistsError(f"no free temporary name next to {target}")  # pragma: no cover


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it into place durably.

    For writers that want a file name (``safetensors.save_file``, ``savefig``, ``copyfile``).

    Args:
        path: The target (its parent directories are created).
        suffix: Ending of the temporary name (e.g. ``".png"``).

    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = _create_temporary(target, suffix)
    mode = stat.S_IMODE(os.stat(tmp_name).st_mode)
    try:
        yield Path(tmp_name)
        # Some writers replace the file they are given (safetensors writes 0600): restore the
        # mode the umask gave the temporary file.
        os.chmod(tmp_name, mode)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        _name_the_file(exc, target)
        raise
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _name_the_file(exc: OSError, path: Path) -> None:
    # A writer's failed write() names no file (PIL, pyarrow, write_text): name it, so the
    # error can say which file could not be written (disk full, file-size limit, ...).
    if exc.filename is None:
        exc.filename = str(path)


@contextlib.contextmanager
def naming_failed_writes(path: str | os.PathLike[str]) -> Iterator[None]:
    """An ``OSError`` raised in the block that names no file is made to name ``path``."""
    try:
        yield
    except OSError as exc:
        _name_the_file(exc, Path(path))
        raise


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary handle whose content replaces ``path`` atomically when the block ends."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle
        handle.flush()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_writer(path) as handle:
        handle.write(data)
