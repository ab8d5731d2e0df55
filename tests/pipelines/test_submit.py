"""``sslmem pipeline submit``: validation before any request, bounded retries, the real request."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from sslmem.cli import main


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections but never answers (reads time out)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


class _FakeKfp(BaseHTTPRequestHandler):
    """Just enough of the KFP v2beta1 API for ``create_run_from_pipeline_package``."""

    runs: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._json(200, {"commit_sha": "test", "tag_name": "2.5.0"})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._json(200, {"experiments": [], "total_size": 0})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        if self.path.startswith("/apis/v2beta1/experiments"):
            self._json(200, {"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif self.path.startswith("/apis/v2beta1/runs"):
            type(self).runs.append(body)
            self._json(200, {"run_id": "run-42", "display_name": body.get("display_name", "")})
        else:
            self._json(404, {"error": "not found"})


@pytest.fixture
def fake_kfp() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _FakeKfp.runs = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _FakeKfp.runs
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _submit(host: str, *extra: str) -> int:
    return main(["pipeline", "submit", "--host", host, "--experiment", "sslmem-test", *extra])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--param", "epochs=-1"], "epochs"),
        (["--param", "epoch_count=3"], "epoch_count"),
        (["--param", "arch=no_such_arch"], "model.arch"),
        (["--param", "candidate_seeds=[0, 0]"], "candidate_seeds"),
        (["--set", "training.lr=-1"], "training.lr"),
        (["--set", "pipeline.alpha=2"], "pipeline.alpha"),
        (["--param", "config_yaml=scoring: {views: 0}"], "scoring.views"),
    ],
)
def test_invalid_parameters_fail_before_contacting_the_host(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The host is unreachable: reaching it would exit 3, not 2.
    assert _submit(f"http://127.0.0.1:{_closed_port()}", *args) == 2
    err = capsys.readouterr().err
    assert named in err
    assert "unreachable" not in err


def test_unreachable_host_fails_fast_and_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = _submit(f"http://127.0.0.1:{_closed_port()}", "--connect-attempts", "2")
    assert code == 3
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert "unreachable after 2 attempt(s)" in err and "fix:" in err


def test_silent_host_is_bounded_by_timeouts(
    silent_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    args = ["--connect-attempts", "2", "--connect-timeout", "0.5"]
    assert _submit(silent_server, *args) == 3
    # 2 x 0.5 s timeouts + 1 s backoff, plus process overhead.
    assert time.monotonic() - started < 8
    assert "unreachable" in capsys.readouterr().err


def test_bad_host_url_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert _submit("localhost:8080") == 3
    assert "--host" in capsys.readouterr().err


def test_dry_run_prints_the_validated_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    host = f"http://127.0.0.1:{_closed_port()}"
    assert _submit(host, "--set", "training.epochs=3", "--param", "alpha=0.05", "--dry-run") == 0
    arguments = json.loads(capsys.readouterr().out)
    assert arguments["epochs"] == 3 and arguments["alpha"] == 0.05
    assert "epochs: 3" in arguments["config_yaml"]


def test_submit_sends_the_compiled_pipeline_and_arguments(
    fake_kfp: tuple[str, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    host, runs = fake_kfp
    code = _submit(
        host,
        "--set", "training.epochs=2",
        "--param", "candidate_seeds=[0, 1]",
        "--param", "model_name=enc",
        "--image", "reg.example/sslmem:9",
        "--run-name", "nightly",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "submitted run run-42" in capsys.readouterr().out
    (run,) = runs
    assert run["display_name"] == "nightly"
    parameters = run["runtime_config"]["parameters"]
    assert parameters["epochs"] == 2 and parameters["candidate_seeds"] == [0, 1]
    assert parameters["model_name"] == "enc"
    spec = run["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "sslmem-memorization"
    assert run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"reg.example/sslmem:9"}
