"""Draw docs/img/layers.png: sslmem's packages by layer, with the imports between them.

Drawn from the code, not by hand: the import graph and the layers are those
``tests/test_layering.py`` checks (no circles, nothing imports upward). Run after moving code:

    .venv/bin/python scripts/layers_figure.py
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.test_layering import LAYERS, import_graph  # noqa: E402


def package(module: str) -> str | None:
    """The top-level package (or module) of ``sslmem.<top>...``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def main(out: Path = REPO / "docs" / "img" / "layers.png") -> Path:
    """Write the figure; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph, _ = import_graph()
    present = {p for m in graph if (p := package(m)) is not None}
    rows = [sorted(layer & present) for layer in LAYERS]
    position: dict[str, tuple[float, float]] = {}
    for level, row in enumerate(rows):
        for slot, name in enumerate(row):
            position[name] = ((slot + 0.5) / len(row), float(level))
    edges: Counter[tuple[str, str]] = Counter()
    for module, imported in graph.items():
        for other in imported:
            a, b = package(module), package(other)
            if a and b and a != b and a in position and b in position:
                edges[(a, b)] += 1
    fig, ax = plt.subplots(figsize=(13, 8.5))
    for (a, b), count in sorted(edges.items()):
        (xa, ya), (xb, yb) = position[a], position[b]
        ax.annotate(
            "",
            xy=(xb, yb + 0.12),
            xytext=(xa, ya - 0.12),
            arrowprops={"arrowstyle": "->", "color": "#7a8ca3", "alpha": 0.45,
                        "lw": 0.6 + 0.25 * min(count, 8)},
        )  # fmt: skip
    for name, (x, y) in position.items():
        count_of = sum(1 for m in graph if package(m) == name)
        ax.text(
            x, y, f"{name}\n({count_of} module{'s' if count_of > 1 else ''})",
            ha="center", va="center", fontsize=9,
            bbox={"boxstyle": "round,pad=0.35", "fc": "#eef3f8", "ec": "#33557a"},
        )  # fmt: skip
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"layer {i}" for i in range(len(rows))])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(
        "sslmem's packages by layer (bottom: imported by everything above); arrows: imports, "
        "width ~ module pairs\nread from src/ by tests/test_layering.py: no circles, no arrow "
        "points upward",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
