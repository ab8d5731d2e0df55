"""Every pod the chart renders is locked down, probed and bounded.

Checked on the rendered objects of both helm releases: the scoring Deployment, the webhook hook
Job and the quick-start pods (PostgreSQL, MinIO, MLflow and its bucket init container), against
the hardening the issue asks for (Pod Security Standards "restricted" plus a read-only root).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helm.render import Helm, describe, find, render, the

# An install against existing MLflow and S3 (no quick-start), as docs/install.md describes.
EXTERNAL: dict[str, Any] = {
    "mlflow": {"trackingUri": "http://mlflow.mlflow.svc.cluster.local:5000"},
    "store": {"uri": "s3://sslmem/store"},
    "s3": {"endpoint": "minio.minio.svc.cluster.local:9000", "secure": False},
    "webhook": {"secret": {"existingSecret": "sslmem-webhook"}},
    "apiToken": {"existingSecret": "sslmem-api-token"},
}
QUICKSTART: dict[str, Any] = {"quickstart": {"enabled": True}}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """BASE with OVERRIDE merged in, recursively (as helm merges values files)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(Kind/name, pod spec) of every workload among the rendered objects."""
    return [
        (describe(o), o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    ]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("values", [EXTERNAL, QUICKSTART], ids=["external", "quickstart"])
def test_every_container_is_restricted(helm: Helm, values: dict[str, Any]) -> None:
    objects = render(helm, values=values)
    pods = pod_specs(objects)
    # The service and the hook Job always; quick-start adds PostgreSQL, MinIO and MLflow.
    assert len(pods) == (2 if values is EXTERNAL else 5), [name for name, _ in pods]
    for name, spec in pods:
        pod_ctx = spec["securityContext"]
        assert spec["automountServiceAccountToken"] is False, name
        assert pod_ctx["runAsNonRoot"] is True, name
        assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in containers(spec):
            where = f"{name} container {c['name']}"
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["runAsNonRoot"] is True, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
            uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, where  # numeric, so the kubelet can verify it
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where} {kind}"
        # A read-only root needs a writable /tmp: every container mounts one from an emptyDir.
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in containers(spec):
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{name} {c['name']} /tmp"


def test_sslmem_pods_run_as_the_image_user(helm: Helm) -> None:
    # deploy/Dockerfile creates user and group 10001; fsGroup makes the emptyDirs theirs.
    objects = render(helm, values=EXTERNAL)
    for kind in ("Deployment", "Job"):
        spec = the(objects, kind)["spec"]["template"]["spec"]
        ctx = spec["securityContext"]
        assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) == (10001, 10001, 10001)
        assert spec["serviceAccountName"] == "sslmem"


def test_service_account_has_no_token_and_no_rbac(helm: Helm) -> None:
    objects = render(helm, values=EXTERNAL)
    assert the(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    rbac = [
        o
        for o in objects
        if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    ]
    assert rbac == []


def test_probes_use_healthz_and_readyz_on_the_service_port(helm: Helm) -> None:
    objects = render(helm, values=EXTERNAL, set={"service.port": 9090})
    container = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sslmem", "serve"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # The named port is the one the service listens on (SSLMEM_SERVICE_PORT) and binds all
    # interfaces, or the kubelet's probes could not reach it.
    assert container["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    config = the(objects, "ConfigMap", "sslmem")["data"]
    assert config["SSLMEM_SERVICE_PORT"] == "9090"
    assert config["SSLMEM_SERVICE_HOST"] == "0.0.0.0"
    service = the(objects, "Service", "sslmem")
    assert service["spec"]["ports"][0]["port"] == 9090
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_gpu_values_reach_the_scoring_pod(helm: Helm) -> None:
    # The same node pool settings as the pipeline's train step (deploy/platform.example.yaml).
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    objects = render(
        helm,
        values={
            **EXTERNAL,
            "resources": {
                "requests": {"cpu": "2", "memory": "8Gi"},
                "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1},
            },
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [toleration],
            "settings": {"device": "cuda"},
        },
    )
    spec = the(objects, "Deployment")["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [toleration]
    assert the(objects, "ConfigMap", "sslmem")["data"]["SSLMEM_SERVICE_DEVICE"] == "cuda"
    # The hook Job needs no GPU.
    job = the(objects, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in job["resources"]["limits"]


def test_no_gpu_by_default(helm: Helm) -> None:
    objects = render(helm, values=EXTERNAL)
    for name, spec in pod_specs(objects):
        for c in containers(spec):
            assert "nvidia.com/gpu" not in c["resources"].get("limits", {}), name
        assert "nodeSelector" not in spec, name
    assert find(objects, "ConfigMap", "sslmem")[0]["data"].get("SSLMEM_SERVICE_DEVICE") is None
