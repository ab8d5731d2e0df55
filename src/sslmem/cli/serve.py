"""``sslmem serve``: run the scoring service (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem serve``."""
    parser.add_argument(
        "--host", help="address to bind (default 127.0.0.1, or SSLMEM_SERVICE_HOST)"
    )
    parser.add_argument("--port", type=int, help="TCP port (default 8080, or SSLMEM_SERVICE_PORT)")
    parser.add_argument(
        "--config",
        type=Path,
        help="service config file (YAML or .env; default SSLMEM_SERVICE_CONFIG_FILE)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; then stop intake and finish or release running jobs."""
    import uvicorn

    from sslmem.config import RuntimeSettings
    from sslmem.service.app import create_app
    from sslmem.service.core import ScoringService
    from sslmem.service.settings import ServiceSettings

    overrides = {key: getattr(args, key) for key in ("host", "port") if getattr(args, key)}
    settings = ServiceSettings.load(args.config, **overrides)
    runtime = RuntimeSettings()
    service = ScoringService(settings, runtime)
    print(
        f"sslmem serve: http://{settings.host}:{settings.port} (replica {settings.replica_id}); "
        f"webhook secret {'set' if settings.webhook_secret else 'NOT set: deliveries refused'}, "
        f"API token {'set' if settings.api_token else 'NOT set: POST /v1/score refused'}",
        flush=True,
    )
    uvicorn.run(
        create_app(service),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )
    return 0
