"""The Grafana dashboard: committed JSON == generator output, and its queries fit /metrics.

Expectations come from outside the generator: the metric names and labels from the service's
real exposition (a :class:`ServiceMetrics` with a scored, judged version), recording-rule and
alert names from ``deploy/prometheus/sslmem-rules.yaml``, JSON formatting from ``json.dumps``.
Whether every expression parses and returns data is checked against a real Prometheus in
tests/integration/test_dashboard_queries.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sslmem.memorization.judgement import JudgementPolicy, judge
from sslmem.service.metrics import ServiceMetrics
from tests.memorization.scored import make_summary, make_version

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "deploy" / "grafana" / "dashboard.py"
COMMITTED = (
    ROOT / "deploy" / "grafana" / "sslmem-dashboard.json",
    ROOT / "helm" / "sslmem" / "files" / "sslmem-dashboard.json",
)
RULES = ROOT / "deploy" / "prometheus" / "sslmem-rules.yaml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# a metric name, optionally followed by its label matchers
SELECTOR = re.compile(r"\b((?:sslmem_|sslmem:)[a-zA-Z0-9_:]*|ALERTS|up)\b\s*(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sslmem_grafana_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row (including panels inside collapsed rows)."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(board) for t in p.get("targets", [])]


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """``(metric, {label: (op, value)})`` for every metric selector of a PromQL expression."""
    out = []
    for match in SELECTOR.finditer(expr):
        name, braces = match.group(1), match.group(2) or ""
        out.append((name, {m[0]: (m[1], m[2]) for m in MATCHER.findall(braces)}))
    return out


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(COMMITTED[0].read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def recorded(rules: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Recording rule -> the labels its result keeps (its outermost ``by (...)``)."""
    out = {}
    for rule in rules:
        if "record" in rule:
            grouping = re.search(r"\bby\s*\(([^)]*)\)", rule["expr"])
            out[rule["record"]] = (
                {label.strip() for label in grouping.group(1).split(",")} if grouping else set()
            )
    return out


@pytest.fixture(scope="module")
def exposition() -> dict[str, set[tuple[str, str]]]:
    """Sample name -> its ``(label, value)`` pairs, from a real scrape of the service metrics."""
    policy = JudgementPolicy(alpha=0.01, min_delta=0.005, accuracy_gain=0.01, threshold=0.1)
    candidate = make_version([0.10, 0.12, 0.08, 0.15, 0.11], version="2")
    champion = make_version([0.07, 0.10, 0.07, 0.11, 0.09], version="1")
    metrics = ServiceMetrics()
    metrics.set_version("enc", "1", summary=make_summary(champion.sslmem), aliases=("champion",))
    metrics.set_version(
        "enc",
        "2",
        summary=make_summary(candidate.sslmem),
        judgement=judge(candidate, champion, policy),
    )
    metrics.observe_scoring(3.0)
    metrics.version_scored("enc")
    metrics.version_failed("enc", "data")
    metrics.webhook_delivery("accepted")
    metrics.set_queue_depth(1)
    metrics.set_policy(
        "enc", policy.model_copy(update={"budget_mean": 0.2, "budget_fraction": 0.5})
    )
    out: dict[str, set[tuple[str, str]]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels.items())
    return out


def test_committed_copies_equal_the_generator_output() -> None:
    text = load_generator().render()
    for path in COMMITTED:
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run python deploy/grafana/dashboard.py"
        )


def test_output_is_deterministic_json_with_sorted_keys() -> None:
    generator = load_generator()
    text = generator.render()
    assert generator.render() == text
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + (
        "\n"
    )


