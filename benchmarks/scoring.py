#!/usr/bin/env python
"""Scoring benchmark: the batched SSLMem engine vs the authors' per-point loop vs bare forwards.

Measures in one run, on the same encoders (one candidate f, one reference g; random init, eval
mode), the same K and the same points (bundled Fashion-MNIST, 28x28 grey):

(a) engine  ``compute_sslmem`` in "anchor" mode (clean image to each of K views, the authors'
    estimator), chunked; also "pair" mode (the paper's K view pairs).
(b) loop    a faithful per-point loop as in the authors' ``memorization_scores.py``
    (github.com/sprintml/MemorizationSSL): batch size 1, per view one torchvision
    (``transforms.v2``) augmentation of the single normalised image and 4 forwards (clean + view,
    for f and for g), l2 distance of the flattened l2-normalised representation via numpy.
    Run under ``inference_mode`` (the authors' script keeps autograd on; this favours the loop).
(c) floor   the same number of bare batched forwards as (a), with the same batch shapes,
    on pre-made float inputs: no augmentation, no distances.

Reports (a)/(b) speed-up (target >= 10x) and (a)/(c) overhead (target <= 1.3x), the share of
(a) spent drawing views, and the peak RSS of the engine in a subprocess for two N (must stay
flat: the engine is chunked).

Run:  .venv/bin/python benchmarks/scoring.py [--quick] [--archs small_cnn,resnet18]
      [--points 512] [--loop-points 32] [--views 5,8] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.data import load_dataset
from sslmem.memorization.alignment import AlignmentEstimator, Mode
from sslmem.memorization.sslmem import compute_sslmem
from sslmem.models import Encoder, build_encoder

SPEC = AugmentationSpec()  # engine default: SimCLR-style, Normalize(0.5, 0.5)
LAYER = "backbone"


class Backboned(Protocol):
    """What the loops use of an encoder: its backbone (an Encoder, or a wrapper of one)."""

    @property
    def backbone(self) -> nn.Module: ...


CHANNELS, SIZE = 1, 28


# ----------------------------------------------------------------------------- setup


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": model,
        "cores": cores,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def points(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 images tiled from the bundled set, with distinct keys ``0..n-1``."""
    images = load_dataset("bundled").images
    reps = -(-n // images.shape[0])
    return images.repeat(reps, 1, 1, 1)[:n].contiguous(), torch.arange(n, dtype=torch.int64)


def encoders(arch: str, channels_last: bool = False) -> tuple[Encoder, Encoder]:
    """Candidate f and reference g (random init, eval mode); optionally channels_last weights.

    With channels_last weights, oneDNN convolutions run channels_last whatever the input layout
    (the engine's views are NCHW), and pooling/BN/ReLU keep that layout.
    """
    out: list[Encoder] = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        enc = build_encoder(arch, in_channels=CHANNELS, image_size=SIZE).eval()
        out.append(enc.to(memory_format=torch.channels_last) if channels_last else enc)
    return out[0], out[1]


def views_per_point(k: int, mode: str) -> int:
    return k + 1 if mode == "anchor" else 2 * k


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed2(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and process CPU seconds (all threads) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


# ----------------------------------------------------------------------------- (a) engine


def engine(
    f: nn.Module,
    g: nn.Module,
    images: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    mode: Mode,
    chunk: int,
) -> torch.Tensor:
    res = compute_sslmem(
        [f],
        [g],
        images,
        keys,
        augment_spec=SPEC,
        estimator=AlignmentEstimator(views=k, mode=mode, estimator="pairs"),
        layer=LAYER,
        chunk_size=chunk,
    )
    raw: torch.Tensor = res.raw
    return raw


def draw_only(images: torch.Tensor, keys: torch.Tensor, k: int, mode: str, chunk: int) -> None:
    """Only the view drawing the engine does (same calls as alignment._draw_views)."""
    aug = BatchAugmenter(SPEC)
    with torch.inference_mode():
        for s in range(0, images.shape[0], chunk):
            x, kk = images[s : s + chunk], keys[s : s + chunk]
            if mode == "pair":
                aug.views(x, kk, torch.arange(2 * k), 0)
            else:
                v = aug.views(x, kk, torch.arange(k), 0)
                torch.cat([aug.clean(x).unsqueeze(1), v], dim=1)


def count_forwards(
    f: Encoder,
    g: Encoder,
    images: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    mode: Mode,
    chunk: int,
) -> int:
    """Images the engine pushes through the backbones (checks the floor does the same work)."""
    seen = [0]

    def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen[0] += args[0].shape[0]

    handles = [enc.backbone.register_forward_pre_hook(hook) for enc in (f, g)]
    try:
        engine(f, g, images, keys, k, mode, chunk)
    finally:
        for h in handles:
            h.remove()
    return seen[0]


# ----------------------------------------------------------------------------- (c) floor


def floor_inputs(n: int, k: int, mode: str, chunk: int) -> list[torch.Tensor]:
    v = views_per_point(k, mode)
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(min(chunk, n - s) * v, CHANNELS, SIZE, SIZE, generator=gen)
        for s in range(0, n, chunk)
    ]


def floor(f: Backboned, g: Backboned, inputs: Sequence[torch.Tensor]) -> None:
    with torch.inference_mode():
        for x in inputs:
            for enc in (f, g):
                enc.backbone(x)


# ----------------------------------------------------------------------------- (b) loop


def authors_transform() -> v2.Compose:
    """Per-image torchvision pipeline with the engine spec's strengths, after Normalize."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(SIZE, scale=SPEC.crop_scale, ratio=SPEC.crop_ratio),
            v2.RandomHorizontalFlip(SPEC.hflip_prob),
            v2.RandomApply(
                [v2.ColorJitter(SPEC.brightness, SPEC.contrast, SPEC.saturation)],
                p=SPEC.jitter_prob,
            ),
            v2.RandomGrayscale(SPEC.grayscale_prob),
        ]
    )


def loop(f: Backboned, g: Backboned, images: torch.Tensor, k: int) -> np.ndarray:
    """The authors' loop: one point, one view, four batch-1 forwards at a time."""
    to_input = v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize(SPEC.mean, SPEC.std)]
    )  # their DataLoader transform: ToTensor + Normalize(0.5, 0.5)
    augment = authors_transform()
    scores = []
    with torch.inference_mode():
        for img in images:  # [C, H, W] uint8, batch size 1
            image = to_input(img)
            dist_f, dist_g = [], []
            for _ in range(k):
                aug_image = augment(image)
                rep1_f = f.backbone(image.unsqueeze(0))
                rep2_f = f.backbone(aug_image.unsqueeze(0))
                rep1_g = g.backbone(image.unsqueeze(0))
                rep2_g = g.backbone(aug_image.unsqueeze(0))
                rep1_f = nn.functional.normalize(rep1_f.reshape(-1), dim=-1)
                rep2_f = nn.functional.normalize(rep2_f.reshape(-1), dim=-1)
                rep1_g = nn.functional.normalize(rep1_g.reshape(-1), dim=-1)
                rep2_g = nn.functional.normalize(rep2_g.reshape(-1), dim=-1)
                dist_f.append(np.linalg.norm(rep1_f.numpy() - rep2_f.numpy()))
                dist_g.append(np.linalg.norm(rep1_g.numpy() - rep2_g.numpy()))
            scores.append(np.mean(dist_g) - np.mean(dist_f))
    return np.asarray(scores)


