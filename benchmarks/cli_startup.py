"""CLI start-up: ``sslmem --version`` with lazy imports vs every heavy import up front, one run.

Runs each variant in fresh interpreters (``--repeats`` times, alternating) and prints the median
wall time and peak RSS (``wait4`` rusage of that child alone). "lazy" is the real CLI;
"eager" first imports what the subcommands' ``run`` functions import (torch, MLflow, kfp,
matplotlib, ...) -- what every command paid before the CLI imported lazily -- then runs the
same ``main(["--version"])``.

    python benchmarks/cli_startup.py [--repeats 5] [--argv --version]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

#: What the subcommands import when they run (the old CLI imported all of it for any command).
EAGER_IMPORTS = (
    "sslmem.config",
    "sslmem.data.datasets",
    "sslmem.memorization.scoring",
    "sslmem.reporting",
    "sslmem.evaluation",
    "sslmem.training",
    "sslmem.tracking",
    "sslmem.pipelines.local",
    "sslmem.pipelines.submit",
)


def _code(eager: bool, argv: list[str]) -> str:
    imports = "".join(f"import {name}\n" for name in EAGER_IMPORTS) if eager else ""
    return f"{imports}from sslmem.cli import main\nraise SystemExit(main({argv!r}))\n"


def _measure(eager: bool, argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one fresh interpreter."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _code(eager, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{'eager' if eager else 'lazy'} run failed")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--argv", nargs="+", default=["--version"], help="sslmem arguments")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"lazy": [], "eager": []}
    _measure(True, args.argv)  # warm the page cache once so neither variant pays for it alone
    for _ in range(args.repeats):
        for name in ("lazy", "eager"):
            results[name].append(_measure(name == "eager", args.argv))
    print(f"`sslmem {' '.join(args.argv)}`, median of {args.repeats} fresh interpreters\n")
    print("| imports | wall s | peak RSS MiB |")
    print("|---|---|---|")
    for name, runs in results.items():
        wall = statistics.median(run[0] for run in runs)
        rss = statistics.median(run[1] for run in runs)
        print(f"| {name} | {wall:.2f} | {rss:.0f} |")
    lazy_wall = statistics.median(run[0] for run in results["lazy"])
    eager_wall = statistics.median(run[0] for run in results["eager"])
    print(f"\nspeed-up: {eager_wall / lazy_wall:.0f}x")


if __name__ == "__main__":
    main()
