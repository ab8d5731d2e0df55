"""``sslmem pipeline submit``: validation before any request, bounded retries, the real request."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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
    #: The Authorization header of every request ("" when absent).
    authorizations: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        return

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:
            type(self).authorizations.append(self.headers.get("Authorization", ""))
        return ok

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
    _FakeKfp.authorizations = []
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


@pytest.mark.parametrize("source", ["env", "file", "flag"])
def test_the_token_comes_from_the_environment_a_file_or_the_flag(
    source: str,
    fake_kfp: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host, runs = fake_kfp
    monkeypatch.setenv("SSLMEM_KFP_TOKEN", "env-token-1")
    extra: list[str] = []
    if source == "file":
        token_file = tmp_path / "token"
        token_file.write_text("file-token-2\n")
        extra = ["--token-file", str(token_file)]
    elif source == "flag":
        extra = ["--token", "flag-token-3"]
    assert _submit(host, *extra) == 0, capsys.readouterr().err
    expected = {"env": "env-token-1", "file": "file-token-2", "flag": "flag-token-3"}[source]
    assert len(runs) == 1
    assert set(_FakeKfp.authorizations) == {f"Bearer {expected}"}
    out = capsys.readouterr()
    assert expected not in out.out + out.err


def test_an_unreadable_token_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-token"
    assert _submit(f"http://127.0.0.1:{_closed_port()}", "--token-file", str(missing)) == 3
    err = capsys.readouterr().err
    assert "token file" in err and str(missing) in err and "unreachable" not in err


def test_a_host_with_credentials_is_refused_without_echoing_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = f"http://admin:kfp-pw-3141@127.0.0.1:{_closed_port()}"
    assert _submit(host) == 3
    err = capsys.readouterr().err
    assert "kfp-pw-3141" not in err
    assert "http://***@127.0.0.1" in err and "SSLMEM_KFP_TOKEN" in err


def test_no_cache_disables_caching_of_every_task(
    fake_kfp: tuple[str, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    host, runs = fake_kfp
    assert _submit(host, "--no-cache") == 0, capsys.readouterr().err
    spec = runs[0]["pipeline_spec"]["pipeline_spec"]
    tasks = [
        task
        for component in [spec["root"], *spec["components"].values()]
        for task in component.get("dag", {}).get("tasks", {}).values()
    ]
    assert tasks and not [t for t in tasks if t.get("cachingOptions", {}).get("enableCache")]
