"""Reports of scoring runs: plots (PNG) written with matplotlib's Agg backend, no display."""

from sslmem.reporting.plots import memorised_grid, sslmem_histogram

__all__ = ["memorised_grid", "sslmem_histogram"]
