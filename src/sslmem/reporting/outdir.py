"""Output directories replaced as a whole: stage every file of a run, then swap.

A report directory (scores, summary, figures) must never mix runs: a file of an older run left
beside a new summary, or new figures beside an old summary after an interruption, would be read
as one report. So a run writes all its files into a hidden sibling staging directory and then
swaps it in with two renames (old -> hidden, staging -> target). Whatever moment the process
dies, the target holds one complete run or is absent (the previous run then sits in a hidden
``.<name>.old-*`` sibling); it never holds a mixture. Both siblings cut ``<name>`` short as far
as ``NAME_MAX`` needs (:func:`sslmem.atomic.sibling_name`): any name that fits is usable.

What is checked before the work (names, a file in the way, files of something else, a parent that
takes no new entries) is :func:`sslmem.outputs.check_replaceable_dir`; this module only writes.
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
from sslmem.outputs import check_replaceable_dir, describe_os_error


@contextlib.contextmanager
def replaced_dir(out: str | os.PathLike[str], *, owned: Collection[str]) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``out`` as a whole.

    On an exception the staging directory is removed and ``out`` is left as it was.

    Args:
        out: The output directory (created if missing; an older run in it is replaced).
        owned: File names a run may write (see :func:`sslmem.outputs.check_replaceable_dir`).

    Raises:
        OutputError: See :func:`sslmem.outputs.check_replaceable_dir`.
        ConfigError: The staging directory cannot be made.
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
