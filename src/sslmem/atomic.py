"""Atomic file writes: a reader sees the old file or the complete new one, never a part.

The one mechanism behind every file the project writes (checkpoints, resume files, manifests,
figures, evaluation JSON, the local object store): write a temporary file next to the target,
fsync it, ``os.replace`` it into place; on any error remove the temporary file and leave the
target untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: Part of every temporary file's name, so listings can skip writes in progress.
TMP_MARKER = ".sslmem-tmp-"


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
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}{TMP_MARKER}", suffix=suffix
    )
    os.close(fd)
    try:
        yield Path(tmp_name)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
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
