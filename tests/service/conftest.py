"""Fixtures for the service tests: an MLflow server that delivers webhooks, a raw receiver."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.servers import HOST, MlflowServer, free_port, start_mlflow_server
from tests.tracking.conftest import (  # noqa: F401 - fixtures
    _restore_mlflow_state,
    local_mlflow,
    mlflow_db_template,
)

# What an MLflow server needs to deliver to an http receiver on a private (loopback) address;
# MLflow caches its webhook list per event for 60 s by default: 1 s lets tests change webhooks.
WEBHOOK_SERVER_ENV = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
}


@pytest.fixture(scope="session")
def webhook_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` configured to deliver registry webhooks to 127.0.0.1."""
    from cryptography.fernet import Fernet

    root = tmp_path_factory.mktemp("mlflow-webhooks")
    env = {
        **WEBHOOK_SERVER_ENV,
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    with start_mlflow_server(root, str(root / "artifacts"), env=env) as server:
        yield server


@dataclass
class Recorded:
    """One raw request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A stdlib HTTP server on 127.0.0.1 that records every POST verbatim and answers 200."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Recorded]:
        """Wait until ``count`` requests arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.requests)} of {count} webhook deliveries arrived")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    port = free_port()
    recorder = Receiver(url=f"http://{HOST}:{port}/v1/webhooks/mlflow")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with recorder.lock:
                recorder.requests.append(Recorded(self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((HOST, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        with contextlib.suppress(RuntimeError):
            thread.join(timeout=5)
