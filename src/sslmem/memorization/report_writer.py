"""Writing a score report directory as a whole: table, summary, figures, extra outputs.

A report is swapped in atomically (:mod:`sslmem.reporting.outdir`); a directory holding
anything but a score report is refused before the work (:func:`check_report_dir`: the output
check of :func:`sslmem.outputs.check_replaceable_dir` with a score report's file names).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sslmem.atomic import naming_failed_writes
from sslmem.memorization.report_files import (
    SUMMARY_FILE,
    ScoreFormat,
    report_file_names,
)
from sslmem.memorization.report_schema import SCORE_COLUMNS, ScoreReport
from sslmem.outputs import check_replaceable_dir


def check_report_dir(out_dir: Path) -> None:
    """Refuse an output directory that cannot take a report, before any work is done.

    Raises:
        OutputError: ``out_dir`` is a file, holds files that are not a score report, or
            neither it nor its parent is writable (:func:`sslmem.outputs.check_replaceable_dir`).
    """
    check_replaceable_dir(out_dir, owned=report_file_names())


def _write_table(columns: dict[str, Any], path: Path, fmt: ScoreFormat) -> None:
    import pyarrow as pa

    table = pa.table({name: columns[name] for name in SCORE_COLUMNS})
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)


def write_score_outputs(
    report: ScoreReport,
    out_dir: Path,
    *,
    fmt: ScoreFormat = "parquet",
    images: torch.Tensor | None = None,
    plots: bool = False,
    grid_k: int = 16,
    extra: Callable[[Path], Sequence[Path]] | None = None,
) -> list[Path]:
    """Replace ``out_dir`` with this run's report as a whole: table, summary and figures.

    Everything is written into a sibling staging directory, then swapped in (see
    :func:`sslmem.reporting.outdir.replaced_dir`): a reader never sees new figures beside an
    old summary, and no file of an older run survives. A directory holding anything but a
    score report is refused, never overwritten.

    Args:
        report: The report.
        out_dir: The report directory (created; an older report in it is replaced).
        fmt: Table format.
        images: The dataset's uint8 images ``[M, C, H, W]`` for the grid of most/least memorised
            candidates (``None``: no grid).
        plots: Draw the figures (:func:`sslmem.reporting.write_score_figures`).
        grid_k: Images per block of the grid.
        extra: Writes further outputs of the same run into the staging directory it is given
            and returns their paths (e.g. the per-layer report of ``sslmem score --layers``), so
            they are swapped in together with the rest.

    Returns:
        The paths written, in ``out_dir``: table, summary, figures, extra outputs.

    Raises:
        OutputError: See :func:`check_report_dir`.
        OutputWriteError: A file could not be written (disk full, quota, read-only volume,
            file-size limit); the message names it, and ``out_dir`` is left as it was.
    """
    from sslmem.reporting.outdir import replaced_dir

    summary_json = report.summary.model_dump_json(indent=2)
    json.loads(summary_json)  # fail here, not in a reader, if it is not valid JSON
    with replaced_dir(out_dir, owned=report_file_names()) as staging:
        table_name = f"scores.{fmt}"
        with naming_failed_writes(staging / table_name):
            _write_table(report.columns, staging / table_name, fmt)
        with naming_failed_writes(staging / SUMMARY_FILE):
            (staging / SUMMARY_FILE).write_text(summary_json + "\n")
        names = [table_name, SUMMARY_FILE]
        if plots:
            from sslmem.reporting.plots import write_score_figures

            figures = write_score_figures(report.columns, staging, images, grid_k=grid_k)
            names += [path.name for path in figures.values()]
        if extra is not None:
            names += [path.name for path in extra(staging)]
    return [out_dir / name for name in names]


def write_score_report(report: ScoreReport, out_dir: Path, *, fmt: ScoreFormat = "parquet") -> Path:
    """Replace ``out_dir`` with ``scores.<fmt>`` and ``summary.json`` (no figures).

    See :func:`write_score_outputs`.

    Returns:
        The summary's path.
    """
    write_score_outputs(report, out_dir, fmt=fmt)
    return out_dir / SUMMARY_FILE
