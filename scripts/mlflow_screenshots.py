"""Screenshots of the MLflow UI comparing two sslmem model versions (docs/img/mlflow-*.png).

Reproduces the pictures in docs/mlflow.md from nothing but this checkout:

1. ``sslmem demo`` on the bundled recipe (``src/sslmem/recipes/bundled-cpu.yaml``) into one
   output directory: version 1 becomes the champion, then a second candidate (seed 1) is
   trained, scored and judged against it -- real workflow code end to end, the same runs a
   newcomer gets from ``make demo``.
2. A real ``mlflow server`` on that store (127.0.0.1, telemetry and the job runner off).
3. Headless Chromium (Debian's ``chromium``) screenshots of: the experiment's runs (parent runs
   with nested steps), its logged-model table, the registered model with its two versions, a
   version page (its description first), the two versions compared (table) and the compare
   view's scatter plot of memorisation against accuracy.

Usage (a manual step, not part of the test suite)::

    apt-get install -y --no-install-recommends chromium
    .venv/bin/python scripts/mlflow_screenshots.py [--work DIR] [--img docs/img] [--reuse]

``--reuse`` keeps the runs of an earlier call in ``--work`` (only the screenshots are taken
again). The demo's two runs took 1096 s + 559 s on a 2-core VM under a load average of ~5
(docs/mlflow.md#how-long-the-demo-takes); the pictures about a minute more.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
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
MODEL = "sslmem-encoder"
EXPERIMENT = "sslmem"
#: Viewport per picture (the model table is wide: every metric is a column).
SIZES = {
    "mlflow-models.png": (2800, 560),
    "mlflow-registry.png": (1900, 600),
    "mlflow-version.png": (1500, 1250),
    "mlflow-compare.png": (1900, 1150),
    "mlflow-scatter.png": (1500, 1100),
}
#: Query parameter that opens a page in the UI's model-training (not GenAI) view.
ML = "workflowType=machine_learning"
ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sslmem_runs(work: Path) -> None:
    sslmem = Path(sys.executable).with_name("sslmem")
    args = [str(sslmem), "demo", "--out", str(work / "out")]
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


def _ids(url: str, model: str, experiment_name: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(url, url)
    experiment = client.get_experiment_by_name(experiment_name)
    versions = sorted(
        client.search_model_versions(f"name = '{model}'"), key=lambda v: int(v.version)
    )
    if len(versions) < 2:
        raise SystemExit(f"model {model!r} has {len(versions)} version(s); the pictures need 2")
    return {
        "experiment": str(experiment.experiment_id),
        "v1": str(versions[-2].version),
        "v1_run": str(versions[-2].run_id),
        "v2_run": str(versions[-1].run_id),
        "v2": str(versions[-1].version),
    }


#: MLflow UI settings (browser localStorage, key ``<name>_v<version>``): open experiments in
#: the model-training view and keep the assistant panel closed.
UI_SETTINGS = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.panelOpen_v1": False,
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
}
#: Expands every parent run of the runs table (the "+" in front of a run name).
EXPAND_RUNS = """
(() => {
  const buttons = [...document.querySelectorAll(
    'button[data-component-id*="runnamecellrenderer"]')];
  buttons.forEach(b => b.click());
  return buttons.length;
})()
"""
#: Scrolls the logged-model table right until "Registered models" follows the pinned model
#: names, so the version links and the metric columns are in view.
SCROLL_TO_METRICS = """
(() => {
  const header = [...document.querySelectorAll('.ag-header-cell')].find(
    h => h.textContent.trim() === 'Registered models');
  const bar = document.querySelector('.ag-body-horizontal-scroll-viewport');
  if (!header || !bar) return -1;
  bar.scrollLeft = header.offsetLeft;
  bar.dispatchEvent(new Event('scroll'));
  return header.offsetLeft;
})()
"""
#: Where an element is on screen (its centre, CSS pixels), after scrolling it into view: the
#: argument is a JS expression for the element. ``null`` while it is not rendered.
WHERE = """
(() => {
  const e = %s;
  if (!e) return null;
  e.scrollIntoView({block: 'center'});
  const r = e.getBoundingClientRect();
  return {x: r.left + r.width / 2, y: r.top + r.height / 2};
})()
"""
#: The compare view's *Scatter Plot* tab: a Radix tab, selected on a real mouse press (not by
#: ``element.click()``, which fires no ``mousedown``).
SCATTER_TAB = """[...document.querySelectorAll('[role=tab]')].find(
    e => e.textContent.trim() === 'Scatter Plot')"""
#: The scatter plot's axis selects (``x-axis-selector``, ``y-axis-selector``) and one option of
#: the list an open select shows.
AXIS_SELECT = "document.getElementById('%s-axis-selector')"
AXIS_OPTION = """[...document.querySelectorAll('[role=option]')].find(
    e => e.textContent.trim() === %s)"""
#: What the scatter plot's axes show (Plotly's axis titles), e.g. ``["knn_accuracy", ...]``.
AXIS_TITLES = """[...document.querySelectorAll('.xtitle, .ytitle')].map(e => e.textContent)"""
#: The scatter: memorisation of S_C (y) against kNN accuracy (x), one point per version.
SCATTER_AXES = {"x": "knn_accuracy", "y": "sslmem_mean/candidate"}
#: How many CSS pixels the page's content runs below the viewport: the UI scrolls inside its
#: own containers, so this is the most any scrollable element hides (0: everything in view).
HIDDEN_BELOW = """
(() => Math.max(0, ...[...document.querySelectorAll('*')].filter(e => {
  const style = getComputedStyle(e);
  return /(auto|scroll)/.test(style.overflowY) || e === document.scrollingElement;
}).map(e => e.scrollHeight - e.clientHeight)))()
"""
#: Pictures whose viewport grows until the whole page is in view (the registered model's
#: versions table, below its description and tags).
FIT_HEIGHT = {"mlflow-registry.png"}
#: Closes the assistant panel, which MLflow opens on a first visit from localhost.
CLOSE_ASSISTANT = """
(() => {
  const close = document.querySelector(
    'button[data-component-id="mlflow.assistant.chat_panel.close"]');
  if (close) close.click();
  return Boolean(close);
})()
"""


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (no extra packages).

    ``--remote-debugging-pipe`` makes Chromium read commands from fd 3 and write replies to
    fd 4, one JSON message per NUL-terminated record.
    """

    def __init__(self, chromium: str, width: int = 1500, height: int = 1000) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_fds() -> None:
            # Copies above 4 first, so that neither end overwrites the other on the way.
            read_end = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3, inheritable=True)
            os.dup2(write_end, 4, inheritable=True)

        args = [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self._proc = subprocess.Popen(
            args,
            close_fds=False,  # close_fds would run after preexec_fn and close fds 3 and 4
            preexec_fn=wire_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
            session=True,
        )
        self.call("Page.enable", session=True)

    def call(self, method: str, session: bool = False, **params: object) -> dict[str, object]:
        self._next_id += 1
        message: dict[str, object] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def resize(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
            session=True,
        )

    def open(self, url: str, settle_s: float = 8.0) -> None:
        self.call("Page.navigate", url=url, session=True)
        time.sleep(settle_s)

    def evaluate(self, expression: str) -> object:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, session=True
        )
        return dict(result.get("result", {})).get("value")  # type: ignore[call-overload]

    def where(self, element: str, timeout_s: float = 30.0) -> tuple[float, float]:
        """The centre of the element ``element`` (a JS expression) once rendered, in view."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.evaluate(WHERE % element)
            if isinstance(found, dict):
                return float(found["x"]), float(found["y"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"not rendered after {timeout_s:.0f} s: {element}")
            time.sleep(0.5)

    def click(self, element: str, timeout_s: float = 30.0) -> None:
        """A real left click (mouse moved, pressed, released) on ``element`` once rendered.

        Widgets that react to ``mousedown`` or pointer events (Radix tabs and selects) ignore
        ``element.click()``; these are the events a user's mouse sends.
        """
        x, y = self.where(element, timeout_s)
        time.sleep(0.5)  # the scroll into view settles
        x, y = self.where(element, timeout_s)
        self.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                session=True,
                type=kind,
                x=x,
                y=y,
                button="left",
                buttons=1 if kind == "mousePressed" else 0,
                clickCount=1,
            )

    def screenshot(self, out: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", session=True)["data"]
        out.write_bytes(base64.b64decode(str(data)))
        print("wrote", out, flush=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close")
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        os.close(self._to_child)
        os.close(self._from_child)
        self._profile.cleanup()


def _scatter(browser: Browser) -> None:
    """Open the compare view's scatter plot: memorisation (y) against kNN accuracy (x)."""
    browser.click(SCATTER_TAB)
    for axis, key in SCATTER_AXES.items():
        browser.click(AXIS_SELECT % axis)
        browser.click(AXIS_OPTION % json.dumps(key), timeout_s=10)
        time.sleep(1)
    browser.evaluate("(" + SCATTER_TAB + ").scrollIntoView({block: 'start'})")
    # The pointer rests off the page's content (no row or point highlighted by hovering).
    browser.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=1, y=1)
    time.sleep(3)
    titles = browser.evaluate(AXIS_TITLES)
    print("scatter axes", titles, flush=True)
    if titles != [SCATTER_AXES["x"], SCATTER_AXES["y"]]:
        raise RuntimeError(f"the scatter plot shows {titles}, not {SCATTER_AXES}")


