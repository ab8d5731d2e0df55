"""Check that an output can be written *before* the work that produces it: the one home.

A command that trains for an hour and then finds its ``--out`` is a regular file, or lies on a
read-only volume, has wasted the hour. Every adapter (CLI subcommands, pipeline steps) and
workflow function calls :func:`check_output_file`, :func:`check_output_dir` or
:func:`check_output_uri` on its destinations first; a directory replaced as a whole (a score
report) is checked by :func:`check_replaceable_dir`, which the report writers
(:func:`sslmem.memorization.report_writer.check_report_dir`,
:func:`sslmem.reporting.outdir.replaced_dir`) call instead of checking anything themselves.

The check is a probe, not a permission computation: it creates and removes a temporary file in
the deepest directory that already exists on the way to the output. That answers correctly for
root (for whom ``os.access`` says yes to everything), read-only mounts, ACLs and pseudo file
systems such as ``/proc``. Missing directories are not created here, so a command that fails
later leaves nothing behind; the writers (:mod:`sslmem.atomic`) create them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Collection
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sslmem.atomic import TMP_MARKER, name_max
from sslmem.errors import OutputError

# URI schemes of remote stores: their writability is the store's to report (credentials,
# buckets), not something a local probe can tell.
_LOCAL_SCHEMES = ("", "file")


def describe_os_error(exc: OSError) -> str:
    """What an ``OSError`` of a write means, in words (no errno numbers)."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if exc.errno == errno.EFBIG:
        return "file too large: the file-size limit (ulimit -f) was reached"
    if exc.errno == errno.ENOENT:  # e.g. /proc: the directory exists but takes no new files
        return "it takes no new files"
    return exc.strerror or str(exc)


def _existing_ancestor(path: Path, what: str) -> Path:
    """The deepest existing directory on the way to ``path``.

    Raises:
        OutputError: An ancestor exists but is not a directory.

    """
    for ancestor in path.parents:
        if ancestor.is_dir():
            return ancestor
        if ancestor.exists():
            raise OutputError(
                f"cannot write {what} {path}: {ancestor} is a file, not a directory",
                f"choose a path whose parent is a directory, or remove {ancestor}",
            )
    raise OutputError(f"cannot write {what} {path}: no parent directory exists")  # pragma: no cover


def _probe(directory: Path, path: Path, what: str) -> None:
    """Create and remove a temporary file in ``directory``."""
    probe = directory / f".sslmem-write-check{TMP_MARKER}{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise OutputError(
            f"cannot write {what} {path}: {directory} is not writable ({describe_os_error(exc)})",
            "choose a writable location (a directory you own, on a writable volume)",
        ) from exc
    os.close(fd)
    probe.unlink(missing_ok=True)


def _shown(text: str) -> str:
    r"""``text`` for a message: undecodable bytes as ``\xNN``, long names shortened."""
    shown = os.fsencode(text).decode("utf-8", "backslashreplace")
    return "/".join(
        part if len(part) <= 40 else f"{part[:16]}...{part[-8:]}" for part in shown.split("/")
    )


def check_path_names(path: str | os.PathLike[str], *, what: str = "output") -> None:
    """Refuse, before any work, a path whose names the file system or the reports cannot take.

    A name longer than ``NAME_MAX`` (``pathconf``, else 255 bytes) fails only at the write,
    after the work; so does a path that is not UTF-8 (reports, logs and JSON hold paths as
    UTF-8 text). Temporary and staging siblings are cut to fit (:func:`sslmem.atomic.sibling_name`),
    so every name up to ``NAME_MAX`` bytes is accepted.

    Raises:
        OutputError: ``path`` is not valid UTF-8, or one of its names is longer than ``NAME_MAX``.

    """
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise OutputError(
            f"the {what} path {_shown(text)} is not valid UTF-8",
            "pass a UTF-8 path (rename the file or directory)",
        ) from exc
    limit = name_max(Path(text).expanduser().parent)
    for part in Path(text).parts:
        size = len(part.encode())
        if size > limit:
            raise OutputError(
                f"cannot write {what} {_shown(text)}: the name {_shown(part)} is {size} bytes "
                f"long; this file system takes at most {limit} bytes per name (NAME_MAX)",
                f"choose a shorter name (at most {limit} bytes)",
            )


