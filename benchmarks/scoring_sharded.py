#!/usr/bin/env python
"""Sharded scoring at scale: points/s and peak RSS per shard stay flat as N grows.

Scores N points (default 200,000) of a synthetic dataset that tiles the 4,000 bundled
Fashion-MNIST images by index (point i is bundled image ``i % 4000``, its views keyed by ``i``,
so every point gets its own views) with a tiny encoder pair (small_cnn widths 8/8/8, random
init) and small K, in shards of ``--shard-size`` points, each shard in its own subprocess run
one after another, as KFP's ``ParallelFor`` would run them in pods. Each shard runs the
library's shard path (:func:`sslmem.memorization.scoring.score_points`, what
:func:`~sslmem.memorization.sharding.score_shard` runs after its header checks, and
:func:`~sslmem.memorization.sharding.write_shard`) and reports its points/s and peak RSS. A
smaller unsharded run (``--baseline-points``) is the reference: shards should match its
points/s (throughput linear in N) and its RSS (memory flat).

The split/manifest checks of ``score_shard`` need a real dataset manifest, which a tiled view
has not; they are header comparisons (no forward pass) and are left out here.

Run:  .venv/bin/python benchmarks/scoring_sharded.py [--points 200000] [--shard-size 20000]
      [--max-shards N] [--baseline-points 5000] [--views 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

BUNDLED = 4000


class TiledImages:
    """``images[idx]`` of a dataset of ``n`` points tiling ``base`` by index (no copy)."""

    def __init__(self, base: torch.Tensor, n: int) -> None:
        self.base, self.n = base, n

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        if int(idx.max()) >= self.n:
            raise IndexError("index beyond the tiled dataset")
        return self.base[idx % self.base.shape[0]]


def worker(start: int, stop: int, n: int, views: int, threads: int, out: Path) -> dict[str, Any]:
    """Score points ``[start, stop)`` of the tiled set; write the shard table; measure."""
    from sslmem.augment import AugmentationSpec
    from sslmem.config import ScoringConfig
    from sslmem.data import load_dataset
    from sslmem.memorization.scoring import score_points
    from sslmem.memorization.sharding import ShardInfo, ShardTable, write_shard
    from sslmem.models import build_encoder

    torch.set_num_threads(threads)
    encoders = []
    for seed in (0, 1):  # one candidate f, one reference g
        torch.manual_seed(seed)
        encoders.append(
            SimpleNamespace(
                encoder=build_encoder(
                    "small_cnn",
                    in_channels=1,
                    image_size=28,
                    arch_kwargs={"widths": [8, 8, 8]},
                    head_hidden_dim=16,
                    head_output_dim=8,
                )
            )
        )
    dataset = SimpleNamespace(images=TiledImages(load_dataset("bundled").images, n))
    # The paper's pair estimator, as measured in benchmarks/README.md (K pairs: 4K forwards).
    scoring = ScoringConfig(views=views, estimator="pairs", layer="backbone", sets=("candidate",))
    spec = AugmentationSpec()
    indices = np.arange(start, stop, dtype=np.int64)
    points = score_points(
        encoders[:1],  # type: ignore[arg-type]
        encoders[1:],  # type: ignore[arg-type]
        dataset,  # type: ignore[arg-type]
        indices,
        np.full(len(indices), "candidate"),
        scoring=scoring,
        augment_spec=spec,
        device=torch.device("cpu"),
    )
    info = ShardInfo(
        start=start,
        stop=stop,
        total=n,
        manifest_sha256="tiled-bundled",
        candidates=["seed0"],
        references=["seed1"],
        scoring=scoring,
        augmentation=spec,
        seconds=points.seconds,
        device=points.device,
        precision=points.precision,
    )
    write_shard(ShardTable(points=points, info=info), out)
    return {
        "start": start,
        "stop": stop,
        "points": stop - start,
        "seconds": points.seconds,
        "points_per_s": (stop - start) / points.seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_worker(start: int, stop: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", f"{start}:{stop}", "--points", str(args.points)]
    cmd += ["--views", str(args.views), "--threads", str(args.threads), "--out", str(out)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--shard-size", type=int, default=20_000)
    parser.add_argument("--max-shards", type=int, help="run only the first N shards")
    parser.add_argument("--baseline-points", type=int, default=5_000)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        start, stop = (int(x) for x in args.worker.split(":"))
        print(json.dumps(worker(start, stop, args.points, args.views, args.threads, args.out)))
        return

    from sslmem.memorization.sharding import read_shards, shard_ranges

    with tempfile.TemporaryDirectory() as tmp:
        base_dir, shard_dir = Path(tmp) / "baseline", Path(tmp) / "shards"
        baseline = run_worker(0, args.baseline_points, args, base_dir)
        print(f"unsharded {baseline['points']:>7} pts: {baseline['points_per_s']:8.0f} pts/s, "
              f"peak RSS {baseline['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
        ranges = shard_ranges(args.points, args.shard_size)[: args.max_shards]
        shards = []
        started = time.perf_counter()
        for start, stop in ranges:
            shards.append(run_worker(start, stop, args, shard_dir))
            s = shards[-1]
            rate, rss = s["points_per_s"], s["peak_rss_mib"]
            line = f"shard [{start:>7}, {stop:>7}): {rate:8.0f} pts/s, peak RSS {rss:.0f} MiB"
            print(f"{line}, {s['seconds']:.1f} s", flush=True)
        wall = time.perf_counter() - started
        scored = sum(s["points"] for s in shards)
        tables = read_shards([shard_dir])
        assert sum(len(t.points.sslmem_raw) for t in tables) == scored
    pps = [s["points_per_s"] for s in shards]
    rss = [s["peak_rss_mib"] for s in shards]
    summary = {
        "points_scored": scored,
        "of_points": args.points,
        "shards_run": len(shards),
        "of_shards": len(shard_ranges(args.points, args.shard_size)),
        "wall_s_incl_process_start": wall,
        "points_per_s_median": float(np.median(pps)),
        "points_per_s_vs_baseline": float(np.median(pps)) / baseline["points_per_s"],
        "peak_rss_mib_max": max(rss),
        "peak_rss_vs_baseline": max(rss) / baseline["peak_rss_mib"],
        "extrapolated_s_for_all_points": args.points / float(np.median(pps)),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
