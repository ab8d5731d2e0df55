"""NetworkPolicies: the service accepts only MLflow and Prometheus, reaches only DNS, MLflow, S3.

Selectors are checked against the rendered pods themselves (the policy must select the pods it
is meant for, and only them), and custom selectors and CIDRs from values must land in the rules.
"""

from __future__ import annotations

from typing import Any

from tests.helm.render import Helm, find, render, the
from tests.helm.test_chart_security import EXTERNAL, QUICKSTART


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a matchLabels-only selector selects LABELS (the chart uses no expressions)."""
    assert set(selector) == {"matchLabels"}
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def pod_labels(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, str]:
    labels: dict[str, str] = the(objects, kind, name)["spec"]["template"]["metadata"]["labels"]
    return labels


def policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o["spec"] for o in find(objects, "NetworkPolicy")}


def test_policies_select_their_own_pods_only(helm: Helm) -> None:
    objects = render(helm, values=EXTERNAL)
    service_pods = pod_labels(objects, "Deployment")
    hook_pods = pod_labels(objects, "Job")
    specs = policies(objects)
    assert set(specs) == {"sslmem", "sslmem-webhook-ensure"}
    assert selects(specs["sslmem"]["podSelector"], service_pods)
    assert not selects(specs["sslmem"]["podSelector"], hook_pods)
    assert selects(specs["sslmem-webhook-ensure"]["podSelector"], hook_pods)
    assert not selects(specs["sslmem-webhook-ensure"]["podSelector"], service_pods)
    for spec in specs.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]


def test_service_ingress_only_from_mlflow_and_prometheus_on_the_http_port(helm: Helm) -> None:
    values = {
        **EXTERNAL,
        "helmTest": {"enabled": False},  # its pod's rule: test_chart_adoption.py
        "networkPolicy": {
            "ingress": {
                "mlflow": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlflow"}},
                    "podSelector": {"matchLabels": {"app": "mlflow-server"}},
                },
                "prometheus": {
                    "namespaceSelector": None,  # this namespace only
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                },
            }
        },
    }
    objects = render(helm, values=values)
    spec = policies(objects)["sslmem"]
    assert spec["ingress"] == [
        {
            "from": [
                {
                    "podSelector": {"matchLabels": {"app": "mlflow-server"}},
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlflow"}},
                }
            ],
            "ports": [{"port": "http", "protocol": "TCP"}],
        },
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
            "ports": [{"port": "http", "protocol": "TCP"}],
        },
    ]
    # "http" is the container port the service listens on.
    container = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["http"]


def test_service_egress_to_dns_mlflow_and_s3_only(helm: Helm) -> None:
    values = {
        **EXTERNAL,
        "networkPolicy": {
            "egress": {
                "mlflow": {"podSelector": None, "cidrs": ["10.20.0.0/16"], "ports": [443]},
                "s3": {"podSelector": None, "cidrs": ["52.95.0.0/16"], "ports": [443]},
            }
        },
    }
    spec = policies(render(helm, values=values))["sslmem"]
    dns, mlflow, s3 = spec["egress"]
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert dns["to"] == [
        {
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        }
    ]
    assert mlflow == {
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
        "ports": [{"port": 443, "protocol": "TCP"}],
    }
    assert s3 == {
        "to": [{"ipBlock": {"cidr": "52.95.0.0/16"}}],
        "ports": [{"port": 443, "protocol": "TCP"}],
    }


def test_hook_job_has_no_ingress_and_reaches_only_dns_and_mlflow(helm: Helm) -> None:
    spec = policies(render(helm, values=EXTERNAL))["sslmem-webhook-ensure"]
    assert "ingress" not in spec  # policyTypes Ingress with no rule: nothing may connect
    dns, mlflow = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert mlflow["to"] == [
        {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}},
            "namespaceSelector": {},
        }
    ]


def test_quickstart_peers_are_the_quickstart_pods(helm: Helm) -> None:
    objects = render(helm, values=QUICKSTART)
    spec = policies(objects)["sslmem"]
    mlflow_pods = pod_labels(objects, "Deployment", "sslmem-mlflow")
    minio_pods = pod_labels(objects, "Deployment", "sslmem-minio")
    [from_mlflow] = spec["ingress"][0]["from"]
    assert selects(from_mlflow["podSelector"], mlflow_pods)
    assert "namespaceSelector" not in from_mlflow  # this namespace
    _, to_mlflow, to_s3 = spec["egress"]
    assert selects(to_mlflow["to"][0]["podSelector"], mlflow_pods)
    assert to_mlflow["ports"] == [{"port": 5000, "protocol": "TCP"}]
    assert selects(to_s3["to"][0]["podSelector"], minio_pods)
    assert not selects(to_s3["to"][0]["podSelector"], mlflow_pods)
    assert to_s3["ports"] == [{"port": 9000, "protocol": "TCP"}]


def test_network_policy_can_be_disabled(helm: Helm) -> None:
    objects = render(helm, values={**EXTERNAL, "networkPolicy": {"enabled": False}})
    assert find(objects, "NetworkPolicy") == []
