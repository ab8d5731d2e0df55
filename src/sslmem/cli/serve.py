"""``sslmem serve``: run the scoring service (FastAPI on uvicorn).

On SIGTERM the process ends in two stages, one after the other: uvicorn stops accepting
connections and waits up to ``--http-grace-s`` for open requests, then the service stops
(:meth:`~sslmem.service.core.ScoringService.stop`): intake closes, running jobs get
``SSLMEM_SERVICE_SHUTDOWN_GRACE_S``, and leases still held are released. A pod's
``terminationGracePeriodSeconds`` must cover both plus the releases (the Helm chart derives it).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sslmem.service.settings import ServiceSettings

#: Default of ``--http-grace-s``: requests here are short (a webhook, a queued job, a read).
HTTP_GRACE_S = 10


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
    parser.add_argument(
        "--http-grace-s",
        type=int,
        default=HTTP_GRACE_S,
        help="on SIGTERM, seconds open HTTP requests may take before the service stops "
        f"(default {HTTP_GRACE_S}); the job grace (SSLMEM_SERVICE_SHUTDOWN_GRACE_S) follows",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; then stop intake and finish or release running jobs."""
    import uvicorn

    from sslmem.config import RuntimeSettings
    from sslmem.errors import ConfigError
    from sslmem.service.app import create_app
    from sslmem.service.core import ScoringService
    from sslmem.service.settings import ServiceSettings

    if args.http_grace_s < 0:
        raise ConfigError(
            f"--http-grace-s must be >= 0, got {args.http_grace_s}", "pass a number of seconds"
        )
    overrides = {key: getattr(args, key) for key in ("host", "port") if getattr(args, key)}
    settings = ServiceSettings.load(args.config, **overrides)
    runtime = RuntimeSettings()
    from sslmem.service.logs import configure_logging

    # One format for the whole process (uvicorn's loggers included): JSON lines for a log
    # pipeline (the chart's default), text for a terminal (SSLMEM_SERVICE_LOG_FORMAT).
    configure_logging(settings.log_format, logging.getLevelName(runtime.log_level))
    service = ScoringService(settings, runtime)
    # Through the log, so that with LOG_FORMAT=json every line of the process is one object.
    logging.getLogger("sslmem.serve").info(
        "sslmem serve: http://%s:%s (replica %s); webhook secret %s, API token %s",
        settings.host,
        settings.port,
        settings.replica_id,
        "set" if settings.webhook_secret else "NOT set: deliveries refused",
        "set" if settings.api_token else "NOT set: POST /v1/score refused",
    )
    # The lifespan starts the service without waiting for MLflow or S3: the port opens at once.
    uvicorn.run(create_app(service), **uvicorn_options(settings, args.http_grace_s))
    return 0


def uvicorn_options(settings: ServiceSettings, http_grace_s: int) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` for these settings.

    Args:
        settings: The service settings (address).
        http_grace_s: ``--http-grace-s``: uvicorn's graceful-shutdown timeout. The service's own
            stop (job grace, lease releases) runs after it, in the lifespan's shutdown.
    """
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "log_config": None,  # keep configure_logging's handler
        "timeout_graceful_shutdown": http_grace_s,
    }
