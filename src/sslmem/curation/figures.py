"""The figures of a curation study's report.

* ``accuracy_vs_k.png``: downstream accuracy against the number of removed candidates, one line
  per strategy with its 95 % band over seeds (Wang et al., ICLR 2024, Fig. 5 in spirit).
* ``onion_shift.png``: the SSLMem shift of the remaining candidates per removal, and the removed
  candidates' SSLMem before and after (Carlini et al., NeurIPS 2022, for SSL).
* ``sslmem_vs_atypicality.png``: SSLMem of each candidate against its atypicality.
* ``memorised_vs_typical.png``: the most memorised candidates next to the most typical ones.

Drawn like :mod:`sslmem.reporting.plots`: bare Agg figures, fixed size, deterministic PNGs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from sslmem.curation.analysis import ArmSummary, OnionSummary
from sslmem.curation.plan import FULL
from sslmem.curation.statistics import Correlation
from sslmem.reporting.plots import save_figure

ACCURACY_FILE = "accuracy_vs_k.png"
ONION_FILE = "onion_shift.png"
ATYPICALITY_FILE = "sslmem_vs_atypicality.png"
GRID_FILE = "memorised_vs_typical.png"
STRATEGY_COLOURS = {"top": "#d62728", "random": "#7f7f7f", "bottom": "#1f77b4"}
_METRIC_LABELS = {"knn_accuracy": "kNN accuracy", "linear_probe_accuracy": "linear-probe accuracy"}


def accuracy_figure(arms: Sequence[ArmSummary], path: Path, *, subtitle: str) -> Path:
    """Accuracy against k per strategy; the full-data control is every line's k = 0 point."""
    figure = Figure(figsize=(10, 4.2))
    for position, metric in enumerate(_METRIC_LABELS):
        axes = figure.add_subplot(1, 2, position + 1)
        full = [a for a in arms if a.metric == metric and a.strategy == FULL]
        for strategy, colour in STRATEGY_COLOURS.items():
            line = sorted(
                (a for a in arms if a.metric == metric and a.strategy == strategy),
                key=lambda a: a.k,
            )
            if not line:
                continue
            line = full + line
            k = np.array([a.k for a in line])
            mean = np.array([a.mean for a in line])
            axes.plot(k, mean, marker="o", color=colour, label=f"remove {strategy}-k")
            low = np.array([a.ci95_low for a in line])
            high = np.array([a.ci95_high for a in line])
            if np.isfinite(low).all():
                axes.fill_between(k, low, high, color=colour, alpha=0.15, linewidth=0)
        axes.set_xlabel("candidates removed (k)")
        axes.set_ylabel(_METRIC_LABELS[metric])
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(
        f"Downstream accuracy after removal (mean, 95 % CI over seeds)\n{subtitle}", fontsize=10
    )
    figure.tight_layout()
    return save_figure(figure, path)


