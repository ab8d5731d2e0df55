"""The ``sslmem`` command line: one subcommand module per job, each a thin library adapter.

Subcommands register themselves in :data:`COMMANDS` (name -> module path); each module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Expected errors (:class:`SSLMemError`) print
the problem and the fix, and exit non-zero without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sslmem import __version__
from sslmem.config import RuntimeSettings
from sslmem.errors import SSLMemError, out_of_memory_error
from sslmem.runtime import keep_freed_memory_in_heap

# Modules are imported lazily so `sslmem --help` and light commands stay fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "split": ("sslmem.cli.split", "Split a dataset into S_S / S_C / S_I / S_E; write a manifest."),
    "score": (
        "sslmem.cli.score",
        "Score memorisation (SSLMem) of candidate vs reference encoders.",
    ),
    "train": ("sslmem.cli.train", "Train a candidate or reference SSL encoder on a split."),
    "evaluate": ("sslmem.cli.evaluate", "Downstream kNN and linear-probe accuracy of an encoder."),
    "demo": ("sslmem.cli.demo", "The embedded end-to-end demo on the bundled real images (CPU)."),
    "run": (
        "sslmem.cli.run",
        "Run the whole pipeline locally (KFP local runner, local MLflow, CPU); print a summary.",
    ),
    "pipeline": (
        "sslmem.cli.pipeline",
        "Compile the Kubeflow pipeline, or submit a run to a Kubeflow Pipelines server.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="sslmem", description="Measure memorisation in self-supervised image encoders."
    )
    parser.add_argument("--version", action="version", version=f"sslmem {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_path, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as exc:
            if exc.name == module_path:
                continue  # subcommand not shipped in this build
            raise
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def _report(command: str, exc: SSLMemError) -> int:
    print(f"sslmem {command}: error: {exc.problem}", file=sys.stderr)
    if exc.fix:
        print(f"  fix: {exc.fix}", file=sys.stderr)
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sslmem`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if RuntimeSettings().keep_heap:
            keep_freed_memory_in_heap()  # process-wide, so here in the adapter, not the library
        code: int = args._run(args)
    except SSLMemError as exc:
        return _report(args.command, exc)
    except (MemoryError, RuntimeError) as exc:
        memory = out_of_memory_error(exc, args.command)
        if memory is None:
            raise
        return _report(args.command, memory)
    except KeyboardInterrupt:
        print(f"sslmem {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
