"""Output directories replaced as a whole: stage every file of a run, then swap.

A report directory (scores, summary, figures) must never mix runs: a file of an older run left
beside a new summary, or new figures beside an old summary after an interruption, would be read
as one report. So a run writes all its files into a hidden sibling staging directory and then
swaps it in with two renames (old -> hidden, staging -> target). Whatever moment the process
dies, the target holds one complete run or is absent (the previous run then sits in a hidden
``.<name>.old-*`` sibling); it never holds a mixture. Both siblings cut ``<name>`` short as far
as ``NAME_MAX`` needs (:func:`sslmem.atomic.sibling_name`): any name that fits is usable.

Directories are created with :func:`os.mkdir`, so their mode follows the umask. Under the CLI, a
Ctrl-C during or after the swap does not stop it (:mod:`sslmem.interrupts`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

from sslmem.atomic import TMP_MARKER, sibling_name
from sslmem.errors import ConfigError, OutputWriteError
from sslmem.interrupts import swapping_output
from sslmem.outputs import check_output_dir, check_path_names, describe_os_error


def check_replaceable_dir(out: str | os.PathLike[str], *, owned: Collection[str]) -> Path:
    """Check, before any work, that ``out`` can be replaced by a new run's files.

    Args:
        out: The output directory (it need not exist).
        owned: The file names a run writes; an existing ``out`` may hold only these (so a
            directory of other files is never replaced).

    Returns:
        ``out`` with symlinks resolved (the directory that will be replaced).

    Raises:
        ConfigError: ``out`` is a file, holds other files, contains the working directory, its
            name is longer than ``NAME_MAX`` or not UTF-8, or the place it would be written is
            not writable.
    """
    check_path_names(out, what="output directory")  # the staging names are cut to fit
    target = Path(out).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ConfigError(
            f"output directory {out} is a file, not a directory", "choose another --out"
        )
    if target == Path(target.anchor) or Path.cwd().resolve().is_relative_to(target):
        raise ConfigError(
            f"output directory {out} contains the working directory; it would be replaced",
            "choose a new or report-only directory below it, e.g. --out scores",
        )
    if target.is_dir():
        foreign = sorted(p.name for p in target.iterdir() if p.name not in owned)
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise ConfigError(
                f"output directory {out} holds files that are not part of a report ({shown}); "
                "it would be replaced as a whole",
                "choose a new or empty --out directory",
            )
    # The run is staged beside the target and renamed into place: the parent must take new
    # entries. A real probe file, not os.access, which says yes to root on a read-only volume.
    check_output_dir(target.parent, what="parent directory of the output")
    return target


@contextlib.contextmanager
def replaced_dir(out: str | os.PathLike[str], *, owned: Collection[str]) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``out`` as a whole.

    On an exception the staging directory is removed and ``out`` is left as it was.

    Args:
        out: The output directory (created if missing; an older run in it is replaced).
        owned: File names a run may write (see :func:`check_replaceable_dir`).

    Raises:
        ConfigError: See :func:`check_replaceable_dir`, or the staging directory cannot be made.
        OutputWriteError: A write into the staging directory (or the swap) failed with an
            ``OSError`` (disk full, quota, read-only, file-size limit); ``out`` is unchanged.
    """
    target = check_replaceable_dir(out, owned=owned)
    target.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    staging = sibling_name(target, f".staging-{token}")
    try:
        try:
            os.mkdir(staging)
        except OSError as exc:
            raise ConfigError(
                f"cannot write output directory {out}: {exc.strerror or exc}",
                "choose another --out",
            ) from exc
        try:
            yield staging
            old = sibling_name(target, f".old-{token}")
            # Under the CLI, Ctrl-C from here on is recorded, not raised: the swap completes
            # (or is undone on an error) and a complete report is not reported as interrupted.
            with swapping_output():
                if target.exists():
                    os.rename(target, old)
                try:
                    os.rename(staging, target)
                except BaseException:
                    if old.exists() and not target.exists():  # the new run is not in place
                        os.rename(old, target)
                    raise
        except OSError as exc:
            # A disk that fills (or a quota, a read-only remount, a file-size limit) while the
            # run is written: the staging directory goes, the previous run stays.
            raise _write_failed(out, target, staging, exc) from exc
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_failed(
    out: str | os.PathLike[str], target: Path, staging: Path, exc: OSError
) -> OutputWriteError:
    """The error for a write into ``staging`` (or the swap) that failed with ``exc``."""
    name = Path(exc.filename).name if isinstance(exc.filename, str) else None
    if name is not None and TMP_MARKER in name:  # a temporary file next to its target
        name = name[1:].split(TMP_MARKER)[0]
    failed = f"writing {name} failed" if name and name != staging.name else "the write failed"
    kept = (
        f"the previous report in {out} is left as it was"
        if target.exists()
        else "nothing was written"
    )
    return OutputWriteError(
        f"cannot write output directory {out}: {failed} ({describe_os_error(exc)}); {kept}",
        f"free space (or raise the quota or file-size limit) where {out} lives, or choose "
        "another --out, and run again",
    )
