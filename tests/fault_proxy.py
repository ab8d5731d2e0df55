"""A tiny HTTP reverse proxy that injects faults in front of a real server (MLflow).

Requests pass through unchanged unless :attr:`FaultProxy.fault` answers a status for them: then
the proxy answers that status itself (e.g. 503 for artifact downloads while the registry API
stays up). Not a mock: the real server answers everything else.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: ``(method, path) -> status`` to answer instead of forwarding, or ``None`` to forward.
Fault = Callable[[str, str], int | None]

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    """The running proxy: :attr:`url` to point clients at, :attr:`fault` to arm.

    Attributes:
        url: ``http://127.0.0.1:port`` of the proxy.
        fault: The fault rule (``None``: forward everything).
        injected: ``(method, path, status)`` of every request answered by the rule.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.fault: Fault | None = None
        self.injected: list[tuple[str, str, int]] = []


def _handler(upstream: str, proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            rule = proxy.fault
            status = rule(self.command, self.path) if rule is not None else None
            if status is not None:
                proxy.injected.append((self.command, self.path, status))
                payload = b"injected fault"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            conn = http.client.HTTPConnection(target.netloc, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            headers["Host"] = target.netloc
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except OSError:
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            finally:
                conn.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_HEADERS and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward  # noqa: N815

    return Handler


@contextlib.contextmanager
def start_fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """Serve a :class:`FaultProxy` to ``upstream`` on 127.0.0.1 (a free port) for the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    proxy = FaultProxy(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(upstream, proxy)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
