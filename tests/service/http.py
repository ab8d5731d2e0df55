"""Talk to a running service over real HTTP; run one in-process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from sslmem.service.app import create_app
from sslmem.service.core import ScoringService
from tests.servers import HOST, free_port, wait_for_http


def request(
    method: str,
    url: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP request; returns ``(status, parsed JSON or text)``."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition (labels matched exactly)."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if found == labels:
            return float(match.group(4))
    return None


def scrape(base: str) -> str:
    """``GET /metrics``."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        return str(response.read().decode())


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def serve_in_thread(service: ScoringService, *, manage_lifecycle: bool = True) -> Iterator[str]:
    """Run the app under uvicorn in a thread on a free port; yield its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        create_app(service, manage_lifecycle=manage_lifecycle),
        host=HOST,
        port=port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{HOST}:{port}"
    try:
        wait_for_http(f"{base}/healthz", 60, ok_statuses=(200,))
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=60)
