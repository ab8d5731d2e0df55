"""``sslmem webhook ensure``: create or update the MLflow registry webhook for the service."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslmem.errors import ConfigError
from sslmem.service.settings import ENV_PREFIX, ServiceSettings, read_secret_file

_SECRET_ENV = f"{ENV_PREFIX}WEBHOOK_SECRET"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem webhook``."""
    sub = parser.add_subparsers(dest="webhook_command", metavar="ACTION", required=True)
    ensure = sub.add_parser(
        "ensure",
        help="Create or update the registry webhook (idempotent).",
        description=(
            "Create the MLflow registry webhook NAME pointing at the scoring service, or update "
            "it to these values. The MLflow server is SSLMEM_MLFLOW_TRACKING_URI. The secret "
            f"comes from --secret-file, else {_SECRET_ENV} or {_SECRET_ENV}_FILE (the same "
            "settings `sslmem serve` reads); it is never printed."
        ),
    )
    ensure.add_argument(
        "--url", required=True, help="receiver URL, e.g. http://HOST:8080/v1/webhooks/mlflow"
    )
    # The defaults live in sslmem.tracking.webhooks (which imports MLflow): resolved in run(),
    # so `--help` stays light.
    ensure.add_argument("--name", help="webhook name (identity; default: sslmem-scoring)")
    ensure.add_argument(
        "--events",
        nargs="+",
        metavar="EVENT",
        help="MLflow events (default: the three the scoring service acts on: "
        "model_version.created, model_version_tag.set, model_version_alias.created)",
    )
    ensure.add_argument("--secret-file", type=Path, help="file holding the HMAC secret")


def run(args: argparse.Namespace) -> int:
    """Ensure the webhook; print what was done, never the secret."""
    from sslmem.tracking.connection import configure_from_settings  # imports MLflow
    from sslmem.tracking.webhooks import DEFAULT_EVENTS, DEFAULT_WEBHOOK_NAME, ensure_webhook

    if args.secret_file is not None:
        secret = read_secret_file(args.secret_file, "webhook secret")
    else:
        loaded = ServiceSettings.load().webhook_secret
        if loaded is None:
            raise ConfigError(
                "no webhook secret given",
                f"pass --secret-file FILE or set {_SECRET_ENV} / {_SECRET_ENV}_FILE "
                "(the service must be given the same secret)",
            )
        secret = loaded
    configure_from_settings()
    state = ensure_webhook(
        args.url,
        secret,
        name=args.name or DEFAULT_WEBHOOK_NAME,
        events=args.events or list(DEFAULT_EVENTS),
    )
    detail = f" ({', '.join(state.changed)} changed)" if state.changed else ""
    print(
        f"webhook {state.name!r} {state.action}{detail}: id {state.webhook_id}, url {state.url}, "
        f"events {', '.join(state.events)}; secret set (not shown)"
    )
    return 0
