"""The example Alertmanager route (deploy/alertmanager/alertmanager.example.yaml).

``amtool check-config`` validates it; ``amtool config routes test`` shows every severity the
shipped rules can give each alert reaches the intended receiver (critical -> pager, warning ->
chat); a real Alertmanager 0.25 started on 127.0.0.1 applies its routes and inhibit rules to
posted alerts; and the file holds no credential, only ``*_file`` paths.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers import HOST, free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.example.yaml"
RULES = ROOT / "deploy" / "prometheus" / "sslmem-rules.yaml"
PAGER, CHAT = "sslmem-pager", "sslmem-chat"
EXPECTED_RECEIVER = {"critical": PAGER, "warning": CHAT, "info": CHAT}


def tool(name: str, package: str) -> str:
    """A Debian-packaged binary; in CI (``make test`` installs it) its absence is a failure."""
    found = shutil.which(name)
    if found is None:
        hint = f"{name} not installed: apt-get install -y --no-install-recommends {package}"
        if os.environ.get("CI"):
            pytest.fail(hint)
        pytest.skip(hint)
    return found


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("amtool", "prometheus-alertmanager"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def route(receiver: str, **labels: str) -> subprocess.CompletedProcess[str]:
    """``amtool config routes test`` of one label set, verifying the receiver."""
    pairs = [f"{key}={value}" for key, value in labels.items()]
    return amtool(
        "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={receiver}",
        *pairs,
    )  # fmt: skip


def rule_severities() -> list[tuple[str, str]]:
    """(alert, severity) for every severity each shipped alert can carry (templates: both)."""
    out = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                severity = rule["labels"]["severity"]
                for value in re.findall(r"critical|warning|info", severity):
                    out.append((rule["alert"], value))
    return out


def test_amtool_check_config() -> None:
    done = amtool("check-config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    assert " - 2 receivers" in done.stdout and " - 2 inhibit rules" in done.stdout


def test_critical_regression_pages_and_warning_goes_to_chat() -> None:
    regression = {"alertname": "SSLMemRegressionAgainstChampion", "model": "enc", "version": "7"}
    paged = route(PAGER, severity="critical", alias="challenger", **regression)
    assert paged.returncode == 0, paged.stdout + paged.stderr
    assert paged.stdout.strip() == PAGER
    chat = route(CHAT, severity="warning", **regression)
    assert chat.returncode == 0, chat.stdout + chat.stderr
    assert chat.stdout.strip() == CHAT
    # The verification itself can fail: a critical alert is not sent to chat.
    wrong = route(CHAT, severity="critical", **regression)
    assert wrong.returncode != 0
    assert wrong.stdout.splitlines()[0] == PAGER
    assert "did not match" in wrong.stdout


@pytest.mark.parametrize(("alert", "severity"), rule_severities())
def test_each_shipped_alert_severity_reaches_its_receiver(alert: str, severity: str) -> None:
    done = route(EXPECTED_RECEIVER[severity], alertname=alert, severity=severity, model="enc")
    assert done.returncode == 0, f"{alert} {severity}: {done.stdout}{done.stderr}"


def test_rules_use_both_severities_the_route_distinguishes() -> None:
    assert {severity for _, severity in rule_severities()} == {"critical", "warning"}


def test_no_credential_in_the_file() -> None:
    text = CONFIG.read_text()
    config = yaml.safe_load(text)
    secret_fields = {"routing_key", "service_key", "api_url", "url", "api_key", "password", "token"}

    def walk(node: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield key, value
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    pairs = list(walk(config))
    assert not [key for key, _ in pairs if key in secret_fields], "credentials only via *_file"
    files = [value for key, value in pairs if key.endswith("_file")]
    assert files and all(str(f).startswith("/etc/alertmanager/secrets/") for f in files)
    assert "hooks.slack.com" not in text and "events.pagerduty.com" not in text


# -- a real Alertmanager ---------------------------------------------------------------------------


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """``prometheus-alertmanager`` with the example config on 127.0.0.1 (no cluster gossip)."""
    binary = tool("prometheus-alertmanager", "prometheus-alertmanager")
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={CONFIG}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address={HOST}:{port}", "--cluster.listen-address="],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://{HOST}:{port}"
        wait_for_http(f"{url}/-/ready", 30, ok_statuses=(200,), proc=proc, log_path=log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post_alerts(url: str, alerts: list[dict[str, str]]) -> None:
    body = json.dumps([{"labels": labels} for labels in alerts]).encode()
    request = urllib.request.Request(
        f"{url}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def alert_states(url: str) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """(alertname, version or "") -> (state, receivers) as Alertmanager reports them."""
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=10) as response:
        alerts = json.load(response)
    return {
        (a["labels"]["alertname"], a["labels"].get("version", "")): (
            a["status"]["state"],
            sorted(r["name"] for r in a["receivers"]),
        )
        for a in alerts
    }


def test_real_alertmanager_routes_and_inhibits(alertmanager: str) -> None:
    regression = {"alertname": "SSLMemRegressionAgainstChampion", "model": "enc"}
    post_alerts(
        alertmanager,
        [
            {"alertname": "SSLMemServiceDown", "severity": "critical", "job": "sslmem",
             "instance": "r1:8080"},
            {"alertname": "SSLMemScoringStalled", "severity": "warning"},
            {"alertname": "SSLMemBudgetExceeded", "severity": "critical", "model": "enc",
             "version": "7", "alias": "challenger", "setting": "budget_mean"},
            {**regression, "severity": "critical", "version": "7", "alias": "challenger"},
            {**regression, "severity": "warning", "version": "8"},
        ],
    )  # fmt: skip
    assert alert_states(alertmanager) == {
        ("SSLMemServiceDown", ""): ("active", [PAGER]),
        # the replica being down explains the stall
        ("SSLMemScoringStalled", ""): ("suppressed", [CHAT]),
        ("SSLMemBudgetExceeded", "7"): ("active", [PAGER]),
        # version 7's regression is its broken budget: one page, not two
        ("SSLMemRegressionAgainstChampion", "7"): ("suppressed", [PAGER]),
        # another version of the same model is not inhibited
        ("SSLMemRegressionAgainstChampion", "8"): ("active", [CHAT]),
    }
