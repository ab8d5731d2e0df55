#!/usr/bin/env python
"""GPU benchmark (issue 12): one short, robust run on a lent device, ResNet-18 at 32 px.

Measures, on the same images (bundled Fashion-MNIST tiled, padded to 32 x 32, repeated to RGB:
CIFAR-shaped), each with warm-up and the median of repeats:

1. **training** img/s of :func:`sslmem.training.fit` (bf16 autocast on CUDA, the loop's own
   choice) against lightly's example SimCLR loop (``examples/pytorch/simclr.py``: PIL dataset,
   ``SimCLRTransform`` per sample in a ``DataLoader`` with workers, one forward per view,
   ``NTXentLoss``) -- reused from ``benchmarks/training.py`` (same encoder, same optimizer, same
   augmentation distribution), moved to the device and run under the same bf16 autocast so only
   the loop differs. Target: ratio >= 2x.
2. **scoring** points/s of :func:`~sslmem.memorization.sslmem.compute_sslmem` (anchor mode, fp32,
   TF32 off) against the authors' per-point loop (``loop`` from ``benchmarks/scoring.py``: batch
   size 1, per view one torchvision augmentation and four forwards, distances via numpy, so each
   representation comes back to the host as in their script) -- target >= 50x -- and against
   the bare-forward floor (``floor`` from ``benchmarks/scoring.py``: the same forwards in the
   same batch shapes the engine used, recorded by a hook, on pre-made inputs) -- target <= 1.1x.
3. optionally (``--full``) the full Fashion-MNIST recipe at the paper's budget
   (``make fashion-mnist-benchmark``), cut off at the time budget left.

A global ``--time-budget-s`` (default 480) is checked between repeats and before each
measurement; whatever did not fit is recorded as skipped, and the JSON and table are always
written.

Run on a device:  python benchmarks/gpu.py --out $OUT/gpu.json
Smoke run here:   python benchmarks/gpu.py --device cpu --quick --out /tmp/gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

import scoring as scoring_bench
import training as training_bench

from sslmem.atomic import atomic_write_bytes
from sslmem.config import ExperimentConfig, load_experiment_config
from sslmem.device import autocast_for, resolve_device
from sslmem.errors import SSLMemError
from sslmem.memorization.alignment import AlignmentEstimator
from sslmem.memorization.sslmem import compute_sslmem
from sslmem.models import Encoder, build_encoder

SIZE = 32
CHANNELS = 3
TARGETS = {"training_ratio_min": 2.0, "scoring_speedup_min": 50.0, "floor_overhead_max": 1.1}


class Budget:
    """Wall-clock budget for the whole run: measurements stop between repeats when spent."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()``, the device's queued work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def cifar_like(n: int) -> torch.Tensor:
    """``n`` uint8 ``[n, 3, 32, 32]`` images tiled from the bundled set (as training.py's)."""
    grey, _keys = scoring_bench.points(n)
    return F.pad(grey, (2, 2, 2, 2)).repeat(1, 3, 1, 1).contiguous()


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
        "python": platform.python_version(),
        "cpu": scoring_bench.machine()["cpu"],
        "cores": scoring_bench.machine()["cores"],
    }
    info["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return info


# ----------------------------------------------------------------------------- 1. training


def train_config(arch: str, batch: int, epochs: int) -> ExperimentConfig:
    """training.py's recipe (SimCLR, SGD lr 0.06, 32 px), with ``epochs`` epochs."""
    return load_experiment_config(
        None,
        [
            f"model.arch={arch}",
            "training.method=simclr",
            f"training.batch_size={batch}",
            f"training.epochs={epochs}",
            "training.optimizer=sgd",
            "training.lr=0.06",
            "training.checkpoint_every=100000",
            f"augmentation.output_size={SIZE}",
        ],
    )


def lightly_epoch_rates(
    images: torch.Tensor,
    config: ExperimentConfig,
    device: torch.device,
    workers: int,
    budget: Budget,
) -> list[float]:
    """Images/s of each epoch of lightly's example loop (training.py's), on ``device``.

    Stops after the first epoch that ends with the budget spent.
    """
    loader = training_bench.lightly_loader(images, config, workers)
    model = training_bench.encoder_for(config).to(device)
    criterion = NTXentLoss(temperature=config.training.temperature)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.training.lr, momentum=0.9)
    model.train()
    rates = []
    for _epoch in range(config.training.epochs):
        sync(device)
        started, seen = time.perf_counter(), 0
        for (x0, x1), _ in loader:
            x0 = x0.to(device, non_blocking=True)
            x1 = x1.to(device, non_blocking=True)
            with autocast_for(device):
                z0, z1 = model(x0), model(x1)
                loss = criterion(z0, z1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seen += len(x0)
        sync(device)
        rates.append(seen / (time.perf_counter() - started))
        if budget.left() <= 0:
            break
    return rates


def bench_training(
    args: argparse.Namespace, device: torch.device, budget: Budget
) -> dict[str, Any]:
    """Median warm-epoch img/s of both loops and their ratio."""
    images = cifar_like(args.images)
    config = train_config(args.arch, args.batch_size, args.warmup + args.repeats)
    ours = training_bench.sslmem_epoch_rates(images, config, device)[args.warmup :]
    workers = args.workers
    try:
        theirs = lightly_epoch_rates(images, config, device, workers, budget)
    except RuntimeError:  # e.g. DataLoader workers out of shared memory: measure without them
        workers = 0
        theirs = lightly_epoch_rates(images, config, device, workers, budget)
    theirs = theirs[args.warmup :] or theirs[-1:]  # budget spent: the warm-up epoch is all
    ours_med, theirs_med = statistics.median(ours), statistics.median(theirs)
    return {
        "arch": args.arch,
        "images_per_epoch": args.images,
        "batch_size": args.batch_size,
        "lightly_workers": workers,
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "warmup_epochs": args.warmup,
        "sslmem_img_s": ours,
        "lightly_img_s": theirs,
        "sslmem_img_s_median": ours_med,
        "lightly_img_s_median": theirs_med,
        "ratio": ours_med / theirs_med,
        "target_ratio_min": TARGETS["training_ratio_min"],
    }


# ----------------------------------------------------------------------------- 2. scoring


class _ToHost(nn.Module):
    """Moves a representation to the host, as the authors' ``.cpu().numpy()`` does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.cpu()


class _HostBackbone(nn.Module):
    """An encoder seen by the authors' loop: its ``backbone`` returns host tensors."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.backbone = nn.Sequential(encoder.backbone, _ToHost())  # type: ignore[arg-type]


def scoring_encoders(arch: str, device: torch.device) -> tuple[Encoder, Encoder]:
    """Candidate f and reference g (seeds 0 and 1, eval mode) on ``device``."""
    out: list[Encoder] = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(build_encoder(arch, in_channels=CHANNELS, image_size=SIZE).eval().to(device))
    return out[0], out[1]


def run_engine(
    f: nn.Module,
    g: nn.Module,
    images: torch.Tensor,
    k: int,
    device: torch.device,
    chunk: int,
    view_batch: int,
) -> torch.Tensor:
    res = compute_sslmem(
        [f],
        [g],
        images,
        torch.arange(len(images), dtype=torch.int64),
        augment_spec=scoring_bench.SPEC,
        estimator=AlignmentEstimator(views=k, mode="anchor"),
        layer=scoring_bench.LAYER,
        device=device,
        chunk_size=chunk,
        view_batch=view_batch,
    )
    raw: torch.Tensor = res.raw
    return raw


def engine_batches(f: nn.Module, run: Callable[[], object]) -> list[tuple[torch.Size, bool]]:
    """Shape and channels_last-ness of every batch ``run()`` pushes through ``f``'s backbone."""
    seen: list[tuple[torch.Size, bool]] = []

    def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        seen.append((x.shape, cl and not x.is_contiguous()))

    handle = f.backbone.register_forward_pre_hook(hook)  # type: ignore[union-attr]
    try:
        run()
    finally:
        handle.remove()
    return seen


def floor_batches(
    batches: list[tuple[torch.Size, bool]], device: torch.device
) -> list[torch.Tensor]:
    """Random float inputs with the engine's batch shapes and memory layouts, on ``device``."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for shape, channels_last in batches:
        x = torch.randn(shape, generator=gen).to(device)
        out.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return out


def repeat_timed(
    fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int, budget: Budget
) -> list[float]:
    """Seconds of ``repeats`` runs after ``warmup``; at least one, fewer if the budget is spent."""
    for _ in range(warmup):
        fn()
    out = [timed(fn, device)]
    while len(out) < repeats and budget.left() > 0:
        out.append(timed(fn, device))
    return out


def bench_scoring(args: argparse.Namespace, device: torch.device, budget: Budget) -> dict[str, Any]:
    """Engine vs authors' loop vs bare-forward floor, points/s (median of repeats)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    scoring_bench.SIZE = SIZE  # the authors' crop size, read by scoring.authors_transform
    try:
        f, g = scoring_encoders(args.arch, device)
        images = cifar_like(args.points)
        loop_images = images[: args.loop_points].to(device)
        k, chunk, vb = args.views, args.chunk, args.view_batch

        def engine() -> torch.Tensor:
            return run_engine(f, g, images, k, device, chunk, vb)

        batches = engine_batches(f, engine)  # also the engine's first warm-up
        forwards = sum(shape[0] for shape, _cl in batches)
        assert forwards == (k + 1) * args.points, (forwards, (k + 1) * args.points)
        inputs = floor_batches(batches, device)
        host_f, host_g = _HostBackbone(f), _HostBackbone(g)

        with torch.inference_mode():
            t_engine = repeat_timed(engine, device, args.warmup, args.repeats, budget)
            t_floor = repeat_timed(
                lambda: scoring_bench.floor(f, g, inputs), device, args.warmup, args.repeats, budget
            )
        t_loop = repeat_timed(
            lambda: scoring_bench.loop(host_f, host_g, loop_images, k),
            device,
            min(args.warmup, 1),
            args.repeats,
            budget,
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    engine_ps = args.points / statistics.median(t_engine)
    floor_ps = args.points / statistics.median(t_floor)
    loop_ps = args.loop_points / statistics.median(t_loop)
    return {
        "arch": args.arch,
        "k": k,
        "mode": "anchor",
        "precision": "fp32, TF32 off",
        "points": args.points,
        "loop_points": args.loop_points,
        "chunk": chunk,
        "view_batch": vb,
        "forwards_per_encoder": forwards,
        "engine_batches": len(batches),
        "channels_last": any(cl for _shape, cl in batches),
        "engine_s": t_engine,
        "floor_s": t_floor,
        "loop_s": t_loop,
        "engine_points_s": engine_ps,
        "floor_points_s": floor_ps,
        "loop_points_s": loop_ps,
        "speedup_vs_loop": engine_ps / loop_ps,
        "overhead_vs_floor": floor_ps / engine_ps,
        "target_speedup_min": TARGETS["scoring_speedup_min"],
        "target_overhead_max": TARGETS["floor_overhead_max"],
    }


# ----------------------------------------------------------------------------- 3. full recipe


def bench_full(out_dir: Path, budget: Budget) -> dict[str, Any]:
    """``make fashion-mnist-benchmark`` (the Makefile's recipe and budget), capped at the budget.

    The install steps are skipped (``-o``) and ``VENV`` points at a shim whose ``bin/sslmem`` is
    this interpreter's ``sslmem.cli``, so it runs where no project venv exists (a lent device).
    The dataset must be reachable there (``SSLMEM_DATA_DIR``); a failure is recorded, not raised.
    """
    cap = max(1.0, budget.left())
    with tempfile.TemporaryDirectory() as shim:
        exe = Path(shim) / "bin" / "sslmem"
        exe.parent.mkdir()
        entry = "import sys; from sslmem.cli import main; sys.exit(main())"
        exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "{entry}" "$@"\n')
        exe.chmod(0o755)
        cmd = ["make", "-o", "install", "-o", "system-deps", "fashion-mnist-benchmark"]
        cmd += [f"FM_OUT={out_dir}", f"VENV={shim}"]
        started = time.perf_counter()
        # Own process group: at the cap, make's children (the two train processes) end too.
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            output, _ = proc.communicate(timeout=cap)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            output, _ = proc.communicate()
            return {
                "command": " ".join(cmd[:-1]),
                "completed": False,
                "reason": f"stopped at the time cap ({cap:.0f} s)",
                "output_tail": output[-2000:],
            }
    return {
        "command": " ".join(cmd[:-1]),
        "completed": proc.returncode == 0,
        "returncode": proc.returncode,
        "wall_s": time.perf_counter() - started,
        "output_tail": output[-2000:],
    }


# ----------------------------------------------------------------------------- report


def table(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"device: {env['gpu'] or env['device']} ({env['cpu']}, {env['cores']} cores); "
        f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}",
        "",
        "| measurement | ours | baseline | ratio | target |",
        "|---|---:|---:|---:|---:|",
    ]
    tr, sc = report.get("training"), report.get("scoring")
    if tr and "ratio" in tr:
        lines.append(
            f"| training img/s, {tr['arch']} ({tr['precision']}) vs lightly example loop "
            f"| {tr['sslmem_img_s_median']:.0f} | {tr['lightly_img_s_median']:.0f} "
            f"| {tr['ratio']:.2f}x | >= {tr['target_ratio_min']:.0f}x |"
        )
    if sc and "speedup_vs_loop" in sc:
        lines.append(
            f"| scoring points/s, {sc['arch']} K={sc['k']} ({sc['precision']}) vs authors' loop "
            f"| {sc['engine_points_s']:.1f} | {sc['loop_points_s']:.2f} "
            f"| {sc['speedup_vs_loop']:.1f}x | >= {sc['target_speedup_min']:.0f}x |"
        )
        lines.append(
            f"| scoring vs bare-forward floor (floor/engine points/s) "
            f"| {sc['engine_points_s']:.1f} | {sc['floor_points_s']:.1f} "
            f"| {sc['overhead_vs_floor']:.2f}x | <= {sc['target_overhead_max']}x |"
        )
    for name in ("training", "scoring", "full"):
        part = report.get(name)
        if part and "skipped" in part:
            lines.append(f"| {name}: skipped ({part['skipped']}) | | | | |")
    full = report.get("full")
    if full and "completed" in full:
        lines.append(f"| full Fashion-MNIST recipe: completed {full['completed']} | | | | |")
    lines.append("")
    lines.append(
        f"total wall {report['elapsed_s']:.0f} s of a {report['time_budget_s']:.0f} s budget"
    )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", type=Path, required=True, help="JSON report path")
    p.add_argument("--time-budget-s", type=float, default=480.0, help="stop gracefully after")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run, CPU)")
    p.add_argument("--full", action="store_true", help="then the full Fashion-MNIST recipe")
    p.add_argument("--full-out", type=Path, default=Path("runs/fashion-mnist-gpu"))
    p.add_argument("--arch", default="resnet18", help="sslmem.models registry name")
    p.add_argument("--images", type=int, default=8192, help="training images per epoch")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--points", type=int, default=2048, help="points scored by engine and floor")
    p.add_argument("--loop-points", type=int, default=32, help="points scored by the loop")
    p.add_argument("--views", type=int, default=8, help="K")
    p.add_argument("--chunk", type=int, default=256, help="engine chunk_size (points)")
    p.add_argument("--view-batch", type=int, default=32, help="engine view_batch")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs / epochs first")
    p.add_argument("--repeats", type=int, default=3, help="timed runs / epochs (median)")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.batch_size, args.workers = 64, 32, 0
        args.points, args.loop_points, args.views, args.chunk = 16, 2, 2, 8
        args.warmup, args.repeats = 1, 1
        if args.arch == "resnet18":
            args.arch = "small_cnn"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    budget = Budget(args.time_budget_s)
    try:
        device = resolve_device(args.device)
    except SSLMemError as exc:  # e.g. --device cuda without CUDA: nothing measured or written
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    report: dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "environment": environment(device),
        "time_budget_s": args.time_budget_s,
        "targets": TARGETS,
    }
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("training", lambda: bench_training(args, device, budget)),
        ("scoring", lambda: bench_scoring(args, device, budget)),
    ]
    if args.full:
        steps.append(("full", lambda: bench_full(args.full_out, budget)))
    for name, step in steps:
        if budget.left() <= 0:
            report[name] = {"skipped": "time budget spent"}
            continue
        print(f"[{budget.elapsed():.0f} s] {name} ...", flush=True)
        try:
            report[name] = step()
        except Exception as exc:  # one failed part must not lose the others' figures
            report[name] = {"skipped": f"error: {type(exc).__name__}: {exc}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["elapsed_s"] = budget.elapsed()
    report["stopped_early"] = budget.left() <= 0
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
    print(table(report))
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
