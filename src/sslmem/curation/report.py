"""Write a curation study's report: results table, JSON summary, Markdown, figures.

Everything here is recomputed from the study directory's retrain results, so re-running
``sslmem curate`` on a finished study rewrites the report without training anything.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sslmem.atomic import atomic_write_bytes
from sslmem.curation import figures
from sslmem.curation.analysis import StudyAnalysis
from sslmem.curation.plan import StudyPlan
from sslmem.curation.statistics import Correlation

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "study.json"
REPORT_FILE = "report.md"
ATYPICALITY_TABLE = "atypicality.csv"


@dataclass(frozen=True)
class Atypicality:
    """Atypicality of the scored candidates and its relation to SSLMem.

    Attributes:
        sample_index: ``int64 [n]`` candidate dataset indices.
        sslmem: ``float64 [n]`` their SSLMem (the score report's).
        atypicality: ``float64 [n]`` their kNN distance in the reference's embedding.
        k: Neighbours.
        correlation: Spearman's rho of SSLMem and atypicality.

    """

    sample_index: npt.NDArray[np.int64]
    sslmem: npt.NDArray[np.float64]
    atypicality: npt.NDArray[np.float64]
    k: int
    correlation: Correlation


def _finite(value: Any) -> Any:
    """JSON has no NaN: map it to null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}"


def _p(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3f}"


def scale_line(plan: StudyPlan, num_candidates: int, rows: list[dict[str, Any]]) -> str:
    """One line stating the study's scale (the figures' subtitle)."""
    sizes = sorted({int(r["k"]) for r in rows if int(r["k"]) > 0})
    return (
        f"{num_candidates} scored candidates, k in {sizes}, {len(plan.seeds)} seeds, "
        f"{plan.random_draws} random draws, budget held in {plan.budget}, {len(rows)} retrains"
    )