def test_check_flags_a_stale_copy_and_says_how_to_regenerate(tmp_path: Path) -> None:
    fresh, stale = tmp_path / "fresh.json", tmp_path / "stale.json"
    cmd = [sys.executable, str(GENERATOR)]
    subprocess.run([*cmd, "--out", str(fresh)], check=True, capture_output=True, cwd=ROOT)
    stale.write_text(fresh.read_text().replace("Δ", "d"), encoding="utf-8")
    ok = subprocess.run([*cmd, "--check", "--out", str(fresh)], capture_output=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr.decode()
    bad = subprocess.run(
        [*cmd, "--check", "--out", str(fresh), "--out", str(stale)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 1
    assert str(stale) in bad.stderr and "python deploy/grafana/dashboard.py" in bad.stderr
    assert str(fresh) not in bad.stderr
    committed = subprocess.run([*cmd, "--check"], capture_output=True, text=True, cwd=ROOT)
    assert committed.returncode == 0, committed.stderr


def test_identity_tags_and_no_hard_coded_datasource(board: dict[str, Any]) -> None:
    assert board["uid"] == "sslmem-overview"
    assert "sslmem" in board["tags"]
    assert board["title"]

    def refs(node: object) -> Iterator[object]:
        if isinstance(node, dict):
            if "datasource" in node:
                yield node["datasource"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = list(refs(board["panels"]))
    assert found and all(ref == DATASOURCE for ref in found)


def test_templating_has_datasource_and_multi_model(board: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "model"}
    datasource, model = variables["datasource"], variables["model"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    assert model["type"] == "query"
    assert model["datasource"] == DATASOURCE
    assert model["query"] == "label_values(sslmem_version_sslmem_mean, model)"
    assert model["multi"] is True and model["includeAll"] is True
    assert model["allValue"] == ".*"  # "All" also matches models with no version labelled yet


def test_every_panel_queries_prometheus_through_the_variable(board: dict[str, Any]) -> None:
    seen = list(panels(board))
    assert len(seen) >= 15
    for panel in seen:
        assert panel.get("title") and panel.get("description"), panel.get("id")
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panel_ids_unique_and_grid_without_overlap(board: dict[str, Any]) -> None:
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_every_metric_exists_in_the_service_exposition(
    board: dict[str, Any], exposition: dict[str, set[tuple[str, str]]]
) -> None:
    raw = 0
    for title, expr in expressions(board):
        for name, matchers in selectors(expr):
            if name in ("ALERTS", "up") or name.startswith("sslmem:"):
                continue
            raw += 1
            assert name in exposition, f"{title}: {name} is not exported by the service"
            labels = exposition[name]
            known = {label for label, _ in labels} | {"job"}  # job: added by the scrape
            for label, (op, value) in matchers.items():
                assert label in known, f"{title}: {name} has no label {label}"
                if op == "=" and label != "job":
                    assert (label, value) in labels, f"{title}: {name}{{{label}={value!r}}} never"
    assert raw >= 10


def test_recording_rules_used_exist_and_keep_the_filtered_labels(
    board: dict[str, Any],
    recorded: dict[str, set[str]],
    exposition: dict[str, set[tuple[str, str]]],
) -> None:
    used = 0
    for title, expr in expressions(board):
        for name, matchers in selectors(expr):
            if name.startswith("sslmem:"):
                used += 1
                assert name in recorded, f"{title}: recording rule {name} is not in {RULES.name}"
                missing = set(matchers) - recorded[name]
                assert not missing, f"{title}: {name} aggregates away {missing}"
    assert used >= 5
    # the policy lines select settings the gauge really exports
    settings = {v for k, v in exposition["sslmem_model_policy"] if k == "setting"}
    for title, expr in expressions(board):
        for name, matchers in selectors(expr):
            if name == "sslmem:model_policy":
                assert matchers["setting"][1] in settings, title


def test_model_labelled_metrics_are_filtered_on_the_model_variable(
    board: dict[str, Any],
    exposition: dict[str, set[tuple[str, str]]],
    recorded: dict[str, set[str]],
) -> None:
    # which series carry a model label: from the exposition and the rules, not the generator
    by_model = {name for name, labels in exposition.items() if any(k == "model" for k, _ in labels)}
    by_model |= {name for name, kept in recorded.items() if "model" in kept}
    assert {"sslmem_version_sslmem_mean", "sslmem_versions_scored_total"} <= by_model
    checked = 0
    for title, expr in expressions(board):
        for name, matchers in selectors(expr):
            if name in by_model:
                assert matchers.get("model") == ("=~", "$model"), f"{title}: {expr}"
                checked += 1
    assert checked >= 10


def test_the_issue_panels_are_there(board: dict[str, Any]) -> None:
    """What issue 10 asks of the dashboard, each by the metric it must query."""
    exprs = [expr for _, expr in expressions(board)]

    def panel_with(*needles: str) -> dict[str, Any]:
        hits = [
            p
            for p in panels(board)
            if all(any(n in t["expr"] for t in p["targets"]) for n in needles)
        ]
        assert hits, f"no panel queries {needles}"
        return hits[0]

    delta = panel_with("sslmem:version_champion_delta_sslmem_mean", 'setting="min_delta"')
    assert delta["type"] == "timeseries"  # Δ vs champion with the regression threshold drawn
    panel_with("sslmem:version_candidate_sslmem_mean")
    panel_with("sslmem:version_candidate_sslmem_mean", "sslmem_version_knn_accuracy")
    panel_with("sslmem_version_linear_probe_accuracy")
    panel_with("sslmem:version_fraction_above_threshold")
    panel_with("sslmem:version_verdict")
    panel_with("sslmem_version_judgement")
    panel_with("rate(sslmem_versions_scored_total")
    panel_with("histogram_quantile(", "sslmem_scoring_duration_seconds_bucket")
    panel_with("sslmem:queue_depth")
    panel_with("sslmem:versions_failed:increase15m")
    panel_with("sslmem_scoring_retries_total")
    panel_with("sslmem_webhook_deliveries_total", "outcome")
    panel_with("sslmem:last_success_timestamp_seconds")
    panel_with('ALERTS{alertname=~"SSLMem.*"')
    assert any('up{job="sslmem"}' in e for e in exprs)


def test_alerts_panel_matches_the_shipped_alerts(
    board: dict[str, Any], rules: list[dict[str, Any]]
) -> None:
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert "SSLMemRegressionAgainstChampion" in alerts
    for title, expr in expressions(board):
        for name, matchers in selectors(expr):
            if name == "ALERTS":
                op, pattern = matchers["alertname"]
                assert op == "=~"
                shown = {a for a in alerts if re.fullmatch(pattern, a)}
                assert shown == alerts, f"{title} misses {alerts - shown}"


def test_monitoring_doc_explains_every_shipped_alert(rules: list[dict[str, Any]]) -> None:
    doc = (ROOT / "docs" / "monitoring.md").read_text(encoding="utf-8")
    for alert in (r["alert"] for r in rules if "alert" in r):
        assert f"| `{alert}` |" in doc, f"docs/monitoring.md does not explain {alert}"
        assert f"(runbooks.md#{alert.lower()})" in doc, f"no runbook link for {alert}"
