"""The files of a score report directory, named in one place.

The writers (:mod:`sslmem.memorization.scoring`, :mod:`sslmem.memorization.layer_scoring`) and
the directory check that refuses to overwrite anything else (``check_report_dir``) read these
names; keeping them here, below both writers, is what lets the per-layer writer import the score
report's schema without a circle back.
"""

from __future__ import annotations

from typing import Literal

ScoreFormat = Literal["parquet", "csv"]
TABLE_FILES = ("scores.parquet", "scores.csv")
SUMMARY_FILE = "summary.json"
LAYER_TABLE_FILE = "layers"  # + .parquet / .csv
LAYER_POINTS_FILE = "layer_scores"  # + .parquet / .csv
LAYER_SUMMARY_FILE = "layers.json"


def layer_report_file_names() -> tuple[str, ...]:
    """Every file a per-layer report adds to a score report directory (tables, JSON, figure)."""
    from sslmem.reporting.plots import LAYERMEM_FILE  # matplotlib: loaded when needed

    tables = [
        f"{name}.{fmt}"
        for name in (LAYER_TABLE_FILE, LAYER_POINTS_FILE)
        for fmt in ("parquet", "csv")
    ]
    return (*tables, LAYER_SUMMARY_FILE, LAYERMEM_FILE)


def report_file_names() -> tuple[str, ...]:
    """Every file a score report directory may hold (tables, summary, figures, layers)."""
    from sslmem.reporting.plots import GRID_FILE, HISTOGRAM_FILE

    return (*TABLE_FILES, SUMMARY_FILE, HISTOGRAM_FILE, GRID_FILE, *layer_report_file_names())