def markdown(
    analysis: StudyAnalysis,
    atypicality: Atypicality,
    plan: StudyPlan,
    rows: list[dict[str, Any]],
    scale: str,
) -> str:
    """The report a reader opens first: scale, accuracy table, tests, onion effect, atypicality."""
    lines = [
        "# Curation study",
        "",
        f"Scale: {scale}.",
        "",
        "## Downstream accuracy (mean over seeds, 95 % CI)",
        "",
        "| removal | k | kNN accuracy (%) | linear probe (%) | retrains |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    arms = {(a.strategy, a.k, a.metric): a for a in analysis.arms}
    for strategy, k in sorted(
        {(a.strategy, a.k) for a in analysis.arms}, key=lambda x: (x[1], x[0])
    ):
        cells = []
        for metric in ("knn_accuracy", "linear_probe_accuracy"):
            a = arms[(strategy, k, metric)]
            cells.append(f"{_pct(a.mean)} [{_pct(a.ci95_low)}, {_pct(a.ci95_high)}]")
        lines.append(
            f"| {strategy} | {k} | {cells[0]} | {cells[1]} | "
            f"{arms[(strategy, k, 'knn_accuracy')].retrains} |"
        )
    lines += [
        "",
        "## Does removing the most memorised hurt more? (one-sided paired t-test over seeds)",
        "",
        "| k | metric | control | top − control (points) | 95 % CI | p | power (1 point) "
        "| seeds for 80 % |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in analysis.drops:
        t = d.test
        lines.append(
            f"| {d.k} | {d.metric} | {d.control} | {_pct(t.mean_difference)} | "
            f"[{_pct(t.ci95_low)}, {_pct(t.ci95_high)}] | {_p(t.p_value)} | "
            f"{_p(d.power_one_point)} | {d.seeds_for_80_power or 'n/a'} |"
        )
    lines += [
        "",
        "## Onion effect: the remaining candidates' SSLMem after removal",
        "",
        f"Exposure threshold: the {plan.exposure_quantile:g} quantile of the full-data encoder's "
        "candidate SSLMem (same seed).",
        "",
        "| removal | k | mean shift | tail before | tail after | newly exposed "
        "| removed: before → after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for o in analysis.onion:
        lines.append(
            f"| {o.strategy} | {o.k} | {o.mean_shift:+.4f} | {o.tail_before:.3f} | "
            f"{o.tail_after:.3f} | {o.newly_exposed:.1f} | {o.removed_before:+.4f} → "
            f"{o.removed_after:+.4f} |"
        )
    for comparison in analysis.onion_tests:
        t = comparison.test
        lines.append(
            f"\nk = {comparison.k}: random-removal shift − top-removal shift = "
            f"{t.mean_difference:+.4f} "
            f"[{t.ci95_low:+.4f}, {t.ci95_high:+.4f}], one-sided p (top raises the rest more) "
            f"= {_p(t.p_value)}, n = {t.n} seeds."
        )
    c = atypicality.correlation
    lines += [
        "",
        "## SSLMem and atypicality",
        "",
        f"Spearman rho = {c.rho:+.3f}, 95 % bootstrap CI [{c.ci95_low:+.3f}, {c.ci95_high:+.3f}], "
        f"p = {c.p_value:.2e}, n = {c.n} candidates (atypicality: mean cosine distance to the "
        f"{atypicality.k} nearest reference-training points in the reference's embedding).",
        "",
        f"![accuracy]({figures.ACCURACY_FILE})",
        f"![onion]({figures.ONION_FILE})",
        f"![atypicality]({figures.ATYPICALITY_FILE})",
        f"![grid]({figures.GRID_FILE})",
        "",
    ]
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    *,
    analysis: StudyAnalysis,
    atypicality: Atypicality,
    plan: StudyPlan,
    rows: list[dict[str, Any]],
    images: npt.NDArray[np.uint8],
    inputs: dict[str, Any],
) -> dict[str, Path]:
    """Write the results table, summary, Markdown report and figures into ``out_dir``.

    Returns:
        File role -> path.

    """
    n = int(atypicality.sample_index.size)
    scale = scale_line(plan, n, rows)
    written = {"results": out_dir / RESULTS_FILE, "summary": out_dir / SUMMARY_FILE}
    atomic_write_bytes(written["results"], _csv(rows))
    summary = {
        "inputs": inputs,
        "scale": scale,
        "analysis": analysis.to_dict(),
        "atypicality": {"k": atypicality.k, "correlation": asdict(atypicality.correlation)},
    }
    atomic_write_bytes(
        written["summary"],
        (json.dumps(_finite(summary), indent=2, sort_keys=True) + "\n").encode(),
    )
    written["atypicality"] = out_dir / ATYPICALITY_TABLE
    atomic_write_bytes(
        written["atypicality"],
        _csv(
            [
                {"sample_index": int(i), "sslmem": float(s), "atypicality": float(a)}
                for i, s, a in zip(
                    atypicality.sample_index,
                    atypicality.sslmem,
                    atypicality.atypicality,
                    strict=True,
                )
            ]
        ),
    )
    written["accuracy_figure"] = figures.accuracy_figure(
        analysis.arms, out_dir / figures.ACCURACY_FILE, subtitle=scale
    )
    written["onion_figure"] = figures.onion_figure(
        analysis.onion, out_dir / figures.ONION_FILE, subtitle=scale
    )
    written["atypicality_figure"] = figures.atypicality_figure(
        atypicality.atypicality,
        atypicality.sslmem,
        atypicality.correlation,
        out_dir / figures.ATYPICALITY_FILE,
        subtitle=f"{n} candidates",
    )
    shown = min(8, n)
    top = np.lexsort((atypicality.sample_index, -atypicality.sslmem))[:shown]
    typical = np.lexsort((atypicality.sample_index, atypicality.atypicality))[:shown]
    written["grid"] = figures.memorised_vs_typical_grid(
        images,
        [
            (
                "most memorised",
                atypicality.sample_index[top],
                [f"#{atypicality.sample_index[i]}\nmem {atypicality.sslmem[i]:+.3f}" for i in top],
            ),
            (
                "most typical",
                atypicality.sample_index[typical],
                [
                    f"#{atypicality.sample_index[i]}\natyp {atypicality.atypicality[i]:.3f}"
                    for i in typical
                ],
            ),
        ],
        out_dir / figures.GRID_FILE,
    )
    written["report"] = out_dir / REPORT_FILE
    atomic_write_bytes(
        written["report"], markdown(analysis, atypicality, plan, rows, scale).encode()
    )
    return written
