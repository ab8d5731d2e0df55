"""Every realistic value set (helm/sslmem/ci/) lints and renders valid objects with both helms.

No API server can run here, so "valid" means what a cluster would check before storing an object:
the Kubernetes OpenAPI schemas of the oldest version the chart claims (Chart.yaml kubeVersion) and
the newest kubernetes-validate ships, strict about unknown fields, and the Prometheus Operator's
schemas for its custom resources. Each value set is rendered as on a cluster running the operator
(its CRDs advertised via --api-versions) so the monitoring objects are rendered and checked too.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.render import (
    CHART_DIR,
    KUBE_VERSIONS,
    Helm,
    ci_values_files,
    describe,
    find,
    lint,
    operator_field_errors,
    render,
    the,
    validation_errors,
)

OPERATOR_APIS = (
    "monitoring.coreos.com/v1",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
"""What `.Capabilities.APIVersions` holds on a cluster with the Prometheus Operator's CRDs."""

VALUE_SETS = {path.name.removesuffix("-values.yaml"): path for path in ci_values_files()}
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _value_set_params() -> list[Any]:
    return [pytest.param(path, id=name) for name, path in VALUE_SETS.items()]


def _render_on_operator_cluster(helm: Helm, name: str, kube_version: str) -> list[dict[str, Any]]:
    return render(helm, [VALUE_SETS[name]], api_versions=OPERATOR_APIS, kube_version=kube_version)


def test_the_documented_value_sets_exist() -> None:
    assert set(VALUE_SETS) == {
        "existing-services",
        "quick-start",
        "gpu",
        "monitoring-off",
        "production",
    }


def test_oldest_validated_kubernetes_is_the_charts_minimum() -> None:
    # Validating against an older version than the chart accepts proves nothing about its floor;
    # a newer one would leave the claimed floor unchecked.
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    floor = re.fullmatch(r">=\s*v?(\d+\.\d+)\.\d+(-0)?", chart["kubeVersion"])
    assert floor is not None, f"unexpected kubeVersion {chart['kubeVersion']!r}"
    assert KUBE_VERSIONS[0].rsplit(".", 1)[0] == floor.group(1)


@pytest.mark.parametrize("values_file", _value_set_params())
def test_value_set_passes_helm_lint_strict(helm: Helm, values_file: Path) -> None:
    output = lint(helm, [values_file], kube_version=KUBE_VERSIONS[-1])
    assert "0 chart(s) failed" in output


@pytest.mark.usefixtures("operator_validator")
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", _value_set_params())
def test_value_set_renders_schema_valid_objects(
    helm: Helm, values_file: Path, kube_version: str
) -> None:
    objects = render(helm, [values_file], api_versions=OPERATOR_APIS, kube_version=kube_version)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
    errors = validation_errors(objects, kube_version)
    assert errors == [], "\n".join(errors)


@pytest.mark.slow
@pytest.mark.usefixtures("operator_validator")
def test_operator_objects_have_no_unknown_fields(all_helms: list[Helm]) -> None:
    # One type check over the distinct operator objects of every value set and both helms.
    distinct: dict[str, dict[str, Any]] = {}
    for helm in all_helms:
        for path in VALUE_SETS.values():
            for obj in render(helm, [path], api_versions=OPERATOR_APIS):
                if obj["kind"] in MONITORING_KINDS:
                    distinct[json.dumps(obj, sort_keys=True)] = obj
    objects = list(distinct.values())
    assert {o["kind"] for o in objects} == MONITORING_KINDS
    errors = [e for found in operator_field_errors(objects) for e in found]
    assert errors == [], "\n".join(errors)


def _comparable(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OBJECTS with generated secret values (quick-start) and the checksums over them masked."""
    generated = any(o["kind"] == "Secret" for o in objects)
    masked = copy.deepcopy(objects)
    if generated:
        for obj in masked:
            if obj["kind"] == "Secret":
                for field in ("data", "stringData"):
                    obj[field] = dict.fromkeys(obj.get(field, {}), "<generated>")
            for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata")):
                for key in (meta or {}).get("annotations", {}):
                    if key.startswith("checksum/"):
                        meta["annotations"][key] = "<checksum>"
    return masked


@pytest.mark.parametrize("values_file", _value_set_params())
def test_helm3_and_helm4_render_the_same_objects(all_helms: list[Helm], values_file: Path) -> None:
    helm3, helm4 = all_helms
    kube = KUBE_VERSIONS[-1]
    rendered3 = render(helm3, [values_file], api_versions=OPERATOR_APIS, kube_version=kube)
    rendered4 = render(helm4, [values_file], api_versions=OPERATOR_APIS, kube_version=kube)
    assert [describe(o) for o in rendered3] == [describe(o) for o in rendered4]
    assert _comparable(rendered3) == _comparable(rendered4)


# What each value set is for: these keep a set from silently losing the feature it stands for
# (e.g. after a values key is renamed in the chart and the set's key becomes a no-op).


def test_existing_services_reference_the_secrets_and_render_none(helm: Helm) -> None:
    objects = _render_on_operator_cluster(helm, "existing-services", KUBE_VERSIONS[-1])
    assert find(objects, "Secret") == []
    rendered = yaml.safe_dump(objects)
    for secret in ("sslmem-mlflow", "sslmem-s3", "sslmem-webhook", "sslmem-api-token"):
        assert re.search(rf"(secretName|name): {secret}\n", rendered), f"{secret} not referenced"


def test_quick_start_brings_up_mlflow_minio_and_postgresql(helm: Helm) -> None:
    objects = _render_on_operator_cluster(helm, "quick-start", KUBE_VERSIONS[-1])
    images = {
        c["image"]
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet"}
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    for name in ("mlflow", "minio", "postgres"):
        assert any(name in image for image in images), f"no {name} image in {sorted(images)}"


def test_gpu_set_requests_a_gpu_on_the_gpu_pool(helm: Helm) -> None:
    objects = _render_on_operator_cluster(helm, "gpu", KUBE_VERSIONS[-1])
    pod = the(objects, "Deployment", "sslmem")["spec"]["template"]["spec"]
    [service] = [c for c in pod["containers"] if c["name"] == "sslmem"]
    assert service["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_monitoring_off_renders_no_monitoring_objects_even_with_the_crds(helm: Helm) -> None:
    objects = _render_on_operator_cluster(helm, "monitoring-off", KUBE_VERSIONS[-1])
    assert {o["kind"] for o in objects} & MONITORING_KINDS == set()
    dashboards = [o for o in find(objects, "ConfigMap") if "grafana_dashboard" in str(o)]
    assert dashboards == []


def test_production_is_replicated_disruption_safe_isolated_and_monitored(helm: Helm) -> None:
    objects = _render_on_operator_cluster(helm, "production", KUBE_VERSIONS[-1])
    deployment = the(objects, "Deployment", "sslmem")
    assert deployment["spec"]["replicas"] == 3
    assert "@sha256:" in deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert the(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert find(objects, "NetworkPolicy") != []
    for kind in MONITORING_KINDS:
        monitor = the(objects, kind)
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = {
        rule.get("alert"): rule
        for group in the(objects, "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
    }
    assert rules["SSLMemRegressionAgainstChampion"]["labels"]["team"] == "ml-platform"
    assert rules["SSLMemBacklogGrowing"]["for"] == "30m"
    assert "sslmem:queue_depth >= 25 and" in rules["SSLMemBacklogGrowing"]["expr"]
