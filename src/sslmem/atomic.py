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
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: Part of every temporary file's name, so listings can skip writes in progress.
TMP_MARKER = ".sslmem-tmp-"

#: The longest file name where the file system cannot be asked (Linux and macOS: 255 bytes).
DEFAULT_NAME_MAX = 255


def name_max(directory: str | os.PathLike[str]) -> int:
    """The longest file name, in bytes, that ``directory`` (or its nearest existing ancestor) takes.

    ``pathconf(PC_NAME_MAX)``; :data:`DEFAULT_NAME_MAX` where it cannot be asked.
    """
    for place in (Path(directory), *Path(directory).parents):
        try:
            limit = os.pathconf(place, "PC_NAME_MAX")
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                continue  # not made yet (or cannot be): its parent's file system decides
            break
        except ValueError:  # pragma: no cover - a platform without PC_NAME_MAX
            break
        return limit if limit > 0 else DEFAULT_NAME_MAX  # -1: no limit reported
    return DEFAULT_NAME_MAX


def sibling_name(target: Path, tag: str) -> Path:
    """A hidden sibling of ``target`` named ``.<name><tag>``, cut to fit ``NAME_MAX``.

    A temporary file or staging directory must never be what makes a legal output name too
    long: ``<name>`` is shortened (at a character boundary) as much as the tag needs, so any name
    up to ``NAME_MAX`` bytes can be written. ``tag`` carries the random part, so a cut name is
    still unique.
    """
    budget = name_max(target.parent) - len(os.fsencode("." + tag))
    encoded = os.fsencode(target.name)
    if len(encoded) <= budget:
        return target.parent / f".{target.name}{tag}"
    head = encoded[: max(budget, 0)]
    try:
        encoded.decode("utf-8")
    except UnicodeDecodeError:  # not UTF-8: cut anywhere
        stem = os.fsdecode(head)
    else:  # cut at a character boundary (a partial last character is dropped)
        stem = head.decode("utf-8", "ignore")
    return target.parent / f".{stem}{tag}"


def _create_temporary(target: Path, suffix: str) -> str:
    """Create a new, empty, uniquely named file next to ``target``; return its name.

    ``O_CREAT | O_EXCL`` with mode ``0o666``: the kernel applies the umask (and default ACLs),
    exactly as for a file created by ``open``; the exclusive flag makes the name ours alone.
    """
    for _ in range(100):
        name = str(sibling_name(target, f"{TMP_MARKER}{secrets.token_hex(6)}{suffix}"))
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
