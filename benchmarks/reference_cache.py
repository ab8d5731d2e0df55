#!/usr/bin/env python
"""Pay for each version once: a version's scoring cost with and without the reference cache.

Scores ``--versions`` candidate encoders (one per registered version, different seeds) against
one reference on the same points of a bundled Fashion-MNIST split, through the library's
per-point scoring (:func:`sslmem.memorization.scoring.score_points`, what ``score_split`` runs
after its checks), twice in one process: without a cache (the reference's forwards paid by
every version), and with a :class:`~sslmem.memorization.reference_cache.ReferenceLossCache` on a
local object store (the first version fills it, every later one reads it). Every version's
scores are checked bit-identical between the two runs. Reported: the median per-version time
of each, and their ratio (with cache / without); a ratio, not an absolute time, so it carries
over between machines of the same kind.

Run:  .venv/bin/python benchmarks/reference_cache.py [--versions 4] [--points 400] [--views 8]
      [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch


def main() -> None:
    """Score the versions without and with the cache; print the JSON figures."""
    from sslmem.augment import AugmentationSpec
    from sslmem.config import ScoringConfig, SplitConfig
    from sslmem.data import load_dataset, make_split
    from sslmem.data.store import LocalStore
    from sslmem.memorization.reference_cache import ReferenceLossCache, _machine
    from sslmem.memorization.scoring import select_points
    from sslmem.models import build_encoder, save_checkpoint
    from sslmem.models.checkpoint import LoadedCheckpoint, load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", type=int, default=4)
    parser.add_argument("--points", type=int, default=400, help="pool size of the split")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = load_dataset("bundled")
    manifest = make_split(dataset, fractions=SplitConfig(pool_size=args.points, seed=1))
    scoring = ScoringConfig(views=args.views, sets=("candidate", "independent"))
    indices, sets = select_points(manifest, scoring.sets, shared_sample=1, seed=0)

    weights = tempfile.TemporaryDirectory(prefix="sslmem-refcache-weights-")

    def encoder(seed: int, role: str) -> LoadedCheckpoint:
        torch.manual_seed(seed)
        model = build_encoder(
            "small_cnn", in_channels=1, image_size=28, arch_kwargs={"widths": [16, 32, 32]}
        )
        path = f"{weights.name}/{role}-{seed}.safetensors"
        return load_checkpoint(save_checkpoint(model, path, metadata={"role": role}))

    reference = encoder(0, "reference")
    candidates = [encoder(seed, "candidate") for seed in range(1, args.versions + 1)]

    def score(candidate: LoadedCheckpoint, cache: ReferenceLossCache | None) -> tuple[Any, float]:
        from sslmem.memorization.scoring import score_points

        started = time.perf_counter()
        points = score_points(
            [candidate],
            [reference],
            dataset,
            indices,
            sets,
            scoring=scoring,
            augment_spec=AugmentationSpec(),
            device=torch.device("cpu"),
            reference_cache=cache,
            manifest_sha256=manifest.manifest_sha256,
        )
        return points, time.perf_counter() - started

    score(candidates[0], None)  # warm-up: first-call allocations and thread start-up
    plain = [score(c, None) for c in candidates]
    with tempfile.TemporaryDirectory(prefix="sslmem-refcache-") as tmp:
        cache = ReferenceLossCache(LocalStore(tmp))
        cached = [score(c, cache) for c in candidates]
    for (a, _), (b, _) in zip(plain, cached, strict=True):
        np.testing.assert_array_equal(a.sslmem_raw, b.sslmem_raw)  # a hit equals a miss
    without = statistics.median(t for _, t in plain)
    with_hits = statistics.median(t for _, t in cached[1:])
    figures = {
        "machine": f"{_machine(torch.device('cpu'))}, {os.cpu_count()} cores",
        "threads": args.threads,
        "points": len(indices),
        "views": args.views,
        "versions": args.versions,
        "per_version_s_without_cache": round(without, 3),
        "first_version_s_with_cache (miss)": round(cached[0][1], 3),
        "per_version_s_with_cache (hit)": round(with_hits, 3),
        "ratio_with_over_without": round(with_hits / without, 3),
        "hits": cache.hits,
        "misses": cache.misses,
        "bit_identical": True,
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
