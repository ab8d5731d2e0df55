"""Plots of a scoring run: the SSLMem histogram per set and a grid of the extreme candidates.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas -- no pyplot,
no global figure state, no display -- so plotting is thread-safe inside the scoring service and
the same inputs give byte-identical PNGs (fixed size, DPI, colours, and no timestamp or software
version in the PNG metadata).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sslmem.atomic import atomic_path
from sslmem.errors import DataError

#: Colour of each scored set (the protocol's order); unknown sets cycle through the rest.
SET_COLOURS: dict[str, str] = {
    "candidate": "#d62728",
    "independent": "#1f77b4",
    "extra": "#2ca02c",
    "shared": "#7f7f7f",
}
_EXTRA_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#ff7f0e")
_SET_ORDER = tuple(SET_COLOURS)
_DPI = 100
_PNG_METADATA: dict[str, str | None] = {"Software": None}


def _save(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Render ``figure`` to a PNG at ``path`` atomically (temp file, then rename)."""
    target = Path(path)
    FigureCanvasAgg(figure)
    with atomic_path(target, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    return target


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Render ``figure`` to a deterministic PNG at ``path`` atomically (other reports' figures)."""
    return _save(figure, path)


def _ordered_sets(names: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(names))
    known = [name for name in _SET_ORDER if name in present]
    return known + sorted(name for name in present if name not in SET_COLOURS)


def _colour(name: str, position: int) -> str:
    return SET_COLOURS.get(name, _EXTRA_COLOURS[position % len(_EXTRA_COLOURS)])


def sslmem_histogram(
    columns: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    score_column: str = "sslmem_raw",
    bins: int = 40,
    title: str = "SSLMem per scored set",
) -> Path:
    """Overlaid histograms of raw SSLMem, one per scored set, with the means in the legend.

    All sets share one set of bin edges so their shapes compare directly; a dashed line marks
    each set's mean and a solid line zero (the protocol expects S_C above, S_I below, S_E and
    S_S near it; Wang et al., ICLR 2024).

    Args:
        columns: Per-point columns of a :class:`~sslmem.memorization.scoring.ScoreReport`:
            ``"set"`` (``[N]`` str) and ``score_column`` (``[N]`` float).
        path: Destination PNG (parent directories are created).
        score_column: Which score to plot (raw SSLMem by default).
        bins: Number of shared bins.
        title: Figure title.

    Returns:
        The path written.

    Raises:
        DataError: A column is missing, the lengths differ, there are no points, or a score is
            NaN or infinite.

    """
    for key in ("set", score_column):
        if key not in columns:
            raise DataError(
                f"score columns lack {key!r} (have {sorted(columns)})",
                "pass ScoreReport.columns",
            )
    sets = np.asarray(columns["set"]).astype(str)
    scores = np.asarray(columns[score_column], dtype=np.float64)
    if sets.ndim != 1 or scores.shape != sets.shape:
        raise DataError(
            f"'set' and {score_column!r} must be 1-D of equal length, got {sets.shape} and "
            f"{scores.shape}"
        )
    if scores.size == 0:
        raise DataError("no scores to plot", "score at least one point")
    if not np.all(np.isfinite(scores)):
        raise DataError(f"{score_column!r} holds NaN or infinite values")
    bins = max(1, int(bins))
    low, high = float(scores.min()), float(scores.max())
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)

    figure = Figure(figsize=(7.0, 4.2))
    axes = figure.add_subplot()
    for position, name in enumerate(_ordered_sets(sets.tolist())):
        values = scores[sets == name]
        colour = _colour(name, position)
        mean = float(values.mean())
        label = f"{name} (n={values.size}, mean={mean:+.4f})"
        axes.hist(values, bins=edges.tolist(), alpha=0.45, color=colour, label=label)
        axes.axvline(mean, color=colour, linestyle="--", linewidth=1.2)
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel(f"SSLMem ({score_column})")
    axes.set_ylabel("points")
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize="small", frameon=False)
    figure.tight_layout()
    return _save(figure, path)


