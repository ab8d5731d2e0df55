"""Render the dashboard's main panel -- Δ mean SSLMem vs champion with min_delta -- to a PNG.

No Grafana server is needed: the panel's own queries (read from the committed dashboard JSON)
run on a Prometheus HTTP API and matplotlib draws the result the way the panel does (one line
per version, the model's ``min_delta`` as a red dashed line). docs/monitoring.md's picture is
made this way from the integration test's real Prometheus::

    SSLMEM_UPDATE_DOCS_IMG=1 .venv/bin/python -m pytest tests/integration/test_dashboard_queries.py

or by hand against any Prometheus that scrapes ``sslmem serve``::

    python deploy/grafana/render_panel.py --prometheus http://127.0.0.1:9090 --model enc \
        --minutes 60 --out regression.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent / "sslmem-dashboard.json"
#: The main regression panel of deploy/grafana/dashboard.py (target A: Δ, target B: min_delta).
REGRESSION_PANEL = "Δ mean SSLMem vs champion (regression threshold dashed)"
#: ``(metric labels, [(unix seconds, value), ...])`` per series, as query_range returns them.
Series = list[tuple[dict[str, str], list[tuple[float, float]]]]


def substitute(expr: str, *, model: str, rate_interval: str = "1m", range_: str = "1h") -> str:
    """Replace Grafana's variables in a panel query as Grafana would for one selected model.

    Args:
        expr: A target's ``expr`` from the dashboard JSON.
        model: The ``$model`` selection (one model; regex metacharacters are escaped, as
            Grafana does for a regex-matched variable).
        rate_interval: Value of ``$__rate_interval`` (at least four scrape intervals).
        range_: Value of ``$__range`` (the dashboard's time range).

    Returns:
        A plain PromQL expression.
    """
    escaped = re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", model)
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__range", range_)
        .replace("$model", escaped)
    )


def panel_targets(board: dict[str, Any], title: str) -> dict[str, str]:
    """``{refId: expr}`` of the panel titled ``title``.

    Raises:
        KeyError: No panel has that title (the generator renamed it: update ``REGRESSION_PANEL``).
    """
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            if inner.get("title") == title:
                return {t["refId"]: t["expr"] for t in inner.get("targets", [])}
    raise KeyError(f"no panel titled {title!r} in the dashboard; update REGRESSION_PANEL")


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> Series:
    """Run ``expr`` on ``/api/v1/query_range`` and return its matrix.

    Raises:
        RuntimeError: Prometheus answered an error (e.g. the expression does not parse).
    """
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    url = f"{prometheus.rstrip('/')}/api/v1/query_range?{params}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:  # 400/422 carry Prometheus' error JSON
        body = json.load(exc)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {body.get('error', body)}")
    return [
        (item["metric"], [(float(t), float(v)) for t, v in item["values"]])
        for item in body["data"]["result"]
    ]


def render(deltas: Series, thresholds: Series, out: Path, *, model: str) -> Path:
    """Draw the regression panel: one line per version's Δ, the model's min_delta dashed.

    Args:
        deltas: Target A's series (``sslmem_version_champion_delta{quantity="sslmem_mean"}``).
        thresholds: Target B's series (``sslmem_model_policy{setting="min_delta"}``).
        out: PNG path (parents created).
        model: Shown in the title.

    Returns:
        ``out``.

    Raises:
        ValueError: ``deltas`` is empty (nothing to draw: no version judged in the range).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    if not deltas:
        raise ValueError(f"no Δ series for model {model!r} in the range: nothing to draw")
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=110)
    times = [t for _, points in [*deltas, *thresholds] for t, _ in points]
    for labels, points in sorted(deltas, key=lambda s: int(s[0].get("version", "0"))):
        alias = labels.get("alias") or ""
        label = f"v{labels.get('version', '?')}" + (f" ({alias})" if alias else "")
        ax.plot(
            _dates(points),
            [v for _, v in points],
            linewidth=2,
            marker="." if len(points) <= 60 else None,  # dots only where they stay readable
            markersize=4,
            label=label,
        )
    for labels, points in thresholds:
        ax.plot(
            _dates(points),
            [v for _, v in points],
            color="red",
            linestyle=(0, (6, 4)),
            linewidth=2,
            label=f"min_delta ({labels.get('model', model)})",
        )
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlim(_dates([(min(times), 0.0), (max(times), 0.0)]))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=timezone.utc))
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("Δ mean SSLMem on S_C\n(candidate − champion)")
    ax.set_title(f"Δ mean SSLMem vs champion — model {model}", loc="left")
    ax.grid(alpha=0.3)
    values = [v for _, points in [*deltas, *thresholds] for _, v in points if math.isfinite(v)]
    if values:  # headroom above the highest line (the legend sits outside, on the right)
        low, high = min(0.0, *values), max(0.0, *values)
        ax.set_ylim(low - 0.1 * (high - low), high + 0.15 * (high - low))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(out)
    return out


def _dates(points: Sequence[tuple[float, float]]) -> list[datetime]:
    return [datetime.fromtimestamp(t, tz=timezone.utc) for t, _ in points]


def render_from_prometheus(
    prometheus: str,
    model: str,
    out: Path,
    *,
    start: float,
    end: float,
    step: float | None = None,
    dashboard: Path = DASHBOARD,
) -> tuple[Series, Series]:
    """Run the regression panel's queries on ``prometheus`` and render them to ``out``.

    Returns:
        The Δ series and the min_delta series that were drawn.
    """
    board = json.loads(dashboard.read_text(encoding="utf-8"))
    targets = panel_targets(board, REGRESSION_PANEL)
    step = step if step is not None else max(1.0, math.ceil((end - start) / 300))
    fetched = [
        query_range(prometheus, substitute(targets[ref], model=model), start, end, step)
        for ref in ("A", "B")
    ]
    render(fetched[0], fetched[1], out, model=model)
    return fetched[0], fetched[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: render the panel for one model over the last ``--minutes``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="e.g. http://127.0.0.1:9090")
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--minutes", type=float, default=60.0, help="range ending now")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    end = time.time()
    try:
        render_from_prometheus(
            args.prometheus, args.model, args.out, start=end - 60 * args.minutes, end=end
        )
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
