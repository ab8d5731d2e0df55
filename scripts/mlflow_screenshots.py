"""Screenshots of the MLflow UI comparing two sslmem model versions (docs/img/mlflow-*.png).

Reproduces the pictures in docs/mlflow.md from nothing but this checkout:

1. ``sslmem run`` twice on a tiny config (candidate seed 0, then 1) into one output directory:
   two pipeline runs, two scored candidate versions, real workflow code end to end.
2. A real ``mlflow server`` on that store (127.0.0.1, telemetry and the job runner off).
3. Headless Chromium (Debian's ``chromium``) screenshots of the experiment's runs (parent runs
   with nested steps), its logged-model table, a model version page and two versions compared.

Usage::

    apt-get install -y --no-install-recommends chromium
    .venv/bin/python scripts/mlflow_screenshots.py [--work DIR] [--img docs/img] [--reuse]

``--reuse`` keeps the runs of an earlier call in ``--work`` (only the screenshots are taken
again). Takes ~6 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-encoder"
EXPERIMENT = "sslmem-ui"
#: Small enough for a shared 2-core CPU; the numbers are illustrations, not results.
CONFIG = f"""
split: {{pool_size: 80}}
augmentation: {{output_size: 16}}
model: {{arch: small_cnn, arch_kwargs: {{widths: [8, 8, 8]}}, head_hidden_dim: 16,
        head_output_dim: 8}}
training: {{epochs: 2, batch_size: 16}}
scoring: {{views: 4}}
evaluation: {{probe_epochs: 5, knn_k: 5}}
pipeline: {{model_name: {MODEL}, mlflow_experiment: {EXPERIMENT}}}
"""
ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sslmem_runs(work: Path) -> None:
    config = work / "tiny.yaml"
    config.write_text(CONFIG)
    sslmem = Path(sys.executable).with_name("sslmem")
    for seed in (0, 1):
        args = [str(sslmem), "run", "--config", str(config), "--out", str(work / "out")]
        args += ["--set", f"pipeline.candidate_seeds=[{seed}]"]
        print("+", " ".join(args), flush=True)
        subprocess.run(args, check=True, env={**os.environ, **ENV})


@contextmanager
def _mlflow_server(work: Path) -> Iterator[str]:
    port = _free_port()
    args = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{work / 'out' / 'mlflow.db'}",
        "--artifacts-destination",
        str(work / "out" / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, **ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (work / "mlflow-server.log").open("wb")
    proc = subprocess.Popen(
        args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start; see {log.name}")
            time.sleep(1)
        yield url
    finally:
        # The server and its uvicorn child share the new session: stop that process group only.
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def _ids(url: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(url, url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    versions = sorted(
        client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version)
    )
    return {
        "experiment": str(experiment.experiment_id),
        "v1_run": str(versions[0].run_id),
        "v2_run": str(versions[1].run_id),
        "v2": str(versions[1].version),
    }


def _shot(chromium: str, url: str, out: Path, size: str = "1500,1000") -> None:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        args = [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--window-size={size}",
            "--virtual-time-budget=20000",
            f"--screenshot={out}",
            url,
        ]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print("wrote", out, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sslmem-ui")
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--reuse", action="store_true", help="keep the runs of an earlier call")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium not found: apt-get install -y --no-install-recommends chromium")
        return 2
    work = args.work.resolve()
    if not (args.reuse and (work / "out" / "mlflow.db").is_file()):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        _sslmem_runs(work)
    args.img.mkdir(parents=True, exist_ok=True)
    with _mlflow_server(work) as url:
        ids = _ids(url)
        eid = ids["experiment"]
        runs = json.dumps({"1": ids["v1_run"], ids["v2"]: ids["v2_run"]}, separators=(",", ":"))
        compare = "/compare-model-versions?name=" + urllib.parse.quote(json.dumps(MODEL))
        compare += "&runs=" + urllib.parse.quote(runs)
        pages = {
            "mlflow-runs.png": f"/#/experiments/{eid}/runs",
            "mlflow-models.png": f"/#/experiments/{eid}/models",
            "mlflow-version.png": f"/#/models/{MODEL}/versions/{ids['v2']}",
            "mlflow-compare.png": f"/#{compare}",
        }
        for name, page in pages.items():
            _shot(chromium, url + page, args.img / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