def _as_numpy(values: Any, name: str) -> npt.NDArray[Any]:
    if isinstance(values, torch.Tensor):
        return np.asarray(values.detach().cpu().numpy())
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as exc:  # pragma: no cover - exotic inputs
        raise DataError(f"{name} is not array-like: {exc}") from exc


def _extremes(
    scores: npt.NDArray[np.float64], sample_indices: npt.NDArray[np.int64], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row positions of the ``k`` highest and ``k`` lowest scores (ties: lower sample index)."""
    highest = np.lexsort((sample_indices, -scores))[:k]
    lowest = np.lexsort((sample_indices, scores))[:k]
    return highest.astype(np.int64), lowest.astype(np.int64)


def memorised_grid(
    images: torch.Tensor | npt.NDArray[np.uint8],
    scores: Sequence[float] | npt.NDArray[np.floating[Any]] | torch.Tensor,
    sample_indices: Sequence[int] | npt.NDArray[np.integer[Any]] | torch.Tensor,
    path: str | os.PathLike[str],
    *,
    k: int = 16,
    columns: int = 8,
    title: str = "Most and least memorised candidates (SSLMem)",
) -> Path:
    """A grid of the ``k`` most and ``k`` least memorised candidate images with their scores.

    The top block shows the highest SSLMem first, the bottom block the lowest first; each image
    is captioned with its dataset index and score. Ties are broken by the lower dataset index,
    so the grid is deterministic.

    Args:
        images: uint8 ``[N, C, H, W]`` with ``C`` = 1 (grey) or 3 (RGB), indexed by
            ``sample_indices`` (typically the whole dataset's images).
        scores: ``[M]`` SSLMem of the candidate points.
        sample_indices: ``[M]`` dataset indices of those points (rows of ``images``).
        path: Destination PNG (parent directories are created).
        k: Images per block (capped at ``M``).
        columns: Images per grid row.
        title: Figure title.

    Returns:
        The path written.

    Raises:
        DataError: Wrong image dtype or shape, mismatched lengths, no points, an index out of
            range, or a non-finite score.

    """
    array = _as_numpy(images, "images")
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] not in (1, 3):
        raise DataError(
            f"images must be uint8 [N, C, H, W] with C in (1, 3), got {array.dtype} "
            f"{tuple(array.shape)}",
            "pass the dataset's raw uint8 images",
        )
    values = _as_numpy(scores, "scores").astype(np.float64).reshape(-1)
    indices = _as_numpy(sample_indices, "sample_indices").astype(np.int64).reshape(-1)
    if values.shape != indices.shape:
        raise DataError(
            f"scores ({values.size}) and sample_indices ({indices.size}) differ in length"
        )
    if values.size == 0:
        raise DataError("no scored points to show", "score at least one candidate point")
    if not np.all(np.isfinite(values)):
        raise DataError("scores hold NaN or infinite values")
    if indices.min() < 0 or indices.max() >= array.shape[0]:
        raise DataError(
            f"sample_indices must lie in [0, {array.shape[0]}), got [{indices.min()}, "
            f"{indices.max()}]",
            "pass the images the indices refer to (the whole dataset)",
        )
    if k < 1 or columns < 1:
        raise DataError(f"k and columns must be >= 1, got k={k}, columns={columns}")
    k = min(k, values.size)
    columns = min(columns, k)
    highest, lowest = _extremes(values, indices, k)
    rows_per_block = math.ceil(k / columns)

    side = 1.25
    figure = Figure(figsize=(columns * side, 2 * rows_per_block * (side + 0.3) + 0.9))
    grid = figure.add_gridspec(2 * rows_per_block, columns, hspace=0.55, wspace=0.08)
    blocks = (("most memorised", highest), ("least memorised", lowest))
    for block, (label, positions) in enumerate(blocks):
        for slot in range(rows_per_block * columns):
            axes = figure.add_subplot(
                grid[block * rows_per_block + slot // columns, slot % columns]
            )
            axes.set_xticks([])
            axes.set_yticks([])
            if slot >= len(positions):
                axes.set_axis_off()
                continue
            row = int(positions[slot])
            image = array[int(indices[row])]
            if image.shape[0] == 1:
                axes.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                axes.imshow(image.transpose(1, 2, 0), interpolation="nearest")
            axes.set_title(f"#{int(indices[row])}\n{values[row]:+.3f}", fontsize=7)
            if slot == 0:
                axes.set_ylabel(label, fontsize=8)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


#: File names of the figures that :func:`write_score_figures` writes.
HISTOGRAM_FILE = "sslmem_histogram.png"
GRID_FILE = "memorised_grid.png"


def write_score_figures(
    columns: Mapping[str, Any],
    folder: str | os.PathLike[str],
    images: torch.Tensor | npt.NDArray[np.uint8] | None = None,
    *,
    grid_k: int = 16,
) -> dict[str, Path]:
    """Write the figures of one scoring run: the histogram per set and the candidate grid.

    The one place both the CLI (``sslmem score``) and the MLflow layer draw a report's figures,
    so a run's PNGs are the same wherever they were made.

    Args:
        columns: Per-point columns of a :class:`~sslmem.memorization.scoring.ScoreReport`
            (``"set"``, ``"sslmem_raw"``, ``"sample_index"``; each ``[N]``).
        folder: Destination folder (created if missing).
        images: The dataset's uint8 images ``[M, C, H, W]``, indexed by ``sample_index``. Without
            them, or when no candidate was scored, the grid is skipped.
        grid_k: Images per block of the grid.

    Returns:
        ``{"histogram": path}`` plus ``"grid"`` when the grid was drawn.

    Raises:
        DataError: See :func:`sslmem_histogram` and :func:`memorised_grid`.

    """
    target = Path(folder)
    written = {"histogram": sslmem_histogram(columns, target / HISTOGRAM_FILE)}
    sets = np.asarray(columns["set"]).astype(str)
    candidate = sets == "candidate"
    if images is not None and bool(candidate.any()):
        if "sample_index" not in columns:
            raise DataError("score columns lack 'sample_index'", "pass ScoreReport.columns")
        scores = np.asarray(columns["sslmem_raw"], dtype=np.float64)[candidate]
        indices = np.asarray(columns["sample_index"], dtype=np.int64)[candidate]
        written["grid"] = memorised_grid(images, scores, indices, target / GRID_FILE, k=grid_k)
    return written


#: File names of the per-layer and per-unit figures.
LAYERMEM_FILE = "layermem.png"
UNITMEM_FILE = "unitmem.png"


def _column(columns: Mapping[str, Any], key: str, what: str) -> npt.NDArray[Any]:
    if key not in columns:
        raise DataError(f"{what} lacks column {key!r} (have {sorted(columns)})")
    return np.asarray(columns[key])


def layermem_figure(
    table: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    focus: str = "candidate",
    title: str = "Memorisation by layer (LayerMem, Wang et al., NeurIPS 2024)",
) -> Path:
    """Three panels by layer.

    Top: mean raw SSLMem of every scored set (comparable across sets; zero marked). Middle:
    LayerMem and bottom: ΔLayerMem (what each layer adds; the first layer's, its LayerMem, is
    hatched) of the ``focus`` set only -- they are
    normalised within each set, so lines of different sets would invite a comparison of levels
    the normalisation has erased; without the ``focus`` set, every set is drawn.

    Args:
        table: The per-layer table of a layer-scoring run (``layer``, ``layer_index``, ``set``,
            ``sslmem_mean``, ``layermem``, ``delta_layermem``; one entry per layer and set).
        path: Destination PNG.
        focus: The set whose LayerMem and ΔLayerMem are drawn (the paper's: S_C).
        title: Figure title.

    Returns:
        The path written.

    Raises:
        DataError: A column is missing, the table is empty or holds NaN/inf.

    """
    what = "the layer table"
    layer_col = _column(table, "layer", what).astype(str)
    index_col = _column(table, "layer_index", what).astype(np.int64)
    set_col = _column(table, "set", what).astype(str)
    values = {
        key: _column(table, key, what).astype(np.float64)
        for key in ("sslmem_mean", "layermem", "delta_layermem")
    }
    if layer_col.size == 0:
        raise DataError("no layers to plot", "score at least one layer")
    if not all(np.all(np.isfinite(v)) for v in values.values()):
        raise DataError("the layer table holds NaN or infinite values")
    layers = [str(layer_col[index_col == i][0]) for i in sorted(set(index_col.tolist()))]
    positions = np.arange(len(layers), dtype=np.float64)
    sets = _ordered_sets(set_col.tolist())
    normalised = [focus] if focus in sets else sets

    figure = Figure(figsize=(max(6.5, 1.1 * len(layers) + 2.5), 8.4))
    top, middle, bottom = (figure.add_subplot(3, 1, i) for i in (1, 2, 3))
    width = 0.8 / len(normalised)
    for position, name in enumerate(sets):
        rows = np.flatnonzero(set_col == name)
        rows = rows[np.argsort(index_col[rows])]
        x = index_col[rows].astype(np.float64)
        colour = _colour(name, position)
        top.plot(x, values["sslmem_mean"][rows], marker="o", color=colour, label=name)
        if name not in normalised:
            continue
        middle.plot(x, values["layermem"][rows], marker="o", color=colour, label=name)
        offset = (normalised.index(name) - (len(normalised) - 1) / 2) * width
        bars = bottom.bar(x + offset, values["delta_layermem"][rows], width=width, color=colour)
        # The first layer's ΔLayerMem is its LayerMem (nothing before it): drawn hatched.
        bars[0].set_alpha(0.45)
        bars[0].set_hatch("//")
    top.axhline(0.0, color="black", linewidth=0.8)
    bottom.axhline(0.0, color="black", linewidth=0.8)
    top.set_ylabel("mean raw SSLMem")
    shown = ", ".join(normalised)
    middle.set_ylabel(f"LayerMem ({shown})")
    middle.set_ylim(-0.02, 1.02)
    bottom.set_ylabel(f"ΔLayerMem ({shown})")
    for axes in (top, middle, bottom):
        axes.set_xticks(positions.tolist())
        axes.set_xticklabels([])
        axes.grid(axis="y", alpha=0.3)
    bottom.set_xticklabels(layers, rotation=30, ha="right", fontsize="small")
    top.legend(loc="best", fontsize="small", frameon=False)
    top.set_title(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def unitmem_figure(
    table: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    title: str = "UnitMem per unit by layer (Wang et al., NeurIPS 2024)",
) -> Path:
    """UnitMem distribution per layer: a box per layer with every unit drawn as a dot.

    Args:
        table: The per-unit table of a UnitMem run (``layer`` and ``unitmem``, one entry per
            unit, layers in forward order).
        path: Destination PNG.
        title: Figure title.

    Returns:
        The path written.

    Raises:
        DataError: A column is missing, the table is empty or holds NaN/inf.

    """
    what = "the unit table"
    layer_col = _column(table, "layer", what).astype(str)
    scores = _column(table, "unitmem", what).astype(np.float64)
    if scores.size == 0:
        raise DataError("no units to plot", "score at least one layer")
    if not np.all(np.isfinite(scores)):
        raise DataError("the unit table holds NaN or infinite values")
    layers = list(dict.fromkeys(layer_col.tolist()))
    groups = [scores[layer_col == layer] for layer in layers]
    figure = Figure(figsize=(max(6.5, 1.1 * len(layers) + 2.5), 4.6))
    axes = figure.add_subplot()
    axes.boxplot(groups, showfliers=False, widths=0.5)
    jitter = np.random.default_rng(0)  # fixed: the same table gives the same PNG
    for i, group in enumerate(groups, start=1):
        x = i + jitter.uniform(-0.18, 0.18, size=group.size)
        axes.scatter(x, group, s=6, alpha=0.45, color="#d62728", linewidths=0)
    axes.set_xticks(range(1, len(layers) + 1))
    labels = [f"{layer}\n({group.size} units)" for layer, group in zip(layers, groups, strict=True)]
    axes.set_xticklabels(labels, rotation=30, ha="right", fontsize="small")
    axes.set_ylabel("UnitMem")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(axis="y", alpha=0.3)
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)
