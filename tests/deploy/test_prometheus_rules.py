"""The shipped Prometheus rules (deploy/prometheus/sslmem-rules.yaml): promtool, contract, runbooks.

``promtool check rules`` and ``promtool test rules`` run on the one rules file; the structural
tests hold every alert to the shared contract (names, labels, annotations, runbook anchors,
the job label, the service's real metric names), and a mutation test shows the promtool unit
tests catch a threshold or ``for:`` window moved by one step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sslmem.memorization.judgement import JudgementPolicy, judge
from sslmem.service.metrics import FailureReason, ServiceMetrics
from tests.memorization.scored import make_summary, make_version
from tests.servers import HOST, free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "sslmem-rules.yaml"
TESTS = ROOT / "deploy" / "prometheus" / "tests"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/sslmem/sslmem/blob/main/docs/runbooks.md"
#: The alert names fixed by the shared contract (more may exist; none may be renamed).
CONTRACT_ALERTS = {
    "SSLMemRegressionAgainstChampion",
    "SSLMemBudgetExceeded",
    "SSLMemMeasurementUntrusted",
    "SSLMemScoringFailures",
    "SSLMemBacklogGrowing",
    "SSLMemScoringStalled",
    "SSLMemServiceDown",
    "SSLMemTargetMissing",
    "SSLMemForgedWebhookDeliveries",
}
SEVERITIES = ("critical", "warning", "info")
#: A severity chosen by a template, e.g. by whether the version holds an alias.
TEMPLATED_SEVERITY = re.compile(
    r"\{\{ if [^}]+ \}\}(critical|warning|info)\{\{ else \}\}(critical|warning|info)\{\{ end \}\}"
)
#: Per-version alerts keep these labels from the metric (an empty alias is dropped by Prometheus).
VERSION_LABELS = {"model", "version"}
PER_VERSION_ALERTS = {
    "SSLMemRegressionAgainstChampion",
    "SSLMemBudgetExceeded",
    "SSLMemMeasurementUntrusted",
}


def promtool() -> str:
    """The promtool binary; in CI (``make test`` installs it) its absence fails the test."""
    found = shutil.which("promtool")
    if found is None:
        hint = "promtool not installed: apt-get install -y --no-install-recommends prometheus"
        if os.environ.get("CI"):
            pytest.fail(hint)
        pytest.skip(hint)
    return found


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def alerts() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for rule in load_rules():
        if "alert" in rule:
            out.setdefault(rule["alert"], []).append(rule)
    return out


def unit_test_files() -> list[Path]:
    return sorted(TESTS.glob("*.yaml"))


def unit_tests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in unit_test_files():
        for case in yaml.safe_load(path.read_text())["tests"]:
            yield path, case


def minutes(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([mh])", duration)
    assert match, f"unexpected duration {duration!r}"
    return int(match[1]) * (60 if match[2] == "h" else 1)


# -- promtool ------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    done = run(promtool(), "check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = run(promtool(), "test", "rules", *unit_test_files())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(unit_test_files()), done.stdout


# -- the contract ----------------------------------------------------------------------------------


def test_contract_alert_names_exist() -> None:
    assert set(alerts()) >= CONTRACT_ALERTS
    assert all(name.startswith("SSLMem") for name in alerts())


def test_every_alert_has_severity_annotations_runbook_and_for() -> None:
    for name, rules in alerts().items():
        for rule in rules:
            severity = rule["labels"]["severity"]
            assert severity in SEVERITIES or TEMPLATED_SEVERITY.fullmatch(severity), name
            notes = rule["annotations"]
            assert set(notes) >= {"summary", "description", "runbook_url"}, name
            assert notes["summary"].strip() and notes["description"].strip(), name
            assert notes["runbook_url"] == f"{RUNBOOK_BASE}#{name.lower()}"
            assert minutes(rule["for"]) > 0, f"{name}: a for: window guards against blips"


def test_per_version_alert_descriptions_name_model_and_version() -> None:
    for name in PER_VERSION_ALERTS:
        for rule in alerts()[name]:
            text = rule["annotations"]["summary"] + rule["annotations"]["description"]
            assert "$labels.model" in text and "$labels.version" in text, name


def test_runbook_has_one_section_per_alert() -> None:
    sections = re.findall(r"^## (\S+)\s*$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    named = [s for s in sections if s.startswith("SSLMem")]
    assert sorted(named) == sorted(alerts()), "one '## <AlertName>' section per alert"


def metric_names(expr: str) -> set[str]:
    """Raw (not recorded) metric names in a PromQL expression, outside string literals."""
    code = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\b(?:sslmem_[a-z_]+|up)\b(?!:)", code))


def test_every_raw_selector_is_scoped_to_the_sslmem_job() -> None:
    for rule in load_rules():
        expr = rule["expr"]
        for metric in metric_names(expr):
            selectors = re.findall(rf"\b{metric}\{{([^}}]*)\}}", expr)
            uses = len(re.findall(rf"\b{metric}\b(?![:(])", expr))
            assert len(selectors) == uses, f"{metric} without a label selector in {expr!r}"
            assert all('job="sslmem"' in s for s in selectors), f"{metric} in {expr!r}"


def exposed_names() -> set[str]:
    """Every sample name a fully populated service exposes (``_total``, ``_created``, ...)."""
    metrics = ServiceMetrics()
    candidate = make_version([0.10, 0.12, 0.08, 0.15, 0.11], version="2")
    champion = make_version([0.07, 0.10, 0.07, 0.11, 0.09], version="1")
    policy = JudgementPolicy(budget_mean=0.02, budget_fraction=0.5)
    metrics.set_version(
        "enc",
        "2",
        summary=make_summary(candidate.sslmem),
        judgement=judge(candidate, champion, policy),
    )
    metrics.set_policy("enc", policy)
    metrics.version_scored("enc")
    metrics.version_failed("enc", FailureReason.DATA)
    metrics.observe_scoring(1.0)
    metrics.set_dependency("mlflow", False)
    return {
        sample.name
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def test_rules_use_only_metrics_the_service_exposes() -> None:
    exposed = exposed_names()
    used = {m for r in load_rules() for m in metric_names(r["expr"])} - {"up"}
    assert used, "the rules read sslmem metrics"
    assert used <= exposed, f"not exposed by the service: {sorted(used - exposed)}"


def test_recording_rules_are_named_sslmem_and_each_is_tested() -> None:
    records = [rule["record"] for rule in load_rules() if "record" in rule]
    assert records and all(name.startswith("sslmem:") for name in records)
    tested = {
        expr_test["expr"].strip()
        for _, case in unit_tests()
        for expr_test in case.get("promql_expr_test", [])
    }
    assert set(records) <= tested, f"no promql_expr_test: {sorted(set(records) - tested)}"


def test_every_alert_has_firing_and_silent_unit_test_cases() -> None:
    """Per alert: a firing case with exact labels and all annotations, and a silent case."""
    firing: dict[str, int] = {}
    silent: dict[str, int] = {}
    for path, case in unit_tests():
        for check in case.get("alert_rule_test", []):
            name = check["alertname"]
            expected = check.get("exp_alerts") or []
            if not expected:
                silent[name] = silent.get(name, 0) + 1
            for alert in expected:
                assert "severity" in alert["exp_labels"], f"{path.name}: {name}"
                keys = set(alert["exp_annotations"])
                assert keys == {"summary", "description", "runbook_url"}, f"{path.name}: {name}"
                firing[name] = firing.get(name, 0) + 1
    missing_firing = set(alerts()) - set(firing)
    missing_silent = set(alerts()) - set(silent)
    assert not missing_firing, f"no firing test case: {sorted(missing_firing)}"
    assert not missing_silent, (
        f"no silent (under threshold / in for window) case: {sorted(missing_silent)}"
    )


# -- the unit tests can fail ---------------------------------------------------------------------

#: (alert, text in its expr, replacement): each moves a threshold one step up or down (or makes a
#: strict comparison inclusive); the promtool tests must notice every one.
THRESHOLD_MUTATIONS = [
    ("SSLMemRegressionAgainstChampion", "== 1", "== 0"),
    ("SSLMemRegressionAgainstChampion", '{alias!="champion"}', ""),
    ("SSLMemBudgetExceeded", "> on (model)", ">= on (model)"),
    ("SSLMemModelPolicyInvalid", "unless on (model)", "and on (model)"),
    ("SSLMemModelPolicyInvalid", 'verdict="passed"', 'verdict="failed"'),
    ("SSLMemMeasurementUntrusted", "== 1", "== 0"),
    ("SSLMemMeasurementUntrusted", "failed|inconclusive", "failed"),
    ("SSLMemScoringFailures", "> 0", "> 1"),
    ("SSLMemScoringFailures", "> 0", "> -1"),
    ("SSLMemBacklogGrowing", ">= 10", ">= 11"),
    ("SSLMemBacklogGrowing", ">= 10", ">= 9"),
    ("SSLMemBacklogGrowing", "> 0", ">= 0"),
    ("SSLMemScoringStalled", "> 3600", "> 3660"),
    ("SSLMemScoringStalled", "> 3600", "> 3540"),
    ("SSLMemScoringStalled", "sslmem:queue_depth > 0", "sslmem:queue_depth >= 0"),
    ("SSLMemDependencyDown", "== 0", "== 1"),
    ("SSLMemDependencyDown", "> 0", "> 1"),
    ("SSLMemServiceDown", "== 0", "== 1"),
    ("SSLMemTargetMissing", 'job="sslmem"', 'job="other"'),
    ("SSLMemForgedWebhookDeliveries", "> 3", "> 4"),
    ("SSLMemForgedWebhookDeliveries", "> 3", "> 2"),
    ("SSLMemWebhookUnconfigured", "> 0", "> 1"),
    ("SSLMemWebhookUnconfigured", "> 0", "> -1"),
]


def mutated(tmp_path: Path, alert: str, change: Any) -> list[Path]:
    """Copy rules and tests under ``tmp_path`` with ``change(rule)`` applied to ``alert``."""
    data = yaml.safe_load(RULES.read_text())
    hits = 0
    for group in data["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                change(rule)
                hits += 1
    assert hits, alert
    (tmp_path / RULES.name).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    (tmp_path / "tests").mkdir()
    relevant = []
    for path in unit_test_files():
        shutil.copy(path, tmp_path / "tests" / path.name)
        if f"alertname: {alert}" in path.read_text():
            relevant.append(tmp_path / "tests" / path.name)
    assert relevant, f"no unit test mentions {alert}"
    return relevant


@pytest.mark.parametrize("alert", ["SSLMemBudgetExceeded", "SSLMemForgedWebhookDeliveries"])
def test_mutation_harness_passes_the_unchanged_rules(tmp_path: Path, alert: str) -> None:
    # Without this, a copy that broke in re-serialising would make every mutation look caught.
    done = run(promtool(), "test", "rules", *mutated(tmp_path, alert, lambda rule: None))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("alert", "old", "new"), THRESHOLD_MUTATIONS)
def test_unit_tests_catch_a_moved_threshold(tmp_path: Path, alert: str, old: str, new: str) -> None:
    def change(rule: dict[str, Any]) -> None:
        assert old in rule["expr"], (alert, old)
        rule["expr"] = rule["expr"].replace(old, new)

    done = run(promtool(), "test", "rules", *mutated(tmp_path, alert, change))
    assert done.returncode != 0, f"{alert}: {old!r} -> {new!r} went unnoticed\n{done.stdout}"


@pytest.mark.slow
@pytest.mark.parametrize("alert", sorted(alerts()))
@pytest.mark.parametrize("step", [-1, 1])
def test_unit_tests_catch_a_moved_for_window(tmp_path: Path, alert: str, step: int) -> None:
    def change(rule: dict[str, Any]) -> None:
        rule["for"] = f"{minutes(rule['for']) + step}m"

    done = run(promtool(), "test", "rules", *mutated(tmp_path, alert, change))
    assert done.returncode != 0, f"{alert}: for {step:+d}m went unnoticed\n{done.stdout}"


# -- a real Prometheus scraping the service's exposition -----------------------------------------


def serve_metrics(metrics: ServiceMetrics) -> tuple[str, ThreadingHTTPServer]:
    """``GET /metrics`` of ``metrics`` on 127.0.0.1 (what ``sslmem serve`` answers there)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((HOST, free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"{HOST}:{server.server_address[1]}", server


def query(url: str, expr: str) -> dict[str, float]:
    """Instant query: ``{model/reason/alertstate label summary: value}`` of each series."""
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10
    ) as response:
        result = json.load(response)["data"]["result"]
    return {
        ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__"): float(
            r["value"][1]
        )
        for r in result
    }