def onion_figure(onion: Sequence[OnionSummary], path: Path, *, subtitle: str) -> Path:
    """Remaining candidates' SSLMem shift per removal; removed candidates before/after."""
    figure = Figure(figsize=(10, 4.2))
    shift_axes = figure.add_subplot(1, 2, 1)
    removed_axes = figure.add_subplot(1, 2, 2)
    sizes = sorted({o.k for o in onion})
    strategies = [s for s in STRATEGY_COLOURS if any(o.strategy == s for o in onion)]
    width = 0.8 / max(len(strategies), 1)
    for j, strategy in enumerate(strategies):
        for i, k in enumerate(sizes):
            match = [o for o in onion if o.strategy == strategy and o.k == k]
            if not match:
                continue
            summary = match[0]
            x = i + (j - (len(strategies) - 1) / 2) * width
            colour = STRATEGY_COLOURS[strategy]
            label = strategy if i == 0 else None
            shift_axes.bar(x, summary.mean_shift, width * 0.9, color=colour, alpha=0.6, label=label)
            shift_axes.scatter(
                [x] * summary.retrains,
                [s.mean_shift for s in summary.per_retrain],
                color=colour,
                s=10,
                zorder=3,
            )
            removed_axes.plot(
                [x - width / 3, x + width / 3],
                [summary.removed_before, summary.removed_after],
                color=colour,
                marker="o",
                label=label,
            )
    for axes in (shift_axes, removed_axes):
        axes.set_xticks(range(len(sizes)), [f"k = {k}" for k in sizes])
        axes.axhline(0.0, color="black", linewidth=0.6)
        axes.grid(alpha=0.3, axis="y")
        axes.legend(fontsize=8)
    shift_axes.set_ylabel("mean SSLMem shift of remaining candidates")
    shift_axes.set_title("remaining: retrained minus full-data encoder", fontsize=9)
    removed_axes.set_ylabel("mean SSLMem of removed candidates")
    removed_axes.set_title("removed: under full-data (left) and retrained (right)", fontsize=9)
    figure.suptitle(f"Onion effect: what removal does to the rest\n{subtitle}", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def atypicality_figure(
    atypicality: npt.NDArray[np.float64],
    sslmem: npt.NDArray[np.float64],
    correlation: Correlation,
    path: Path,
    *,
    subtitle: str,
) -> Path:
    """SSLMem ``[n]`` against atypicality ``[n]`` of the candidates, with Spearman's rho."""
    figure = Figure(figsize=(5.5, 4.5))
    axes = figure.add_subplot(1, 1, 1)
    axes.scatter(atypicality, sslmem, s=12, color="#d62728", alpha=0.7)
    axes.set_xlabel("atypicality (kNN cosine distance, reference embedding)")
    axes.set_ylabel("SSLMem (raw)")
    axes.grid(alpha=0.3)
    axes.set_title(
        f"Spearman rho = {correlation.rho:+.2f} [{correlation.ci95_low:+.2f}, "
        f"{correlation.ci95_high:+.2f}], p = {correlation.p_value:.1e}, n = {correlation.n}\n"
        f"{subtitle}",
        fontsize=8,
    )
    figure.tight_layout()
    return save_figure(figure, path)


def memorised_vs_typical_grid(
    images: npt.NDArray[np.uint8],
    blocks: Sequence[tuple[str, npt.NDArray[np.int64], Sequence[str]]],
    path: Path,
    *,
    columns: int = 8,
) -> Path:
    """Rows of images: one block per ``(label, dataset indices, captions)``.

    Args:
        images: uint8 ``[N, C, H, W]`` (C = 1 or 3), indexed by dataset index.
        blocks: e.g. the most memorised and the most typical candidates.
        path: Destination PNG.
        columns: Images per row.

    """
    rows = [math.ceil(len(indices) / columns) for _, indices, _ in blocks]
    side = 1.25
    figure = Figure(figsize=(columns * side, sum(rows) * (side + 0.35) + 0.8))
    grid = figure.add_gridspec(sum(rows), columns, hspace=0.6, wspace=0.08)
    first_row = 0
    for (label, indices, captions), block_rows in zip(blocks, rows, strict=True):
        for slot in range(block_rows * columns):
            axes = figure.add_subplot(grid[first_row + slot // columns, slot % columns])
            axes.set_xticks([])
            axes.set_yticks([])
            if slot >= len(indices):
                axes.set_axis_off()
                continue
            image = images[int(indices[slot])]
            if image.shape[0] == 1:
                axes.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                axes.imshow(image.transpose(1, 2, 0), interpolation="nearest")
            axes.set_title(captions[slot], fontsize=7)
            if slot == 0:
                axes.set_ylabel(label, fontsize=8)
        first_row += block_rows
    figure.suptitle(
        "Most memorised candidates (top) and most typical candidates (bottom)", fontsize=10
    )
    return save_figure(figure, path)
