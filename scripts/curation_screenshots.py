"""Screenshots of a curation study in the MLflow UI (docs/img/curation-*.png).

1. Copies a finished study directory (``sslmem curate --out``) and starts a real ``mlflow
   server`` (127.0.0.1, telemetry and the job runner off).
2. Reruns the same ``sslmem curate`` command on the copy with ``--experiment curation``: every
   retrain is found done, so nothing trains; the study is logged (parent run, nested retrains).
3. Headless Chromium screenshots: the experiment's runs with the study's nested retrains, and
   the parent run's metric charts (accuracy against k per strategy: the metric step is k).
   MLflow draws one chart per metric key, each with its own y-axis; the report's
   ``accuracy_vs_k.png`` puts the strategies on one axis.

Usage (a manual step, like scripts/mlflow_screenshots.py, whose browser driver it uses)::

    .venv/bin/python scripts/curation_screenshots.py --img docs/img -- \\
        --config bundled-cpu --scores S/score --split S/split.json \\
        --reference S/ref/encoder.safetensors --out S/study --fractions 0.2 ...

Everything after ``--`` is the study's own ``sslmem curate`` command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlflow_screenshots import (
    CLOSE_ASSISTANT,
    ENV,
    EXPAND_RUNS,
    ML,
    UI_SETTINGS,
    Browser,
    _fit_height,
    _mlflow_server,
)

EXPERIMENT = "curation"
#: Viewports: the metrics page shows its first two sections (kNN and linear-probe accuracy
#: against k per strategy); the other charts are in the run page below them.
SIZES = {"curation-runs.png": (1900, 900), "curation-metrics.png": (1900, 1040)}


def _ids(url: str) -> tuple[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, "the study was not logged"
    parents = [
        run
        for run in client.search_runs([experiment.experiment_id])
        if "mlflow.parentRunId" not in run.data.tags
    ]
    return str(experiment.experiment_id), str(parents[0].info.run_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sslmem-cur-ui")
    parser.add_argument("--img", type=Path, default=Path("docs/img"))
    parser.add_argument("curate", nargs=argparse.REMAINDER, help="the study's curate arguments")
    args = parser.parse_args()
    curate = [a for a in args.curate if a != "--"]
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium not found: apt-get install -y --no-install-recommends chromium")
        return 2
    if "--out" not in curate:
        print("pass the study's curate arguments after --, including --out")
        return 2
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "out").mkdir(parents=True)
    position = curate.index("--out") + 1
    study = work / "study"
    shutil.copytree(curate[position], study, ignore=shutil.ignore_patterns("mlflow-run.json"))
    curate[position] = str(study)
    args.img.mkdir(parents=True, exist_ok=True)
    with _mlflow_server(work) as url:
        sslmem = Path(sys.executable).with_name("sslmem")
        env = {**os.environ, **ENV, "SSLMEM_MLFLOW_TRACKING_URI": url}
        subprocess.run(
            [str(sslmem), "curate", *curate, "--experiment", EXPERIMENT], check=True, env=env
        )
        experiment, run = _ids(url)
        pages = {
            "curation-runs.png": f"/#/experiments/{experiment}/runs?{ML}",
            "curation-metrics.png": f"/#/experiments/{experiment}/runs/{run}/model-metrics?{ML}",
        }
        browser = Browser(chromium, width=1900, height=900)
        try:
            browser.open(url + "/")
            for key, value in UI_SETTINGS.items():
                browser.evaluate(
                    f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(value))})"
                )
            for name, page in pages.items():
                browser.resize(*SIZES[name])
                browser.open(url + page, settle_s=10)
                browser.evaluate(CLOSE_ASSISTANT)
                if name == "curation-runs.png":
                    print("expanded", browser.evaluate(EXPAND_RUNS), "parent runs", flush=True)
                    time.sleep(4)
                if name == "curation-runs.png":
                    _fit_height(browser, *SIZES[name])
                browser.screenshot(args.img / name)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
