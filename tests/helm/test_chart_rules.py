"""The chart's PrometheusRule is deploy/prometheus/sslmem-rules.yaml, with per-alert overrides.

The rules file is the single source (promtool's unit tests check it); the chart reads a
byte-identical copy in helm/sslmem/files/ (a chart cannot read outside itself). With default
values the chart must render exactly its groups; an override of one alert's threshold, `for:` or
severity must change exactly that field and nothing else. Rendered with `--api-versions` for the
Prometheus Operator's CRD, as on a cluster that has it.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.render import CHART_DIR, REPO, Helm, HelmError, render, the
from tests.helm.test_chart_security import EXTERNAL

RULES_FILE = REPO / "deploy" / "prometheus" / "sslmem-rules.yaml"
CHART_RULES_FILE = CHART_DIR / "files" / "sslmem-rules.yaml"
CRD = "monitoring.coreos.com/v1/PrometheusRule"
ALERTS = "monitoring.prometheusRule.alerts"


def rules_file_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]
    return groups


def rendered_groups(helm: Helm, **overrides: Any) -> list[dict[str, Any]]:
    objects = render(helm, values=EXTERNAL, set=overrides, api_versions=[CRD])
    groups: list[dict[str, Any]] = the(objects, "PrometheusRule")["spec"]["groups"]
    return groups


def alert(groups: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [r for g in groups for r in g["rules"] if r.get("alert") == name]
    return found


def test_the_chart_ships_the_rules_file_unchanged() -> None:
    assert CHART_RULES_FILE.read_bytes() == RULES_FILE.read_bytes(), (
        "helm/sslmem/files/sslmem-rules.yaml differs from deploy/prometheus/sslmem-rules.yaml: "
        "cp deploy/prometheus/sslmem-rules.yaml helm/sslmem/files/sslmem-rules.yaml"
    )


def test_defaults_render_the_rules_file_exactly(helm: Helm) -> None:
    assert rendered_groups(helm) == rules_file_groups()


def test_threshold_for_and_severity_overrides_land_exactly_there(helm: Helm) -> None:
    groups = rendered_groups(
        helm,
        **{
            "monitoring.prometheusRule.alerts.SSLMemBacklogGrowing.threshold": 25,
            "monitoring.prometheusRule.alerts.SSLMemBacklogGrowing.for": "45m",
            "monitoring.prometheusRule.alerts.SSLMemBacklogGrowing.severity": "critical",
            "monitoring.prometheusRule.alerts.SSLMemBacklogGrowing.labels": {"team": "ml"},
        },
    )
    expected = copy.deepcopy(rules_file_groups())
    backlog = alert(expected, "SSLMemBacklogGrowing")
    # The hand-edited expectation: the file's expression with 25 in place of 10.
    assert backlog["expr"] == "sslmem:queue_depth >= 10 and deriv(sslmem:queue_depth[30m]) > 0"
    backlog["expr"] = "sslmem:queue_depth >= 25 and deriv(sslmem:queue_depth[30m]) > 0"
    backlog["for"] = "45m"
    backlog["labels"] = {"severity": "critical", "team": "ml"}
    assert groups == expected


def test_multiline_expression_threshold(helm: Helm) -> None:
    groups = rendered_groups(
        helm, **{"monitoring.prometheusRule.alerts.SSLMemScoringStalled.threshold": 7200}
    )
    expected = copy.deepcopy(rules_file_groups())
    stalled = alert(expected, "SSLMemScoringStalled")
    assert "sslmem:last_success_timestamp_seconds > 3600)" in stalled["expr"]
    stalled["expr"] = stalled["expr"].replace("> 3600)", "> 7200)")
    assert groups == expected


def test_aliased_and_unaliased_severities(helm: Helm) -> None:
    groups = rendered_groups(
        helm,
        **{f"{ALERTS}.SSLMemRegressionAgainstChampion.unaliasedSeverity": "info"},
    )
    assert alert(groups, "SSLMemRegressionAgainstChampion")["labels"] == {
        "severity": '{{ if eq $labels.alias "" }}info{{ else }}critical{{ end }}'
    }
    # the other model-level alert keeps the file's templated severity
    assert alert(groups, "SSLMemBudgetExceeded") == alert(
        rules_file_groups(), "SSLMemBudgetExceeded"
    )


def test_an_alert_can_be_switched_off(helm: Helm) -> None:
    groups = rendered_groups(
        helm, **{"monitoring.prometheusRule.alerts.SSLMemTargetMissing.enabled": False}
    )
    expected = copy.deepcopy(rules_file_groups())
    for group in expected:
        group["rules"] = [r for r in group["rules"] if r.get("alert") != "SSLMemTargetMissing"]
    assert groups == expected


def test_the_champion_alias_setting_moves_the_service_and_the_rule_together(helm: Helm) -> None:
    objects = render(
        helm, values=EXTERNAL, set={"settings.championAlias": "prod"}, api_versions=[CRD]
    )
    # the service judges against the "prod" alias ...
    assert the(objects, "ConfigMap", "sslmem")["data"]["SSLMEM_SERVICE_CHAMPION_ALIAS"] == "prod"
    # ... so the version holding "prod" is the champion, which cannot regress against itself,
    # and a version holding the file's "champion" alias is an ordinary aliased version
    groups = the(objects, "PrometheusRule")["spec"]["groups"]
    expected = copy.deepcopy(rules_file_groups())
    regression = alert(expected, "SSLMemRegressionAgainstChampion")
    assert regression["expr"] == 'sslmem:version_regression{alias!="champion"} == 1'
    regression["expr"] = 'sslmem:version_regression{alias!="prod"} == 1'
    assert groups == expected


def _chart_with_rules(tmp_path: Path, edit: tuple[str, str]) -> Path:
    chart = tmp_path / "sslmem"
    shutil.copytree(CHART_DIR, chart)
    rules = chart / "files" / "sslmem-rules.yaml"
    text = rules.read_text(encoding="utf-8")
    assert edit[0] in text
    rules.write_text(text.replace(edit[0], edit[1]), encoding="utf-8")
    return chart


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("sslmem:queue_depth >= 10", "sslmem:queue_depth > 10"),
            "SSLMemBacklogGrowing: its expression in files/sslmem-rules.yaml no longer has a "
            'number after "sslmem:queue_depth >= " for the threshold',
        ),
        (
            ('alias!="champion"', 'alias!~"champion|prod"'),
            "SSLMemRegressionAgainstChampion: its expression in files/sslmem-rules.yaml no "
            'longer excludes alias!="champion"',
        ),
        (
            ("- alert: SSLMemTargetMissing", "- alert: SSLMemTargetGone"),
            "monitoring.prometheusRule.alerts.SSLMemTargetGone is missing",
        ),
    ],
    ids=["threshold-fragment", "champion-fragment", "new-alert"],
)
def test_a_rules_file_the_template_cannot_apply_values_to_fails_loudly(
    helm: Helm, tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    # A rule change the values cannot follow must stop the render with the fix, never render
    # a rule whose threshold or alias silently ignores its value.
    chart = _chart_with_rules(tmp_path, edit)
    with pytest.raises(HelmError) as caught:
        render(helm, values=EXTERNAL, api_versions=[CRD], chart=chart)
    assert message in re.sub(r"\s+", " ", caught.value.stderr)


def test_every_alert_of_the_file_has_values(helm: Helm) -> None:
    values = yaml.safe_load((REPO / "helm" / "sslmem" / "values.yaml").read_text(encoding="utf-8"))
    names = [r["alert"] for g in rules_file_groups() for r in g["rules"] if "alert" in r]
    assert list(values["monitoring"]["prometheusRule"]["alerts"]) == names


def test_release_selector_labels(helm: Helm) -> None:
    objects = render(helm, values=EXTERNAL, api_versions=[CRD])
    labels = the(objects, "PrometheusRule")["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack"  # kube-prometheus-stack's ruleSelector
    objects = render(
        helm,
        values=EXTERNAL,
        set={"monitoring.prometheusRule.labels": {"release": "monitoring", "prometheus": "k8s"}},
        api_versions=[CRD],
    )
    labels = the(objects, "PrometheusRule")["metadata"]["labels"]
    assert (labels["release"], labels["prometheus"]) == ("monitoring", "k8s")


def test_overridden_rules_pass_promtool(helm: Helm, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        hint = "promtool not installed: apt-get install -y --no-install-recommends prometheus"
        if os.environ.get("CI"):  # `make test` installs it: in CI its absence is a failure
            pytest.fail(hint)
        pytest.skip(hint)
    groups = rendered_groups(
        helm,
        **{
            "monitoring.prometheusRule.alerts.SSLMemForgedWebhookDeliveries.threshold": 0.5,
            "monitoring.prometheusRule.alerts.SSLMemScoringStalled.for": "90m",
        },
    )
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "> 0.5" in alert(groups, "SSLMemForgedWebhookDeliveries")["expr"]
