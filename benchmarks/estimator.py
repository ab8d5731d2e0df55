#!/usr/bin/env python
"""Estimator benchmark: the paper's pair estimator vs the all-pairs U-statistic at equal forwards.

SSLMem needs the alignment loss ``E d(h(x'), h(x''))`` of every point under the candidate f and
the reference g (Wang et al., ICLR 2024, Eq. 1-2). With F encoder forwards per point and encoder:

* ``pairs`` (the paper's): K = F/2 independent view pairs (views 2i, 2i+1);
* ``ustat``: K = F views and the mean distance over all K(K-1)/2 pairs of them.

Both see *the same* F views in each repeat (same scoring seed, view ids 0..F-1), so the
comparison is paired. For each budget F and each of ``--repeats`` view seeds, both score the
recipe's sets with ``score_split``; a reference run with many more views and an unrelated seed
stands in for the exact per-point scores. Reported per budget and estimator, averaged over the
repeats:

(a) ``CI width``: the 95% CI width of mean SSLMem(S_C) that the summary reports (between-point
    spread + view noise), and ``sd(mean S_C)``: the spread of mean SSLMem(S_C) over view seeds
    (view noise alone);
(b) per-point agreement with the reference over all scored points: Pearson r, Spearman rho and
    RMSE (the RMSE also holds the reference's own, much smaller, noise);

and each as a ratio ustat/pairs. Encoders: f and g trained with the shipped ``bundled-cpu``
recipe (cached in ``--workdir``; ``--epochs`` shortens training), scored at the recipe's layer.

Run:  .venv/bin/python benchmarks/estimator.py [--budgets 4,8,16,32] [--repeats 5]
      [--reference-views 128] [--distance l2] [--epochs 150] [--workdir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from sslmem.config import ExperimentConfig, ScoringConfig, load_experiment_config
from sslmem.data import load_dataset, make_split
from sslmem.data.datasets import ImageDataset
from sslmem.data.splits import SplitManifest
from sslmem.memorization.scoring import ScoreReport, score_split
from sslmem.models.checkpoint import LoadedCheckpoint, load_checkpoint
from sslmem.training import ENCODER_FILE, train_encoder

REFERENCE_SEED = 10_007  # views unrelated to every repeat's (seeds 0..repeats-1)


def _encoders(
    config: ExperimentConfig, dataset: ImageDataset, manifest: SplitManifest, workdir: Path
) -> tuple[LoadedCheckpoint, LoadedCheckpoint, float]:
    """Train (or reuse from ``workdir``) the candidate f and the reference g."""
    seconds = 0.0
    loaded = []
    for role in ("candidate", "reference"):
        out = workdir / f"{role}-{manifest.manifest_sha256[:12]}-e{config.training.epochs}"
        if not (out / ENCODER_FILE).exists():
            started = time.perf_counter()
            train_encoder(dataset, manifest, role=role, config=config, out_dir=out, progress=False)
            seconds += time.perf_counter() - started
        loaded.append(load_checkpoint(out / ENCODER_FILE))
    return loaded[0], loaded[1], seconds


def _score(
    f: LoadedCheckpoint,
    g: LoadedCheckpoint,
    dataset: ImageDataset,
    manifest: SplitManifest,
    config: ExperimentConfig,
    **scoring: Any,
) -> tuple[ScoreReport, float]:
    cfg = ScoringConfig(**{**config.scoring.model_dump(), **scoring})
    started = time.perf_counter()
    report = score_split([f], [g], dataset, manifest, scoring=cfg, augment_spec=config.augmentation)
    return report, time.perf_counter() - started


def _agreement(scores: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {
        "pearson": float(stats.pearsonr(scores, reference)[0]),
        "spearman": float(stats.spearmanr(scores, reference)[0]),
        "rmse": float(np.sqrt(np.mean((scores - reference) ** 2))),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train or reuse f and g, score the reference and every (budget, estimator, repeat)."""
    overrides = [f"scoring.distance={args.distance}"]
    if args.epochs is not None:
        overrides.append(f"training.epochs={args.epochs}")
    config = load_experiment_config("bundled-cpu", overrides)
    dataset = load_dataset(config.data.dataset)
    manifest = make_split(dataset, fractions=config.split)
    args.workdir.mkdir(parents=True, exist_ok=True)
    f, g, train_s = _encoders(config, dataset, manifest, args.workdir)

    ref, ref_s = _score(
        f, g, dataset, manifest, config,
        views=args.reference_views, estimator="ustat", seed=REFERENCE_SEED,
    )  # fmt: skip
    reference = np.asarray(ref.columns["sslmem_raw"])
    candidate = np.asarray(ref.columns["set"]) == "candidate"
    rows: list[dict[str, Any]] = []
    for budget in args.budgets:
        per: dict[str, list[dict[str, float]]] = {"pairs": [], "ustat": []}
        for seed in range(args.repeats):
            for name, views in (("pairs", budget // 2), ("ustat", budget)):
                report, seconds = _score(
                    f, g, dataset, manifest, config, views=views, estimator=name, seed=seed
                )
                raw = np.asarray(report.columns["sslmem_raw"])
                assert np.array_equal(report.columns["sample_index"], ref.columns["sample_index"])
                s_c = report.summary.sets["candidate"]
                per[name].append(
                    {
                        "ci_width": s_c.ci95_high - s_c.ci95_low,
                        "mean_sc": float(raw[candidate].mean()),
                        "seconds": seconds,
                        **_agreement(raw, reference),
                    }
                )
        for name, runs in per.items():
            row: dict[str, Any] = {
                "forwards": budget,
                "estimator": name,
                "k": budget // 2 if name == "pairs" else budget,
                "sd_mean_sc": statistics.stdev(r["mean_sc"] for r in runs),
            }
            for key in ("ci_width", "pearson", "spearman", "rmse", "seconds", "mean_sc"):
                row[key] = statistics.fmean(r[key] for r in runs)
            rows.append(row)
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "load_avg": os.getloadavg(),
        "distance": args.distance,
        "layer": config.scoring.layer,
        "epochs": config.training.epochs,
        "points": int(reference.size),
        "candidates": int(candidate.sum()),
        "reference_views": args.reference_views,
        "reference_mean_sc": float(reference[candidate].mean()),
        "reference_seconds": ref_s,
        "train_seconds": train_s,
        "repeats": args.repeats,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    """Markdown table: one line per budget and estimator, ustat with its ratio to pairs."""
    lines = [
        "| forwards F | estimator | K | CI width mean S_C | sd(mean S_C) over seeds | "
        "Pearson r | Spearman rho | RMSE | s per run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r["forwards"], r["estimator"]): r for r in result["rows"]}
    for (budget, name), r in by_key.items():
        base = by_key[(budget, "pairs")]

        def cell(key: str, fmt: str, r: dict[str, Any] = r, base: dict[str, Any] = base) -> str:
            text = format(r[key], fmt)
            if r is base:
                return text
            return f"{text} (**{r[key] / base[key]:.2f}x**)"

        lines.append(
            f"| {budget} | {name} | {r['k']} | {cell('ci_width', '.4f')} | "
            f"{cell('sd_mean_sc', '.5f')} | {cell('pearson', '.3f')} | "
            f"{cell('spearman', '.3f')} | {cell('rmse', '.4f')} | {cell('seconds', '.1f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="4,8,16,32", help="forwards per point and encoder")
    parser.add_argument("--repeats", type=int, default=5, help="view seeds per budget")
    parser.add_argument("--reference-views", type=int, default=128)
    parser.add_argument("--distance", choices=("l2", "cosine"), default="l2")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's (150)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sslmem-estimator-bench"))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="budgets 4,8; 2 repeats; 5 epochs")
    args = parser.parse_args()
    if args.quick:
        args.budgets, args.repeats, args.reference_views = "4,8", 2, 32
        args.epochs = args.epochs or 5
    args.budgets = [int(b) for b in args.budgets.split(",")]
    if any(b < 2 or b % 2 for b in args.budgets):
        parser.error("--budgets must be even numbers >= 2 (pairs needs 2 forwards per pair)")
    if args.repeats < 2:
        parser.error("--repeats must be >= 2 (the spread over view seeds needs two)")
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
