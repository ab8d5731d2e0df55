"""`make mutation`: run mutmut over the guarantee modules and report the kill rate per module.

mutmut (configured in pyproject.toml's ``[tool.mutmut]``) copies ``src/`` into ``mutants/``, runs
the selected fast unit tests once per mutant and records each mutant's exit code in
``mutants/<source>.meta``. This script runs it (unless ``--report-only``), then reads those
files and prints, per mutated module, how many mutants the tests killed; it exits 1 when the
overall kill rate is under ``--min-kill-rate`` (docs/service.md#mutation-testing).

A mutant counts as *killed* when a test failed (or the type check refused it) or timed out;
*survived* when every test passed; *no tests* when no selected test runs the mutated function.
The rate is killed / (killed + survived + no tests + suspicious): a mutant no test reaches is
a missing test too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# mutmut's exit codes (mutmut.stats.status_by_exit_code, 3.8.1), reduced to what counts.
_KILLED = {1, 3, 36, 37, 24, -24, 152, 255}  # test failed, pytest error, timeout, type check
_SURVIVED = {0}
_NO_TESTS = {5, 33}
_SKIPPED = {34}


def _status(exit_code: int | None) -> str:
    if exit_code is None:
        return "not checked"
    if exit_code in _KILLED:
        return "killed"
    if exit_code in _SURVIVED:
        return "survived"
    if exit_code in _NO_TESTS:
        return "no tests"
    if exit_code in _SKIPPED:
        return "skipped"
    return "suspicious"


def collect(mutants_dir: Path) -> dict[str, Counter[str]]:
    """Per source file (``src/...py``): how many mutants ended in each status."""
    by_module: dict[str, Counter[str]] = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        codes: dict[str, int | None] = data.get("exit_code_by_key", {})
        if not codes:
            continue
        module = str(meta.relative_to(mutants_dir))[: -len(".meta")]
        by_module[module] = Counter(_status(code) for code in codes.values())
    return by_module


def survivors(mutants_dir: Path) -> list[str]:
    """Names of the mutants that survived or that no test reached (for ``mutmut show``)."""
    names: list[str] = []
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        for name, code in data.get("exit_code_by_key", {}).items():
            if _status(code) in {"survived", "no tests", "suspicious"}:
                names.append(name)
    return names


def table(by_module: dict[str, Counter[str]]) -> tuple[str, float]:
    """A Markdown table of the kill rate per module, and the overall rate."""
    lines = [
        "| Module | Mutants | Killed | Survived | No tests | Kill rate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total: Counter[str] = Counter()
    for module, counts in by_module.items():
        total.update(counts)
        lines.append(_row(f"`{module}`", counts))
    lines.append(_row("**all**", total))
    return "\n".join(lines), _rate(total)


def _rate(counts: Counter[str]) -> float:
    judged = sum(counts[s] for s in ("killed", "survived", "no tests", "suspicious"))
    return counts["killed"] / judged if judged else 0.0


def _row(name: str, counts: Counter[str]) -> str:
    return (
        f"| {name} | {sum(counts.values())} | {counts['killed']} | {counts['survived']} | "
        f"{counts['no tests']} | {100 * _rate(counts):.1f} % |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutmut", default=".venv/bin/mutmut", help="the mutmut executable")
    parser.add_argument("--max-children", type=int, default=2, help="mutants run in parallel")
    parser.add_argument("--report-only", action="store_true", help="only read mutants/")
    parser.add_argument("--min-kill-rate", type=float, default=0.90)
    parser.add_argument("--mutants-dir", type=Path, default=Path("mutants"))
    parser.add_argument(
        "mutants",
        nargs="*",
        help="only (re-)run these mutants, e.g. 'sslmem.coordination.lease.*' (mutmut globs)",
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    if not args.report_only:
        run = [args.mutmut, "run", "--max-children", str(args.max_children), *args.mutants]
        code = subprocess.run(run, check=False).returncode
        if code != 0:
            print(f"mutmut run exited {code}", file=sys.stderr)
            return code
    by_module = collect(args.mutants_dir)
    if not by_module:
        print("no mutmut results under mutants/: run `make mutation` first", file=sys.stderr)
        return 2
    text, rate = table(by_module)
    print(text)
    if not args.report_only:
        print(f"\nmutmut run took {time.monotonic() - started:.0f} s")
    left = survivors(args.mutants_dir)
    if left:
        print("\nNot killed (inspect with `.venv/bin/mutmut show NAME`):")
        print("\n".join(f"  {name}" for name in left))
    if rate < args.min_kill_rate:
        print(
            f"\nkill rate {100 * rate:.1f} % is under {100 * args.min_kill_rate:.0f} %: "
            "add tests that kill the survivors above",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
