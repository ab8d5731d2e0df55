"""``sslmem models opt-in NAME...``: bring registered models into the scoring service's scope."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem models``."""
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    opt_in = sub.add_parser(
        "opt-in",
        help="Tag registered models sslmem.managed=true (the scoring service acts on them).",
        description=(
            "Tag each registered model NAME sslmem.managed=true, creating it if needed, so that "
            "the scoring service scores, judges and exports its versions. For models registered "
            "before the tag existed (sslmem register and the pipeline set it themselves); opt in "
            "candidate models and their reference models alike. The MLflow server is "
            "SSLMEM_MLFLOW_TRACKING_URI."
        ),
    )
    opt_in.add_argument("names", nargs="+", metavar="NAME", help="registered model name")


def run(args: argparse.Namespace) -> int:
    """Opt the models in; print what changed."""
    from sslmem.tracking.connection import configure_from_settings  # imports MLflow
    from sslmem.workflow.scope import opt_in_model

    configure_from_settings()
    for name in args.names:
        changed = opt_in_model(name)
        print(f"model {name!r}: {'opted in' if changed else 'already opted in'}")
    return 0
