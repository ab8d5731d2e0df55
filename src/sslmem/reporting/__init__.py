"""Reports of scoring runs: plots (PNG) written with matplotlib's Agg backend, no display."""

from sslmem.reporting.plots import (
    GRID_FILE,
    HISTOGRAM_FILE,
    LAYERMEM_FILE,
    UNITMEM_FILE,
    layermem_figure,
    memorised_grid,
    sslmem_histogram,
    unitmem_figure,
    write_score_figures,
)

__all__ = [
    "GRID_FILE",
    "HISTOGRAM_FILE",
    "LAYERMEM_FILE",
    "UNITMEM_FILE",
    "layermem_figure",
    "memorised_grid",
    "sslmem_histogram",
    "unitmem_figure",
    "write_score_figures",
]