@pytest.mark.slow
def test_real_prometheus_sees_the_first_failure_that_increase_misses(tmp_path: Path) -> None:
    """A (model, reason) counter is born at 1: the recording rule counts it, increase() cannot."""
    binary = shutil.which("prometheus")
    if binary is None:
        hint = "prometheus not installed: apt-get install -y --no-install-recommends prometheus"
        if os.environ.get("CI"):
            pytest.fail(hint)
        pytest.skip(hint)
    metrics = ServiceMetrics()
    target, server = serve_metrics(metrics)
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "sslmem", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address={HOST}:{port}"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://{HOST}:{port}"

    def wait(expr: str, what: str, timeout: float = 30) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = query(url, expr)
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"{what}: no result for {expr!r}\n{log.read_text()[-2000:]}")

    try:
        wait_for_http(f"{url}/-/ready", 30, ok_statuses=(200,), proc=proc, log_path=log)
        wait('sslmem_queue_depth{job="sslmem"}', "scraped")
        metrics.version_failed("enc", FailureReason.DATA)  # the counter appears, at 1
        # Scraped several times at 1, and the rules evaluated since.
        wait('count_over_time(sslmem_versions_failed_total{job="sslmem"}[1m]) >= 3', "scrapes")
        wait("count_over_time(sslmem:versions_failed:increase15m[1m]) >= 2", "evaluations")
        assert query(url, "sslmem:versions_failed:increase15m") == {"model=enc,reason=data": 1.0}
        # What the recording rule is for: increase() sees no change in a series born at 1.
        assert query(url, 'increase(sslmem_versions_failed_total{job="sslmem"}[15m])') == {
            "instance=" + target + ",job=sslmem,model=enc,reason=data": 0.0
        }
        alerts = wait('ALERTS{alertname="SSLMemScoringFailures"}', "alert pending or firing")
        assert list(alerts) in (
            [
                "alertname=SSLMemScoringFailures,alertstate=pending,model=enc,reason=data,severity=warning"
            ],
            [
                "alertname=SSLMemScoringFailures,alertstate=firing,model=enc,reason=data,severity=warning"
            ],
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.shutdown()
