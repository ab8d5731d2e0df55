"""ServiceMonitor, PrometheusRule and the Grafana dashboard ConfigMap: when they render and how.

`auto` (the default) renders the operator's objects only when the cluster has their CRDs, which
`helm template` learns from `--api-versions` (on a cluster: from the API server).
"""

from __future__ import annotations

import json

import pytest

from tests.helm.render import CHART_DIR, Helm, find, render, the
from tests.helm.test_chart_security import EXTERNAL

SM = "monitoring.coreos.com/v1/ServiceMonitor"
PR = "monitoring.coreos.com/v1/PrometheusRule"


def kinds(helm: Helm, api_versions: list[str] = [], **set_: object) -> set[str]:  # noqa: B006
    return {o["kind"] for o in render(helm, values=EXTERNAL, set=set_, api_versions=api_versions)}


def test_absent_without_the_crds(helm: Helm) -> None:
    found = kinds(helm)
    assert "ServiceMonitor" not in found and "PrometheusRule" not in found


def test_present_with_the_crds(helm: Helm) -> None:
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds(helm, [SM, PR])
    assert kinds(helm, [SM]) >= {"ServiceMonitor"} and "PrometheusRule" not in kinds(helm, [SM])


@pytest.mark.parametrize("monitor", ["serviceMonitor", "prometheusRule"])
def test_explicit_true_and_false_win_over_detection(helm: Helm, monitor: str) -> None:
    kind = monitor[0].upper() + monitor[1:]
    # true renders the object where the API is unknown to auto-detection in its other form
    # (test_chart_adoption: true without the API at all fails the render).
    assert kind in kinds(
        helm, ["monitoring.coreos.com/v1"], **{f"monitoring.{monitor}.enabled": True}
    )
    assert kind not in kinds(helm, [SM, PR], **{f"monitoring.{monitor}.enabled": False})


def test_service_monitor_scrapes_the_service_as_job_sslmem(helm: Helm) -> None:
    objects = render(helm, values=EXTERNAL, api_versions=[SM])
    monitor = the(objects, "ServiceMonitor")
    service = the(objects, "Service", "sslmem")
    # it selects the Service (by its labels, in its namespace) and names one of its ports
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert all(service["metadata"]["labels"].get(k) == v for k, v in selector.items())
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["sslmem"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # CONTRACT: the rules and the dashboard select job="sslmem", whatever the release is called;
    # the operator's own job label (the Service name) is replaced by this relabeling.
    assert endpoint["relabelings"] == [
        {"action": "replace", "targetLabel": "job", "replacement": "sslmem"}
    ]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_job_label_is_sslmem_for_any_release_name(helm: Helm) -> None:
    objects = render(
        helm, values={**EXTERNAL, "fullnameOverride": "scoring-prod"}, api_versions=[SM]
    )
    monitor = the(objects, "ServiceMonitor")
    assert the(objects, "Service")["metadata"]["name"] == "scoring-prod"
    assert monitor["spec"]["endpoints"][0]["relabelings"][0]["replacement"] == "sslmem"


def test_dashboard_config_map_for_the_grafana_sidecar(helm: Helm) -> None:
    objects = render(helm, values=EXTERNAL)
    dashboard = the(objects, "ConfigMap", "sslmem-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    [(name, text)] = dashboard["data"].items()
    assert name.endswith(".json")
    shipped = (CHART_DIR / "files" / "sslmem-dashboard.json").read_text(encoding="utf-8")
    assert json.loads(text) == json.loads(shipped)
    objects = render(
        helm,
        values={
            **EXTERNAL,
            "monitoring": {
                "grafanaDashboard": {
                    "namespace": "grafana",
                    "annotations": {"grafana_folder": "ML"},
                }
            },
        },
    )
    dashboard = the(objects, "ConfigMap", "sslmem-dashboard")
    assert dashboard["metadata"]["namespace"] == "grafana"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "ML"}
    objects = render(
        helm, values={**EXTERNAL, "monitoring": {"grafanaDashboard": {"enabled": False}}}
    )
    assert find(objects, "ConfigMap", "sslmem-dashboard") == []
