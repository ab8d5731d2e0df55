"""Every dashboard query on the real Prometheus of the alert chain: it parses and finds the data.

No Grafana server runs here, so the panels' PromQL (from the committed dashboard JSON, with
Grafana's variables substituted as Grafana would for the chain's model) goes to the HTTP API of
the Prometheus that scraped ``sslmem serve`` with the shipped rules (fixture ``alert_chain``,
tests/integration/conftest.py). The expected series come from what the chain did: a champion, a
version that memorises more (a regression), a neutral one, webhook deliveries.

The regression panel is also drawn (deploy/grafana/render_panel.py) from that Prometheus' range
data: to tmp_path normally, to docs/img/monitoring-regression-panel.png with
``SSLMEM_UPDATE_DOCS_IMG=1`` (so CI never rewrites the docs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sslmem.tracking import tags as T
from sslmem.tracking.connection import client

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "sslmem-dashboard.json"
DOCS_PNG = ROOT / "docs" / "img" / "monitoring-regression-panel.png"
#: The chain lasts minutes; the window covers all of it (and $__range of instant panels).
WINDOW_S = 30 * 60
RATE_INTERVAL = "1m"
#: How long the regressing version's Δ line must be in the picture (seconds of data).
PNG_SPAN_S = 40


def load_render_panel() -> ModuleType:
    path = ROOT / "deploy" / "grafana" / "render_panel.py"
    spec = importlib.util.spec_from_file_location("sslmem_render_panel", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RENDER = load_render_panel()


def targets() -> list[tuple[str, str, dict[str, Any]]]:
    """``(panel title, refId, target)`` of every query of the committed dashboard."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                out.append((inner["title"], target["refId"], target))
    return out


TARGETS = targets()


def api(prometheus: str, endpoint: str, **params: object) -> dict[str, Any]:
    """GET a Prometheus API endpoint; the JSON body also for 4xx (a query that does not parse)."""
    url = f"{prometheus}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    return body