def _fit_height(browser: Browser, width: int, height: int, most: int = 4000) -> None:
    """Grow the viewport until no scrollable element hides content below it."""
    for _ in range(5):
        hidden = browser.evaluate(HIDDEN_BELOW)
        if not isinstance(hidden, (int, float)) or hidden <= 0 or height >= most:
            break
        height = min(most, height + int(hidden) + 8)
        browser.resize(width, height)
        time.sleep(2)
    print("viewport height", height, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sslmem-ui")
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--reuse", action="store_true", help="keep the runs of an earlier call")
    parser.add_argument("--model", default=MODEL, help=f"registered model (default {MODEL})")
    parser.add_argument(
        "--experiment", default=EXPERIMENT, help=f"MLflow experiment (default {EXPERIMENT})"
    )
    parser.add_argument("--only", nargs="*", default=[], help="take only these pictures")
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
        ids = _ids(url, args.model, args.experiment)
        eid = ids["experiment"]
        runs = json.dumps(
            {ids["v1"]: ids["v1_run"], ids["v2"]: ids["v2_run"]}, separators=(",", ":")
        )
        compare = "/compare-model-versions?name=" + urllib.parse.quote(json.dumps(args.model))
        compare += "&runs=" + urllib.parse.quote(runs)
        pages = {
            "mlflow-runs.png": f"/#/experiments/{eid}/runs?{ML}",
            "mlflow-models.png": f"/#/experiments/{eid}/models?{ML}",
            "mlflow-registry.png": f"/#/models/{args.model}?{ML}",
            "mlflow-version.png": f"/#/models/{args.model}/versions/{ids['v2']}?{ML}",
            "mlflow-compare.png": f"/#{compare}&{ML}",
            "mlflow-scatter.png": f"/#{compare}&{ML}",
        }
        browser = Browser(chromium, width=1900, height=800)
        try:
            browser.open(url + "/")
            for key, value in UI_SETTINGS.items():
                browser.evaluate(
                    f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(value))})"
                )
            for name, page in pages.items():
                if args.only and name not in args.only:
                    continue
                browser.resize(*SIZES.get(name, (1900, 800)))
                browser.open(url + page, settle_s=10)
                browser.evaluate(CLOSE_ASSISTANT)
                if name == "mlflow-runs.png":
                    print("expanded", browser.evaluate(EXPAND_RUNS), "parent runs", flush=True)
                    time.sleep(4)
                if name == "mlflow-models.png":
                    print("scrolled", browser.evaluate(SCROLL_TO_METRICS), "px", flush=True)
                    time.sleep(3)
                if name == "mlflow-scatter.png":
                    _scatter(browser)
                if name in FIT_HEIGHT:
                    _fit_height(browser, *SIZES.get(name, (1900, 800)))
                browser.screenshot(args.img / name)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
