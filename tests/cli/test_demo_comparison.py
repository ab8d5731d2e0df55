"""``sslmem demo`` leaves two versions to compare; the second run is judged against the first.

The real pipeline through KFP's local runner on the tiny test config: the first run's version
becomes the champion (the model had none), the demo's second ``sslmem run`` into the same
output directory (candidate seed 1) is judged against it. Asserted through MLflow's API and on
what the terminal shows; the printed ``mlflow ui`` command is started as printed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from sslmem.cli import main
from sslmem.tracking import tags as T
from tests.pipelines.conftest import TINY_RUN_CONFIG
from tests.pipelines.conftest import _restore_mlflow_state as _restore_mlflow_state
from tests.servers import _child_pids, _stop_pid, free_port, stop_process, wait_for_http

pytestmark = pytest.mark.slow

MODEL = "tiny-encoder"


def _client(out: Path) -> Any:
    from sslmem.tracking import configure_mlflow
    from sslmem.tracking.connection import client

    configure_mlflow(f"sqlite:///{out / 'mlflow.db'}")
    return client()


def test_the_demo_judges_a_second_version_against_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_RUN_CONFIG)
    out = tmp_path / "out"

    assert main(["demo", "--config", str(config), "--out", str(out)]) == 0
    assert_comparison(out, capsys.readouterr().out)


def assert_comparison(out: Path, text: str) -> None:
    """What one demo leaves in ``out`` and printed (``text``)."""
    assert "version 1 is now the champion" in text
    # The demo's second run: the next candidate seed, the first run's reference.
    assert "--set pipeline.candidate_seeds=[1] --set pipeline.reference_seeds=[0]" in text

    client = _client(out)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    first = dict(client.get_model_version(MODEL, "1").tags)
    second_version = client.get_model_version(MODEL, "2")
    second = dict(second_version.tags)
    assert T.parse_provenance(second)["candidate_seeds"] == [1]  # trained differently
    assert first[T.JUDGED_AGAINST] == "1"  # the champion itself
    assert second[T.JUDGED_AGAINST] == "1" and second[T.STATUS] == "scored"
    judgement = json.loads(second[T.JUDGEMENT_JSON])
    # Comparable (one reference, one protocol): a paired test of the same S_C points was made.
    assert judgement["outcome"] != "incomparable", judgement["reasons"]
    assert judgement["champion_version"] == "1" and judgement["mean"]["test"] == "paired_t"
    assert f"judgement against the champion (version 1): {judgement['outcome'].upper()}" in text
    # The same judgement heads the version page (its description).
    assert f"**judgement: {judgement['outcome'].upper()}** against `champion` version 1" in (
        second_version.description or ""
    )
    assert "this version is the `champion`" in (client.get_model_version(MODEL, "1").description)

    # The printed links: both version pages and the Compare view of their source runs.
    compare = next(line for line in text.splitlines() if line.startswith("compare:"))
    fragment = urlsplit(compare.split(maxsplit=1)[1]).fragment
    query = parse_qs(urlsplit(fragment).query)
    assert json.loads(unquote(query["name"][0])) == MODEL
    runs = json.loads(query["runs"][0])
    assert runs == {
        "1": client.get_model_version(MODEL, "1").run_id,
        "2": second_version.run_id,
    }
    assert f"#/models/{MODEL}/versions/2" in text and f"#/models/{MODEL}/versions/1" in text

    # The printed UI command works as printed (only the port is changed: 5000 may be taken).
    command = next(line.strip() for line in text.splitlines() if " ui --backend-store-uri" in line)
    argv = shlex.split(command)
    env_prefix = [a for a in argv if "=" in a.split("/")[0]]
    argv = argv[len(env_prefix) :]
    assert Path(argv[0]).is_file(), argv[0]
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    env = dict(a.split("=", 1) for a in env_prefix)
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", 120, ok_statuses=(200,), proc=proc)
        api = f"{url}/api/2.0/mlflow/model-versions/get?name={MODEL}&version=2"
        with urllib.request.urlopen(api, timeout=30) as response:  # this store, served
            assert json.load(response)["model_version"]["run_id"] == second_version.run_id
    finally:
        family = _descendants(proc.pid)
        stop_process(proc)
        for pid in family:
            _stop_pid(pid)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the UI runs uvicorn and its workers as children)."""
    found = []
    for child in _child_pids(pid):
        found += [child, *_descendants(child)]
    return found
