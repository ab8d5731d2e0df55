"""The HTTP routes of the scoring service (FastAPI); the work is in :mod:`sslmem.service.core`.

==========================================  =====================================================
``POST /v1/webhooks/mlflow``                 MLflow registry webhook receiver (signed deliveries)
``POST /v1/score``                           queue a version (bearer token)
``GET /v1/models/{name}/versions/{version}`` status, score summary and judgement of a version
``GET /healthz``                             the process answers
``GET /readyz``                              this replica can accept intake (503 otherwise)
``GET /metrics``                             Prometheus exposition
``GET /docs``, ``GET /openapi.json``         OpenAPI documentation
==========================================  =====================================================
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from sslmem import __version__
from sslmem.errors import TrackingError
from sslmem.service.core import ScoringService
from sslmem.service.settings import ENV_PREFIX
from sslmem.service.webhooks import DeliveryOutcome
from sslmem.tracking.tags import CANONICAL_VERSION_PATTERN, is_canonical_version

__all__ = ["create_app"]

_NO_TOKEN = (
    f"no API token is configured, so mutating endpoints are disabled; set {ENV_PREFIX}API_TOKEN "
    f"or {ENV_PREFIX}API_TOKEN_FILE (a mounted Secret) and send 'Authorization: Bearer <token>'"
)


class ScoreRequest(BaseModel):
    """``POST /v1/score`` body."""

    name: str = Field(min_length=1, description="Registered model name.")
    version: str = Field(pattern=CANONICAL_VERSION_PATTERN, description="Version number.")


def _not_found(exc: TrackingError) -> bool:
    from sslmem.tracking.connection import is_not_found

    return is_not_found(exc)


def create_app(service: ScoringService, *, manage_lifecycle: bool = True) -> FastAPI:
    """The FastAPI application of one service replica.

    Args:
        service: The replica (settings, worker, metrics, ...).
        manage_lifecycle: Start the service with the app and stop it on shutdown (SIGTERM under
            uvicorn): intake stops, running jobs get the grace period, leases are released.

    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            service.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                service.stop()

    app = FastAPI(
        title="sslmem scoring service",
        version=__version__,
        description="Scores every registered encoder version's SSLMem memorisation, judges it "
        "against the champion and exports it to Prometheus.",
        lifespan=lifespan,
    )

    def require_token(request: Request) -> None:
        token = service.api_token()  # re-read when its file changes (rotation)
        if token is None:
            raise HTTPException(status_code=403, detail=_NO_TOKEN)
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.post("/v1/webhooks/mlflow", summary="MLflow registry webhook receiver")
    async def webhook(request: Request) -> JSONResponse:
        if service.stopping:
            return JSONResponse({"detail": "shutting down"}, status_code=503)
        limit = service.settings.webhook_max_body_bytes
        body = bytearray()
        async for chunk in request.stream():  # size-capped while reading, never buffered whole
            body.extend(chunk)
            if len(body) > limit:
                service.metrics.webhook_delivery(DeliveryOutcome.OVERSIZED)
                return JSONResponse(
                    {"outcome": "oversized", "detail": f"body over {limit} bytes"},
                    status_code=413,
                )
        headers = {key: value for key, value in request.headers.items()}
        result, queued = service.handle_delivery(headers, bytes(body))
        return JSONResponse(
            {"outcome": result.outcome.value, "detail": result.reason, "queued": queued},
            status_code=result.outcome.http_status,
        )

    @app.post(
        "/v1/score",
        status_code=202,
        dependencies=[Depends(require_token)],
        summary="Queue a model version for scoring",
    )
    def score(request: ScoreRequest) -> dict[str, Any]:
        if service.stopping:
            raise HTTPException(status_code=503, detail="shutting down")
        try:
            queued = service.request_score(request.name, request.version)
        except TrackingError as exc:
            status = 404 if _not_found(exc) else 503
            raise HTTPException(status_code=status, detail=exc.problem) from None
        return {
            "job": {"name": request.name, "version": request.version, "kind": "score"},
            "queued": queued,
            "detail": "queued" if queued else "already queued or running",
        }

    @app.get("/v1/models/{name}/versions/{version}", summary="Status, summary and judgement")
    def version(name: str, version: str) -> dict[str, Any]:
        from sslmem.service.state import read_version_state

        # Canonical numbers only: '²' passes isdigit() but not int(), '007' would alias '7'.
        if not is_canonical_version(version):
            raise HTTPException(
                status_code=422,
                detail="version must be a positive integer without leading zeros (1-10 digits)",
            )
        try:
            return read_version_state(name, version).to_dict()
        except TrackingError as exc:
            status = 404 if _not_found(exc) else 503
            raise HTTPException(status_code=status, detail=exc.problem) from None

    @app.get("/healthz", summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: this replica can accept intake")
    def readyz() -> JSONResponse:
        # No MLflow or S3 request here: a dependency blip must not take every replica out of
        # the Service at once (sslmem_dependency_up and SSLMemDependencyDown report it).
        state = service.readiness()
        body = {
            "ready": state.ready,
            "stopping": state.stopping,
            "accepting": state.accepting,
            "webhook_secret": "set" if state.webhook_secret else "missing",
            "queue": service.worker.depth(),
        }
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