# ----------------------------------------------------------------------------- peak RSS


def proc_status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``, ``RssAnon``) in MiB; 0 if
    unavailable (non-Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_child(n: int, arch: str, k: int, chunk: int, threads: int, cl: bool) -> None:
    """Subprocess body: peak RSS before and after scoring ``n`` points (printed as JSON).

    Peak RSS is the kernel's high-water mark ``VmHWM``. ``ru_maxrss`` is the same number except
    that on Linux it also keeps the parent's RSS at fork time across ``exec`` (here ~2 GiB, the
    benchmark process), which hides the child's own peak; it is printed for reference. RSS
    includes mapped shared-library pages (torch's: ~0.5-1 GiB, varying with the page cache), so
    the anonymous RSS (heap, tensors) is also sampled every 2 ms while scoring.
    """
    torch.set_num_threads(threads)
    f, g = encoders(arch, cl)
    images, keys = points(n)
    hwm_before = proc_status_mib("VmHWM")
    anon_before = proc_status_mib("RssAnon")
    anon_peak = [anon_before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            anon_peak[0] = max(anon_peak[0], proc_status_mib("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = timed(lambda: engine(f, g, images, keys, k, "anchor", chunk))
    done.set()
    sampler.join()
    out = {"n": n, "s": t, "hwm_before_mib": hwm_before, "hwm_mib": proc_status_mib("VmHWM")}
    out |= {"anon_before_mib": anon_before, "anon_peak_mib": anon_peak[0]}
    out["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def peak_rss(n: int, arch: str, k: int, chunk: int, threads: int, cl: bool) -> dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--_rss-child", str(n)]
    cmd += ["--archs", arch, "--views", str(k), "--chunk", str(chunk), "--threads", str(threads)]
    cmd += ["--channels-last"] if cl else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- profile


def profile_engine(arch: str, n: int, k: int, chunk: int, cl: bool) -> None:
    """Where (a) anchor spends its time, by engine function (cProfile cumulative seconds)."""
    f, g = encoders(arch, cl)
    images, keys = points(n)
    engine(f, g, images[:chunk], keys[:chunk], k, "anchor", chunk)  # warm up
    prof = cProfile.Profile()
    prof.enable()
    engine(f, g, images, keys, k, "anchor", chunk)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = max(v[3] for v in stats.values())
    wanted = {
        ("augment.py", "views"): "augment: BatchAugmenter.views",
        ("augment.py", "clean"): "augment: BatchAugmenter.clean",
        ("augment.py", "counter_uniform"): "  of which counter_uniform (hash RNG)",
        ("augment.py", "_crop_and_flip"): "  of which crop+flip (grid_sample)",
        ("augment.py", "_color"): "  of which colour jitter",
        ("representation.py", "capture_layers"): "forwards: capture_layers (backbone + hook)",
        ("alignment.py", "_loss_from_representations"): "distance",
        ("alignment.py", "_check_representation"): "isfinite check",
    }
    rows: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items():
        for (suffix, name), label in wanted.items():
            if file.endswith(suffix) and func == name:
                rows[label] = rows.get(label, 0.0) + ct
    print(f"\nprofile of (a) anchor, {arch}, K={k}, N={n} (cProfile, total {total:.2f} s):\n")
    print("| part | s | share |\n|---|---:|---:|")
    for label in wanted.values():
        if label in rows:
            print(f"| {label} | {rows[label]:.3f} | {100 * rows[label] / total:.0f}% |")


# ----------------------------------------------------------------------------- main


def bench_arch(arch: str, k: int, args: argparse.Namespace) -> dict[str, Any]:
    f, g = encoders(arch, args.channels_last)
    images, keys = points(args.points)
    loop_images = images[: args.loop_points]
    chunk = args.chunk
    n = args.points

    # The floor must do the engine's work: (m + n)(K + 1) N images in the same batch shapes.
    fwd = count_forwards(f, g, images, keys, k, "anchor", chunk)
    assert fwd == 2 * (k + 1) * n, (fwd, 2 * (k + 1) * n)
    floor_anchor = floor_inputs(n, k, "anchor", chunk)
    floor_pair = floor_inputs(n, k, "pair", chunk)
    assert 2 * sum(x.shape[0] for x in floor_anchor) == fwd

    def loop_at(threads: int) -> float:
        torch.set_num_threads(threads)
        try:
            return timed(lambda: loop(f, g, loop_images, k))
        finally:
            torch.set_num_threads(args.threads)

    # Warm up everything once (allocator, oneDNN primitives, torchvision dispatch).
    engine(f, g, images[:chunk], keys[:chunk], k, "anchor", chunk)
    engine(f, g, images[:chunk], keys[:chunk], k, "pair", chunk)
    floor(f, g, floor_anchor[:1] + floor_pair[:1])
    loop(f, g, loop_images[:2], k)

    # (a) and (c) are timed chunk by chunk as back-to-back pairs (order alternating), one
    # engine call per chunk: the same work as one call over all N (the engine runs chunk by
    # chunk anyway), but each (a)/(c) ratio is taken over a few seconds, so load from other
    # processes on a shared machine mostly cancels. Wall and process CPU time are both kept.
    starts = list(range(0, n, chunk))
    wall: dict[str, list[float]] = {x: [] for x in ("a", "c", "pair", "c_pair", "draw")}
    cpu: dict[str, list[float]] = {x: [] for x in ("a", "c", "pair", "c_pair")}
    ratio: dict[str, list[float]] = {"a": [], "pair": []}
    loop_wall: dict[int, list[float]] = {th: [] for th in args.loop_threads}
    modes: list[Mode] = ["anchor"] if args.no_pair else ["anchor", "pair"]
    for rep in range(args.repeats):
        tot = {x: 0.0 for x in wall} | {f"cpu_{x}": 0.0 for x in cpu}
        for i, s in enumerate(starts):
            xs, ks = images[s : s + chunk], keys[s : s + chunk]
            for mode in modes:
                a, c = ("a", "c") if mode == "anchor" else ("pair", "c_pair")
                inputs = (floor_anchor if mode == "anchor" else floor_pair)[i : i + 1]
                jobs: dict[str, Callable[[], object]] = {
                    a: partial(engine, f, g, xs, ks, k, mode, chunk),
                    c: partial(floor, f, g, inputs),
                }
                order = [a, c] if (rep + i) % 2 == 0 else [c, a]
                got = {name: timed2(jobs[name]) for name in order}
                for name, (w, cp) in got.items():
                    tot[name] += w
                    tot[f"cpu_{name}"] += cp
                ratio[a].append(got[a][0] / got[c][0])
            tot["draw"] += timed2(partial(draw_only, xs, ks, k, "anchor", chunk))[0]
        for x in wall:
            wall[x].append(tot[x])
        for x in cpu:
            cpu[x].append(tot[f"cpu_{x}"])
        for th in args.loop_threads:
            loop_wall[th].append(loop_at(th))

    def med(v: list[float]) -> float:
        return statistics.median(v) if v else float("nan")

    ms = {x: 1e3 * med(wall[x]) / n for x in ("a", "c", "pair")}
    ms |= {f"b{th}": 1e3 * med(v) / args.loop_points for th, v in loop_wall.items()}
    ms["b"] = min(ms[f"b{th}"] for th in args.loop_threads)  # the loop at its best
    # Same estimator: mean SSLMem of the loop's points, engine vs loop (random views differ).
    a_scores = engine(f, g, loop_images, keys[: args.loop_points], k, "anchor", chunk)
    b_scores = loop(f, g, loop_images, k)
    return {
        "arch": arch,
        "k": k,
        "ms": ms,
        "speedup": ms["b"] / ms["a"],
        "ceiling": ms["b"] / ms["c"],
        "overhead": med(ratio["a"]),
        "overhead_cpu": med(cpu["a"]) / med(cpu["c"]),
        "overhead_pair": med(ratio["pair"]),
        "draw_share": med(wall["draw"]) / med(wall["a"]),
        "mean_a": float(a_scores.mean()),
        "mean_b": float(b_scores.mean()),
    }


def print_table(results: list[dict[str, Any]], bt: list[int]) -> None:
    print(
        "\n| encoder | K | (a) anchor | (a) pair | "
        + " | ".join(f"(b) loop, {th} thr" for th in bt)
        + " | (c) floor | **(a)/(b) speed-up** | (c)/(b) ceiling "
        "| **(a)/(c) overhead** (CPU-time) "
        "| pair vs its floor | view drawing, share of (a) | mean SSLMem (a) / (b) |"
    )
    print("|---|---:|" + "---:|" * (len(bt) + 9))
    for r in results:
        ms = r["ms"]
        loops = " | ".join(f"{ms[f'b{th}']:.2f}" for th in bt)
        print(
            f"| {r['arch']} | {r['k']} | {ms['a']:.2f} | {ms['pair']:.2f} | {loops} "
            f"| {ms['c']:.2f} | **{r['speedup']:.1f}x** | {r['ceiling']:.1f}x "
            f"| **{r['overhead']:.2f}x** ({r['overhead_cpu']:.2f}x) "
            f"| {r['overhead_pair']:.2f}x | {100 * r['draw_share']:.0f}% "
            f"| {r['mean_a']:+.4f} / {r['mean_b']:+.4f} |"
        )
    print(
        "\ntimes: wall ms per point, median over repeats; (a)/(b) against the loop's fastest "
        "thread count;\n(c)/(b): the best any batched engine could do with these forwards; "
        "(a)/(c): median of per-chunk back-to-back wall ratios (ratio of process CPU times)"
    )


def main() -> None:
    cores = machine()["cores"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small run (smoke test, ~1 min)")
    p.add_argument("--archs", default="small_cnn,resnet18", help="comma-separated encoders")
    p.add_argument("--points", type=int, default=256, help="points for (a) and (c)")
    p.add_argument("--loop-points", type=int, default=20, help="points for (b)")
    p.add_argument("--views", default="5,8", help="comma-separated K values")
    p.add_argument("--repeats", type=int, default=3, help="timings per measurement (median)")
    p.add_argument("--chunk", type=int, default=256, help="engine chunk_size (points)")
    p.add_argument("--threads", type=int, default=cores, help="torch threads (default: cores)")
    p.add_argument(
        "--loop-threads",
        default="1",
        help="comma-separated torch thread counts to time (b) at; the fastest is used\n"
        "(default 1: batch-1 forwards gain nothing from intra-op threads and, on a shared\n"
        "machine, 2 threads made the loop up to 35x slower; 1 favours the loop)",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="channels_last encoder weights for (a), (b), (c) (a proposed engine change)",
    )
    p.add_argument("--rss-points", default="1000,20000", help="N for the peak-RSS runs")
    p.add_argument(
        "--rss-views",
        type=int,
        default=1,
        help="K for the peak-RSS runs (default 1 keeps the 20,000-point run short; memory is\n"
        "bounded by chunk x (K + 1) images whatever N is; 5 took 8.5 min on a busy 2-core VM)",
    )
    p.add_argument("--rss-arch", default="small_cnn", help="encoder for the peak-RSS runs")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS runs")
    p.add_argument("--no-table", action="store_true", help="only the peak-RSS runs")
    p.add_argument("--no-pair", action="store_true", help="skip pair mode")
    p.add_argument("--profile", action="store_true", help="cProfile breakdown of (a)")
    p.add_argument("--_rss-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    archs = args.archs.split(",")
    views = [int(v) for v in args.views.split(",")]

    if args._rss_child is not None:
        rss_child(args._rss_child, archs[0], views[0], args.chunk, args.threads, args.channels_last)
        return
    args.loop_threads = [int(t) for t in str(args.loop_threads).split(",")]
    if args.quick:
        args.points, args.loop_points, args.repeats = 128, 4, 1
        args.rss_points = "256,1024"
        args.chunk = min(args.chunk, 64)

    info = machine()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
        f"python {info['python']}; torch threads {torch.get_num_threads()}; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    print(
        f"points (a)/(c): {args.points}, (b): {args.loop_points}; chunk {args.chunk}; "
        f"median of {args.repeats}; layer {LAYER!r}; 28x28 grey bundled Fashion-MNIST; "
        f"channels_last {args.channels_last}"
    )
    print("command: " + " ".join([os.path.basename(sys.executable), *sys.argv]))
    wall = time.perf_counter()
    results = []
    for arch in [] if args.no_table else archs:
        for k in views:
            r = bench_arch(arch, k, args)
            results.append(r)
            print(f"  done {arch} K={k} at {time.perf_counter() - wall:.0f} s", flush=True)

    if results:
        print_table(results, args.loop_threads)
    if not args.no_rss:
        arch, k = args.rss_arch, args.rss_views
        print(
            f"\npeak memory, (a) anchor, {arch}, K={k}, chunk {args.chunk}, one subprocess each:\n"
        )
        print(
            "| N | peak RSS (VmHWM) before scoring MiB | **peak RSS (VmHWM) MiB** "
            "| anon RSS before MiB | anon RSS peak MiB | ru_maxrss MiB (see text) | scoring s |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n in (int(x) for x in args.rss_points.split(",")):
            r = peak_rss(n, arch, k, args.chunk, args.threads, args.channels_last)
            print(
                f"| {n} | {r['hwm_before_mib']:.0f} | **{r['hwm_mib']:.0f}** "
                f"| {r['anon_before_mib']:.0f} | {r['anon_peak_mib']:.0f} "
                f"| {r['ru_maxrss_mib']:.0f} | {r['s']:.1f} |",
                flush=True,
            )

    if args.profile:
        profile_engine(archs[-1], args.points, views[0], args.chunk, args.channels_last)
    print(f"\ntotal wall time {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