class Panels:
    """The chain's Prometheus, queried the way the dashboard queries it."""

    def __init__(self, prometheus: str, model: str) -> None:
        self.prometheus, self.model = prometheus, model
        self.end = time.time()
        self.start = self.end - WINDOW_S

    def expr(self, title: str, ref: str) -> str:
        for panel_title, ref_id, target in TARGETS:
            if (panel_title, ref_id) == (title, ref):
                return str(
                    RENDER.substitute(
                        target["expr"],
                        model=self.model,
                        rate_interval=RATE_INTERVAL,
                        range_=f"{WINDOW_S}s",
                    )
                )
        raise KeyError(f"no target {ref} in panel {title!r}")

    def instant(self, title: str, ref: str = "A") -> list[dict[str, Any]]:
        body = api(self.prometheus, "query", query=self.expr(title, ref), time=self.end)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def range(self, title: str, ref: str = "A") -> list[dict[str, Any]]:
        body = api(
            self.prometheus,
            "query_range",
            query=self.expr(title, ref),
            start=self.start,
            end=self.end,
            step=5,
        )
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def peak(series: dict[str, Any]) -> float:
    """Largest non-NaN value of a range series."""
    values = [float(v) for _, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
    return max(values) if values else float("nan")


def by(result: list[dict[str, Any]], **labels: str) -> list[dict[str, Any]]:
    return [s for s in result if all(s["metric"].get(k) == v for k, v in labels.items())]


@pytest.fixture(scope="module")
def panels(alert_chain: Any) -> Panels:
    return Panels(alert_chain.prometheus_url.rstrip("/"), alert_chain.model)


@pytest.mark.parametrize(
    ("title", "ref"), [(t, r) for t, r, _ in TARGETS], ids=[f"{t}:{r}" for t, r, _ in TARGETS]
)
def test_every_query_parses_on_the_real_prometheus(panels: Panels, title: str, ref: str) -> None:
    expr = panels.expr(title, ref)
    assert "$" not in expr, f"a Grafana variable left in {expr}"
    for endpoint, params in (
        ("query", {"time": panels.end}),
        ("query_range", {"start": panels.start, "end": panels.end, "step": 5}),
    ):
        body = api(panels.prometheus, endpoint, query=expr, **params)
        assert body["status"] == "success", f"{title} [{ref}] {endpoint}: {body.get('error')}"


def test_regression_panel_shows_the_regressing_version_above_min_delta(
    panels: Panels, alert_chain: Any
) -> None:
    title = RENDER.REGRESSION_PANEL
    deltas = panels.range(title, "A")
    regressing = by(deltas, model=alert_chain.model, version=alert_chain.regressing_version)
    assert regressing, f"no Δ series for version {alert_chain.regressing_version}: {deltas}"
    thresholds = panels.range(title, "B")
    assert [s["metric"].get("model") for s in thresholds] == [alert_chain.model]
    min_delta = peak(thresholds[0])
    assert min_delta > 0
    # a regression against the champion rose by at least min_delta (judgement policy)
    assert peak(regressing[0]) >= min_delta
    neutral = by(deltas, version=alert_chain.neutral_version)
    assert all(peak(s) < peak(regressing[0]) for s in neutral)


def test_memorisation_panel_has_the_champion_alias_series(panels: Panels, alert_chain: Any) -> None:
    result = panels.range("Mean SSLMem of S_C per model and alias", "A")
    champion = by(result, alias="champion", version=alert_chain.champion_version)
    assert champion, [s["metric"] for s in result]
    assert abs(peak(champion[0])) < 1  # raw SSLMem: a small distance difference, any sign
    assert by(result, version=alert_chain.regressing_version)


def panel(title: str) -> dict[str, Any]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = [p for p in board["panels"] if p.get("title") == title]
    assert len(found) == 1, title
    return dict(found[0])


def join_keys(panels: Panels, title: str, version: str) -> dict[str, frozenset[tuple[str, str]]]:
    """What Grafana's merge joins on, per query that has the version: labels minus exclusions."""
    transformations = panel(title)["transformations"]
    assert [t["id"] for t in transformations[:2]] == ["organize", "merge"]
    dropped = set(transformations[0]["options"]["excludeByName"])
    out = {}
    for ref in [t["refId"] for t in panel(title)["targets"]]:
        rows = by(panels.instant(title, ref), version=version)
        assert len(rows) <= 1, f"{title} [{ref}]: {rows}"
        if rows:
            out[ref] = frozenset((k, v) for k, v in rows[0]["metric"].items() if k not in dropped)
    return out


def test_version_table_joins_into_one_row_per_version(panels: Panels, alert_chain: Any) -> None:
    title = "Memorisation vs downstream accuracy per version"
    for version in (alert_chain.regressing_version, alert_chain.neutral_version):
        keys = join_keys(panels, title, version)
        # mean SSLMem, its Δ, kNN and probe accuracy and the fraction above threshold of a
        # judged version (registered with its accuracies: tests/integration/encoders.py)
        assert set(keys) == {"A", "B", "C", "D", "E"}, keys
        assert len(set(keys.values())) == 1, keys  # same labels: Grafana merges them into one row
        # an unaliased version: Prometheus stores no empty alias label
        assert dict(keys["A"]) == {"model": alert_chain.model, "version": version}


def values(result: list[dict[str, Any]]) -> dict[str, float]:
    """``{version: value}`` of an instant result with one series per version."""
    versions = [s["metric"]["version"] for s in result]
    assert len(versions) == len(set(versions)), result
    return {s["metric"]["version"]: float(s["value"][1]) for s in result}


def test_accuracy_columns_show_the_registered_accuracies(panels: Panels, alert_chain: Any) -> None:
    title = "Memorisation vs downstream accuracy per version"
    registered = alert_chain.accuracies  # {version: (kNN, probe)} as registered in MLflow
    assert len(registered) == 3, registered
    for ref, which in (("C", 0), ("D", 1)):
        shown = values(by(panels.instant(title, ref), model=alert_chain.model))
        assert shown.keys() == registered.keys(), (ref, shown)
        for version, accuracies in registered.items():
            assert shown[version] == pytest.approx(accuracies[which], abs=1e-9), (ref, version)


def test_xy_chart_pairs_each_versions_knn_accuracy_with_its_memorisation(
    panels: Panels, alert_chain: Any
) -> None:
    title = "Mean SSLMem vs kNN accuracy per version"
    knn = values(by(panels.instant(title, "A"), model=alert_chain.model))
    memorisation = values(by(panels.instant(title, "B"), model=alert_chain.model))
    versions = set(alert_chain.accuracies)
    assert versions <= knn.keys() and versions <= memorisation.keys(), (knn, memorisation)
    for version in versions:
        assert knn[version] == pytest.approx(alert_chain.accuracies[version][0], abs=1e-9)
        keys = join_keys(panels, title, version)  # one point per version after the merge
        assert set(keys) == {"A", "B"} and len(set(keys.values())) == 1, keys
    # the regressing version sits to the upper right: more memorisation, a little more kNN
    regressing, champion = alert_chain.regressing_version, alert_chain.champion_version
    assert memorisation[regressing] > memorisation[champion]


def test_accuracy_delta_panel_shows_the_regressing_versions_gain_below_gamma(
    panels: Panels, alert_chain: Any
) -> None:
    title = "Δ downstream accuracy vs champion"
    deltas = by(panels.range(title, "A"), model=alert_chain.model)
    champion = alert_chain.accuracies[alert_chain.champion_version]
    for version in (alert_chain.regressing_version, alert_chain.neutral_version):
        accuracies = alert_chain.accuracies[version]
        for quantity, which in (("knn_accuracy", 0), ("linear_probe_accuracy", 1)):
            series = by(deltas, version=version, quantity=quantity)
            assert len(series) == 1, (version, quantity, [s["metric"] for s in deltas])
            shown = [float(v) for _, v in series[0]["values"]]
            # the Δ of the registered accuracies (candidate − champion), constant over time
            expected = accuracies[which] - champion[which]
            assert all(abs(v - expected) <= 1e-9 for v in shown), (version, quantity, expected)
    gamma_series = by(panels.range(title, "B"), model=alert_chain.model)
    assert len(gamma_series) == 1, gamma_series
    gamma = float(
        client().get_registered_model(alert_chain.model).tags[f"{T.POLICY_PREFIX}accuracy_gain"]
    )
    assert peak(gamma_series[0]) == pytest.approx(gamma)  # the model's own γ line
    regressing = by(deltas, version=alert_chain.regressing_version)
    assert max(peak(s) for s in regressing) < gamma  # below the line: no excuse


def test_judgement_and_verdict_tables(panels: Panels, alert_chain: Any) -> None:
    judged = panels.instant("Judgements against the champion")
    outcome = {s["metric"]["version"]: s["metric"]["outcome"] for s in judged}
    assert outcome[alert_chain.regressing_version] == "regression"
    assert outcome[alert_chain.neutral_version] != "regression"
    verdicts = panels.instant("Protocol verdicts")
    assert {alert_chain.regressing_version, alert_chain.neutral_version} <= {
        s["metric"]["version"] for s in verdicts
    }


def test_firing_alerts_panel_shows_the_regression(panels: Panels, alert_chain: Any) -> None:
    result = panels.range("Firing SSLMem alerts")
    regression = by(
        result,
        alertname="SSLMemRegressionAgainstChampion",
        version=alert_chain.regressing_version,
    )
    assert regression, [s["metric"] for s in result]


def test_service_panels_see_the_scoring_and_the_webhooks(panels: Panels) -> None:
    accepted = by(panels.range("Webhook deliveries by outcome"), outcome="accepted")
    assert accepted and peak(accepted[0]) > 0
    assert by(panels.instant("Webhook deliveries in range by outcome"), outcome="accepted")
    throughput = panels.range("Scoring throughput (versions/h)")
    assert throughput and peak(throughput[0]) > 0
    quantiles = panels.range("Scoring duration quantiles", "A")
    assert quantiles and peak(quantiles[0]) > 0
    since = panels.range("Time since last successful scoring")
    assert since and 0 <= peak(since[0]) < WINDOW_S
    assert peak(panels.range("Replicas up")[0]) >= 1
    assert {s["metric"]["reason"] for s in panels.instant("Retries by reason")} == {
        "tracking",
        "object_store",
    }


def test_render_the_regression_panel_png(panels: Panels, alert_chain: Any, tmp_path: Path) -> None:
    # The fixture returns as soon as the alert arrives: let the regressing version's Δ line
    # grow for a while so the picture shows it, not a single point at the right edge.
    delta = panels.expr(RENDER.REGRESSION_PANEL, "A")

    def regressing_span() -> float:
        series = RENDER.query_range(panels.prometheus, delta, panels.start, time.time(), 1)
        times = [
            t
            for labels, points in series
            for t, _ in points
            if labels.get("version") == alert_chain.regressing_version
        ]
        return max(times) - min(times) if times else 0.0

    deadline = time.monotonic() + 120
    while regressing_span() < PNG_SPAN_S and time.monotonic() < deadline:
        time.sleep(1)
    out = DOCS_PNG if os.environ.get("SSLMEM_UPDATE_DOCS_IMG") == "1" else tmp_path / "panel.png"
    deltas, thresholds = RENDER.render_from_prometheus(
        panels.prometheus, alert_chain.model, out, start=panels.start, end=time.time(), step=1
    )
    regressing = [
        p for labels, p in deltas if labels.get("version") == alert_chain.regressing_version
    ]
    assert regressing and regressing[0][-1][0] - regressing[0][0][0] >= PNG_SPAN_S
    assert [labels.get("model") for labels, _ in thresholds] == [alert_chain.model]
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert (width, height) == (1100, 462)  # figsize (10, 4.2) at 110 dpi
