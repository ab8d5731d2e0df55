"""The ``sslmem`` command line: one subcommand module per job, each a thin library adapter.

Subcommands register themselves in :data:`COMMANDS` (name -> module path, one-line help); each
module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Adding a subcommand is one
line here.

Imports are lazy so that ``sslmem --help``, ``sslmem --version`` and argument errors answer at
once: only the module of the subcommand named on the command line is imported, and a
subcommand module imports torch, MLflow or kfp only inside ``run`` (``add_arguments`` builds the
parser from the standard library alone). Expected errors (:class:`SSLMemError`) print the
problem and the fix, and exit non-zero without a traceback.

Every word of the command line must be valid UTF-8 (checked before parsing, for every command).
Ctrl-C stops a command with exit status 130, except once its output is complete: from the swap
of a report directory on, the command finishes with its own status (:mod:`sslmem.interrupts`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from sslmem import __version__
from sslmem.cli.common import check_utf8_arguments
from sslmem.errors import SSLMemError, out_of_memory_error
from sslmem.interrupts import guard
from sslmem.redaction import redact_logging

COMMANDS: dict[str, tuple[str, str]] = {
    "split": ("sslmem.cli.split", "Split a dataset into S_S / S_C / S_I / S_E; write a manifest."),
    "score": (
        "sslmem.cli.score",
        "Score memorisation (SSLMem) of candidate vs reference encoders.",
    ),
    "unitmem": (
        "sslmem.cli.unitmem",
        "UnitMem per unit of an encoder's layers (Wang et al., NeurIPS 2024).",
    ),
    "train": ("sslmem.cli.train", "Train a candidate or reference SSL encoder on a split."),
    "evaluate": ("sslmem.cli.evaluate", "Downstream kNN and linear-probe accuracy of an encoder."),
    "curate": (
        "sslmem.cli.curate",
        "Curation study: remove the most memorised candidates, retrain, compare (Sec. 5).",
    ),
    "demo": ("sslmem.cli.demo", "The embedded end-to-end demo on the bundled real images (CPU)."),
    "run": (
        "sslmem.cli.run",
        "Run the whole pipeline locally (KFP local runner, local MLflow, CPU); print a summary.",
    ),
    "pipeline": (
        "sslmem.cli.pipeline",
        "Compile the Kubeflow pipeline, or submit a run to a Kubeflow Pipelines server.",
    ),
    "serve": ("sslmem.cli.serve", "Run the scoring service (webhooks, reconcile, /metrics)."),
    "register": ("sslmem.cli.register", "Register your own encoder for the scoring service."),
    "models": ("sslmem.cli.models", "Opt registered models in to the scoring service's scope."),
    "webhook": (
        "sslmem.cli.webhook",
        "Create or update the MLflow webhook of the scoring service.",
    ),
}


def _shipped(module_path: str) -> bool:
    """Whether a subcommand's module exists in this build (found without importing it)."""
    return importlib.util.find_spec(module_path) is not None


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand in ``argv``: its first non-option word (global options take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported and its arguments added.

    Args:
        command: The subcommand to build fully (``None``: none, e.g. for ``--help``).

    """
    parser = argparse.ArgumentParser(
        prog="sslmem", description="Measure memorisation in self-supervised image encoders."
    )
    parser.add_argument("--version", action="version", version=f"sslmem {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_path, help_text) in COMMANDS.items():
        if not _shipped(module_path):
            continue  # subcommand not shipped in this build
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_path)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_run=module.run)
    return parser


def _report(command: str | None, exc: SSLMemError) -> int:
    prefix = "sslmem" if command is None else f"sslmem {command}"
    print(f"{prefix}: error: {exc.problem}", file=sys.stderr)
    if exc.fix:
        print(f"  fix: {exc.fix}", file=sys.stderr)
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sslmem`` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        check_utf8_arguments(words)  # Linux passes any bytes; reports and logs hold UTF-8
    except SSLMemError as exc:
        command = command_of(words)
        return _report(command if command in COMMANDS else None, exc)
    args = build_parser(command_of(words)).parse_args(words)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redact_logging()  # whatever a library logs, no URI credentials reach the terminal
    with guard() as interrupts:
        try:
            # Deferred: it imports torch (via the config's augmentation spec), needed only now.
            from sslmem.runtime import apply_process_settings

            apply_process_settings()  # process-wide, so here in the adapter, not the library
            code: int = args._run(args)
        except SSLMemError as exc:
            return _report(args.command, exc)
        except (MemoryError, RuntimeError) as exc:
            memory = out_of_memory_error(exc, args.command)
            if memory is None:
                raise
            return _report(args.command, memory)
        except KeyboardInterrupt:
            done = " (its output was already complete)" if interrupts.committed else ""
            print(f"sslmem {args.command}: interrupted{done}", file=sys.stderr)
            return 130
    if interrupts.ignored_after_output:
        print(
            f"sslmem {args.command}: interrupt received after the output was complete; "
            f"the command finished (exit status {code})",
            file=sys.stderr,
        )
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