def _empty(path: str | os.PathLike[str], what: str) -> Path:
    text = os.fspath(path)
    if not text.strip():
        raise OutputError(f"the {what} path is empty", f"pass a {what} path")
    check_path_names(text, what=what)
    return Path(text).expanduser()


def check_output_file(path: str | os.PathLike[str], *, what: str = "output file") -> Path:
    """Check that the file ``path`` can be created or replaced.

    Args:
        path: Destination file (need not exist; nor need its parent directories).
        what: How messages name it (e.g. ``"manifest"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
        OutputError: ``path`` is empty or a directory, an ancestor is a file, or the deepest
            existing directory on the way refuses a new file.

    """
    file = _empty(path, what)
    if file.is_dir():
        raise OutputError(
            f"cannot write {what} {file}: it is a directory",
            f"pass a file path, e.g. {file / 'NAME'}",
        )
    _probe(_existing_ancestor(file, what), file, what)
    return file


def check_output_dir(path: str | os.PathLike[str], *, what: str = "output directory") -> Path:
    """Check that files can be written inside the directory ``path`` (created later if missing).

    Raises:
        OutputError: ``path`` is empty or a regular file, an ancestor is a file, or the
            directory (or its deepest existing ancestor) refuses a new file.

    """
    directory = _empty(path, what)
    _not_a_file(
        directory,
        f"cannot write {what} {directory}: it is a regular file, not a directory",
        "pass a directory path (it is created if missing)",
    )
    target = directory if directory.is_dir() else _existing_ancestor(directory, what)
    _probe(target, directory, what)
    return directory


def _not_a_file(directory: Path, problem: str, fix: str) -> None:
    """Refuse a directory path that names something else (a regular file, a device...)."""
    if directory.exists() and not directory.is_dir():
        raise OutputError(problem, fix)


def check_replaceable_dir(out: str | os.PathLike[str], *, owned: Collection[str]) -> Path:
    """Check, before any work, that ``out`` can be replaced by a new run's files as a whole.

    What :func:`sslmem.reporting.outdir.replaced_dir` needs: a directory (or nothing) at
    ``out`` holding only a run's own files, not containing the working directory, and a parent
    that takes the staging sibling. Names are checked like every output's
    (:func:`check_path_names`; the staging names are cut to fit).

    Args:
        out: The output directory (it need not exist).
        owned: The file names a run writes; an existing ``out`` may hold only these (so a
            directory of other files is never replaced).

    Returns:
        ``out`` with symlinks resolved (the directory that will be replaced).

    Raises:
        OutputError: ``out`` is a file, holds other files, contains the working directory, its
            name is longer than ``NAME_MAX`` or not UTF-8, or the place it would be written is
            not writable.
    """
    check_path_names(out, what="output directory")
    target = Path(out).expanduser().resolve()
    _not_a_file(
        target, f"output directory {out} is a file, not a directory", "choose another --out"
    )
    if target == Path(target.anchor) or Path.cwd().resolve().is_relative_to(target):
        raise OutputError(
            f"output directory {out} contains the working directory; it would be replaced",
            "choose a new or report-only directory below it, e.g. --out scores",
        )
    if target.is_dir():
        foreign = sorted(p.name for p in target.iterdir() if p.name not in owned)
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise OutputError(
                f"output directory {out} holds files that are not part of a report ({shown}); "
                "it would be replaced as a whole",
                "choose a new or empty --out directory",
            )
    # The run is staged beside the target and renamed into place: the parent must take new
    # entries. A real probe file, not os.access, which says yes to root on a read-only volume.
    check_output_dir(target.parent, what="parent directory of the output")
    return target


def check_output_uri(uri: str | os.PathLike[str], *, what: str = "output file") -> None:
    """:func:`check_output_file` for a local path or ``file://`` URI; remote URIs pass.

    Raises:
        OutputError: A local destination that cannot be written (see :func:`check_output_file`).

    """
    text = os.fspath(uri)
    if not text.strip():
        raise OutputError(f"the {what} path is empty", f"pass a {what} path or URI")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in _LOCAL_SCHEMES:
        return
    check_output_file(unquote(urlsplit(text).path) if scheme else text, what=what)
