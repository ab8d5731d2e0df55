"""The offline checks the chart tests rely on catch what they claim to catch.

Each validator is shown a valid object (it must pass, or every chart test would be vacuous) and a
broken one with a known mistake (it must name that mistake). The render/lint helpers are checked
on a minimal fixture chart whose output echoes what helm received.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.helm.render import (
    KUBE_VERSIONS,
    Helm,
    HelmError,
    kubernetes_errors,
    lint,
    operator_errors,
    operator_field_errors,
    render,
    the,
    validation_errors,
)

PROBE_CHART = Path(__file__).parent / "fixtures" / "probe"

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "sslmem"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "example/web:1"}]},
        },
    },
}

RULE: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "rules", "labels": {"release": "kube-prometheus-stack"}},
    "spec": {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {
                        "alert": "Down",
                        "expr": "up == 0",
                        "for": "5m",
                        "labels": {"severity": "critical"},
                    }
                ],
            }
        ]
    },
}

MONITOR: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "ServiceMonitor",
    "metadata": {"name": "mon"},
    "spec": {
        "jobLabel": "app",
        "selector": {"matchLabels": {"app": "web"}},
        "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
    },
}


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_kubernetes_schemas_accept_a_valid_deployment(kube_version: str) -> None:
    assert kubernetes_errors(DEPLOYMENT, kube_version) == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_kubernetes_schemas_reject_a_string_replicas(kube_version: str) -> None:
    broken = copy.deepcopy(DEPLOYMENT)
    broken["spec"]["replicas"] = "2"
    errors = kubernetes_errors(broken, kube_version)
    assert len(errors) == 1
    assert "Deployment/web" in errors[0]
    assert "spec.replicas" in errors[0]
    assert "'2' is not of type 'integer'" in errors[0]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_kubernetes_schemas_reject_an_unknown_field(kube_version: str) -> None:
    # Strict schemas: a misspelt key would be dropped silently by the API server.
    broken = copy.deepcopy(DEPLOYMENT)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    errors = kubernetes_errors(broken, kube_version)
    assert len(errors) == 1
    assert "'securityContxt' was unexpected" in errors[0]


def test_kubernetes_schemas_reject_a_missing_required_field() -> None:
    broken = copy.deepcopy(DEPLOYMENT)
    del broken["spec"]["template"]["spec"]["containers"][0]["name"]
    errors = kubernetes_errors(broken, KUBE_VERSIONS[-1])
    assert len(errors) == 1
    assert "'name' is a required property" in errors[0]


def test_kubernetes_schemas_reject_a_removed_api_version() -> None:
    # policy/v1beta1 PodDisruptionBudget was removed in Kubernetes 1.25.
    pdb = {
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }
    assert kubernetes_errors(pdb, KUBE_VERSIONS[0]) != []
    pdb["apiVersion"] = "policy/v1"
    assert kubernetes_errors(pdb, KUBE_VERSIONS[0]) == []


@pytest.mark.usefixtures("operator_validator")
def test_operator_schemas_accept_valid_rule_and_monitor() -> None:
    assert operator_errors([RULE, MONITOR]) == [[], []]


@pytest.mark.usefixtures("operator_validator")
def test_operator_schemas_reject_a_rule_without_expr() -> None:
    broken = copy.deepcopy(RULE)
    del broken["spec"]["groups"][0]["rules"][0]["expr"]
    assert operator_errors([MONITOR, broken]) == [
        [],
        [
            "PrometheusRule/rules against the operator schema: "
            "/spec/groups/0/rules/0: must have required property expr"
        ],
    ]


@pytest.mark.usefixtures("operator_validator")
def test_operator_schemas_reject_a_malformed_scrape_interval() -> None:
    broken = copy.deepcopy(MONITOR)
    broken["spec"]["endpoints"][0]["interval"] = "30 seconds"
    [errors] = operator_errors([broken])
    assert len(errors) == 1
    assert "/spec/endpoints/0/interval: must match pattern" in errors[0]


@pytest.mark.usefixtures("operator_validator")
def test_operator_schemas_reject_a_monitor_without_selector() -> None:
    broken = copy.deepcopy(MONITOR)
    del broken["spec"]["selector"]
    assert operator_errors([broken]) == [
        [
            "ServiceMonitor/mon against the operator schema: "
            "/spec: must have required property selector"
        ]
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("operator_validator")
def test_operator_types_reject_unknown_fields() -> None:
    # The operator's JSON schemas let unknown keys through (an API server would prune them); its
    # API types do not. One batch: the type check takes seconds to start.
    misspelt_rule = copy.deepcopy(RULE)
    rule = misspelt_rule["spec"]["groups"][0]["rules"][0]
    rule["annotation"] = {"runbook_url": "https://example.com"}
    misplaced_monitor = copy.deepcopy(MONITOR)
    misplaced_monitor["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    assert operator_errors([misspelt_rule, misplaced_monitor]) == [[], []]
    valid_rule, valid_monitor, rule_errors, monitor_errors = operator_field_errors(
        [RULE, MONITOR, misspelt_rule, misplaced_monitor]
    )
    assert (valid_rule, valid_monitor) == ([], [])
    assert len(rule_errors) == 1
    assert "PrometheusRule/rules against the operator types" in rule_errors[0]
    assert "'\"annotation\"' does not exist in type 'IRule'" in rule_errors[0]
    assert len(monitor_errors) == 1
    assert "'\"scrapeTimout\"' does not exist in type 'IEndpoint'" in monitor_errors[0]


@pytest.mark.usefixtures("operator_validator")
def test_validation_routes_each_kind_to_its_schemas() -> None:
    # Operator kinds go to the operator's schemas (kubernetes-validate only warns on them) and an
    # unknown kind is an error rather than silently unchecked.
    broken_rule = copy.deepcopy(RULE)
    del broken_rule["spec"]["groups"][0]["rules"][0]["expr"]
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    errors = validation_errors([DEPLOYMENT, broken_rule, MONITOR, unknown], KUBE_VERSIONS[-1])
    assert len(errors) == 2
    assert "Couldn't find schema for kind Widget" in errors[0]
    assert "must have required property expr" in errors[1]


def test_render_passes_values_with_their_types(helm: Helm) -> None:
    as_string = the(render(helm, set={"value": "2"}, chart=PROBE_CHART), "ConfigMap")
    as_number = the(render(helm, set={"value": 2}, chart=PROBE_CHART), "ConfigMap")
    assert as_string["data"]["value"] == '"2"'
    assert as_number["data"]["value"] == "2"
    assert as_number["metadata"] == {"name": "sslmem-probe", "namespace": "sslmem"}


def test_render_applies_files_then_inline_values_then_set(helm: Helm, tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("layer: first\nvalue: 1\n")
    second.write_text("layer: second\n")
    [cm] = render(helm, [first, second], chart=PROBE_CHART)
    assert (cm["data"]["layer"], cm["data"]["value"]) == ("second", "1")
    [cm] = render(helm, [first, second], values={"layer": "inline"}, chart=PROBE_CHART)
    assert cm["data"]["layer"] == "inline"
    [cm] = render(
        helm, [first], set={"layer": "set"}, values={"layer": "inline"}, chart=PROBE_CHART
    )
    assert cm["data"]["layer"] == "set"


def test_render_sees_a_rewritten_values_file(helm: Helm, tmp_path: Path) -> None:
    # render() caches helm's output; the cache must not answer for a file whose content changed.
    values = tmp_path / "values.yaml"
    values.write_text("layer: before\n")
    assert the(render(helm, [values], chart=PROBE_CHART), "ConfigMap")["data"]["layer"] == "before"
    values.write_text("layer: after\n")
    assert the(render(helm, [values], chart=PROBE_CHART), "ConfigMap")["data"]["layer"] == "after"


def test_render_sets_capabilities(helm: Helm) -> None:
    [bare] = render(helm, kube_version="1.30.0", chart=PROBE_CHART)
    [operator] = render(
        helm, api_versions=["monitoring.coreos.com/v1/ServiceMonitor"], chart=PROBE_CHART
    )
    assert bare["data"]["kubeVersion"] == "v1.30.0"
    assert (bare["data"]["hasServiceMonitor"], operator["data"]["hasServiceMonitor"]) == (
        "false",
        "true",
    )


def test_render_and_lint_report_schema_violations(helm: Helm) -> None:
    assert "0 chart(s) failed" in lint(helm, chart=PROBE_CHART)
    with pytest.raises(HelmError) as rendered:
        render(helm, set={"unknownKey": 1}, chart=PROBE_CHART)
    assert "unknownKey" in rendered.value.stderr
    with pytest.raises(HelmError) as linted:
        lint(helm, values={"layer": 3}, chart=PROBE_CHART)
    assert "layer" in linted.value.output
