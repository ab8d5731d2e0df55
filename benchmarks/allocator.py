"""Allocator tuning (``SSLMEM_KEEP_HEAP``): training and scoring with and without it, one run.

Runs the real CLI in subprocesses on the bundled images -- ``sslmem train`` (SimCLR, small_cnn)
and ``sslmem score`` -- once with glibc's default malloc behaviour (``SSLMEM_KEEP_HEAP=false``)
and once with freed tensor memory kept in the heap (the default), and prints wall, user and
system CPU seconds, minor page faults, training throughput and the ratios. The scores of both
runs must be identical (the tuning changes where memory comes from, not any result).

    python benchmarks/allocator.py [--epochs 2] [--pool 1000] [--views 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SSLMEM = [str(Path(sys.executable).with_name("sslmem"))]  # the console script of this venv


def _run(cmd: list[str], keep_heap: bool) -> dict[str, float]:
    """Run ``cmd``; its wall time, CPU seconds and minor page faults."""
    env = {**os.environ, "SSLMEM_KEEP_HEAP": "true" if keep_heap else "false"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": wall,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        "minor_faults": float(after.ru_minflt - before.ru_minflt),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    rows: dict[str, dict[bool, dict[str, float]]] = {"train": {}, "score": {}}
    scores: dict[bool, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="sslmem-bench-alloc-") as tmp:
        root = Path(tmp)
        split = root / "split.json"
        subprocess.run(
            [*SSLMEM, "split", "--pool-size", str(args.pool), "--out", str(split)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for keep_heap in (False, True):
            out = root / f"keep-{keep_heap}"
            train = [*SSLMEM, "train", "--split", str(split), "--role", "candidate"]
            train += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
            train += ["--no-progress", "--out", str(out / "f")]
            rows["train"][keep_heap] = _run(train, keep_heap)
            metrics = [
                json.loads(line) for line in (out / "f/metrics.jsonl").read_text().splitlines()
            ]
            rows["train"][keep_heap]["images_per_s"] = metrics[-1]["images_per_s"]
            ckpt = str(out / "f/encoder.safetensors")
            score = [*SSLMEM, "score", "--candidate", ckpt, "--reference", ckpt]
            score += ["--split", str(split), "--views", str(args.views), "--layer", "head"]
            score += ["--format", "csv", "--no-plots", "--no-progress", "--out", str(out / "s")]
            rows["score"][keep_heap] = _run(score, keep_heap)
            scores[keep_heap] = (out / "s/scores.csv").read_bytes()
    print(f"pool {args.pool}, {args.epochs} epochs, batch {args.batch_size}, K = {args.views}")
    print("| step | keep heap | wall s | user s | sys s | minor faults | img/s | wall ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for step, by_mode in rows.items():
        for keep_heap in (False, True):
            r = by_mode[keep_heap]
            ratio = by_mode[False]["wall_s"] / r["wall_s"]
            rate = f"{r['images_per_s']:.0f}" if "images_per_s" in r else "-"
            print(
                f"| {step} | {'yes' if keep_heap else 'no (glibc default)'} | {r['wall_s']:.1f} "
                f"| {r['user_s']:.1f} | {r['sys_s']:.1f} | {r['minor_faults']:,.0f} | {rate} "
                f"| {ratio:.2f}x |"
            )
    same = scores[False] == scores[True]
    print(f"scores identical with and without: {same}")
    if not same:
        sys.exit("the allocator setting changed the scores")


if __name__ == "__main__":
    main()
