"""What a platform team checks before adopting the chart (issue 19), rendered by helm 3 and 4.

Typed security contexts with an explicit escape hatch, schema descriptions and defaults kept
equal to values.yaml, NetworkPolicy peers by namespace AND labels plus extra rules, the update
strategy and a default spread under any release name, monitoring `auto` with either API-version
form, a hook Job that cannot fail the release, offline-safe quick-start secrets and the `helm
test` pod. Rendered objects are validated against the Kubernetes schemas (oldest and newest
supported minor) and the Prometheus Operator's.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.render import (
    CHART_DIR,
    CI_VALUES_DIR,
    KUBE_VERSIONS,
    REPO,
    Helm,
    HelmError,
    find,
    render,
    the,
    validation_errors,
)
from tests.helm.test_chart_network import selects
from tests.helm.test_chart_security import EXTERNAL, QUICKSTART, merged

SYNC = REPO / "scripts" / "helm_schema_sync.py"
SM = "monitoring.coreos.com/v1/ServiceMonitor"
PR = "monitoring.coreos.com/v1/PrometheusRule"


def _valid(objects: list[dict[str, Any]]) -> None:
    for kube in KUBE_VERSIONS:
        assert validation_errors(objects, kube) == []


def _pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = the(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


# --- 1. security contexts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"podSecurityContext": {"runAsUser": 0}}, "runAsUser"),  # root
        ({"securityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"podSecurityContext": {"runAsNonRoot": None}}, "runAsNonRoot"),  # removed
        ({"securityContext": {"privileged": True}}, "privileged"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "add"),
        ({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, "drop"),
        ({"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}}, "type"),
        ({"podSecurityContext": {"runAsUsr": 10001}}, "runAsUsr"),  # misspelt
        ({"securityContext": {"readOnlyRootFilesytem": True}}, "readOnlyRootFilesytem"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unrestricted_security_contexts_are_refused(
    helm: Helm, override: dict[str, Any], where: str
) -> None:
    with pytest.raises(HelmError) as refused:
        render(helm, values=merged(EXTERNAL, override))
    message = refused.value.output
    # helm 3 says "podSecurityContext.runAsUser: ...", helm 4 "at '/podSecurityContext/...'":
    # either way the key and its context are named.
    context = next(iter(override))
    assert "values don't meet the specifications of the schema" in message
    assert context in message and where in message, message


def test_the_escape_hatch_renders_what_it_is_given(helm: Helm) -> None:
    unsafe = {
        "unsafeSecurityContext": True,
        "podSecurityContext": {"runAsUser": 0, "runAsNonRoot": False},
        "securityContext": {"privileged": True, "allowPrivilegeEscalation": True},
    }
    objects = render(helm, values={**EXTERNAL, **unsafe})
    spec = _pod_spec(objects)
    assert spec["securityContext"]["runAsUser"] == 0
    assert spec["containers"][0]["securityContext"]["privileged"] is True
    _valid(objects)


def test_restricted_contexts_may_drop_the_fixed_user(helm: Helm) -> None:
    # OpenShift's restricted SCC assigns the uid itself: removing runAsUser/runAsGroup/fsGroup
    # (null) stays within the schema, no escape hatch needed.
    ids = {"runAsUser": None, "runAsGroup": None}
    pod_ids = {**ids, "fsGroup": None}
    objects = render(
        helm, values=merged(EXTERNAL, {"podSecurityContext": pod_ids, "securityContext": ids})
    )
    assert "runAsUser" not in _pod_spec(objects)["securityContext"]
    assert _pod_spec(objects)["securityContext"]["runAsNonRoot"] is True


# --- 2. schema descriptions and defaults ----------------------------------------------------------


def _sync(chart: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SYNC), "--chart", str(chart), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_schema_descriptions_and_defaults_equal_values_yaml() -> None:
    done = _sync(CHART_DIR, "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    interval = schema["properties"]["monitoring"]["properties"]["serviceMonitor"]["properties"]
    assert interval["interval"]["default"] == values["monitoring"]["serviceMonitor"]["interval"]
    descriptions: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("description"), str):
                descriptions.append(node["description"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(schema)
    assert descriptions.count("Size of the MinIO volume.") == 1  # minioSize, and only it


def _chart_copy(tmp_path: Path) -> Path:
    chart = tmp_path / "sslmem"
    shutil.copytree(CHART_DIR, chart)
    return chart


def test_sync_check_fails_on_a_drifted_default_or_description(tmp_path: Path) -> None:
    chart = _chart_copy(tmp_path)
    path = chart / "values.schema.json"
    schema = json.loads(path.read_text())
    monitor = schema["properties"]["monitoring"]["properties"]["serviceMonitor"]["properties"]
    monitor["interval"]["default"] = "10s"
    schema["properties"]["replicaCount"]["description"] = "Replicas."
    path.write_text(json.dumps(schema))
    done = _sync(chart, "--check")
    assert done.returncode == 1
    assert "monitoring.serviceMonitor.interval: default '10s' -> '30s'" in done.stdout
    assert "replicaCount: description 'Replicas.'" in done.stdout
    assert "make helm-schema-sync" in done.stderr
    assert _sync(chart, "--write").returncode == 0
    assert _sync(chart, "--check").returncode == 0


def test_sync_refuses_a_description_copied_from_another_key(tmp_path: Path) -> None:
    chart = _chart_copy(tmp_path)
    path = chart / "values.schema.json"
    schema = json.loads(path.read_text())
    cpu = schema["properties"]["resources"]["properties"]["requests"]["properties"]["cpu"]
    cpu["description"] = "Size of the MinIO volume."
    path.write_text(json.dumps(schema))
    done = _sync(chart, "--check")
    assert done.returncode == 2
    assert "resources.requests.cpu (described as quickstart.persistence.minioSize)" in done.stderr


# --- 3. network policy ---------------------------------------------------------------------------


def test_ingress_peers_need_namespace_and_labels_and_extra_rules_land(helm: Helm) -> None:
    caller = {
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml-ci"}},
                "podSelector": {"matchLabels": {"app": "promoter"}},
            }
        ],
        "ports": [{"port": "http", "protocol": "TCP"}],
    }
    proxy = {"to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}], "ports": [{"port": 3128}]}
    values = merged(EXTERNAL, {"networkPolicy": {"extraIngress": [caller], "extraEgress": [proxy]}})
    objects = render(helm, values=values)
    spec = the(objects, "NetworkPolicy", "sslmem")["spec"]
    mlflow, prometheus, helm_test, extra = spec["ingress"]
    # One peer each with both selectors: a pod needs the labels AND to live in that namespace.
    assert mlflow["from"] == [
        {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlflow"}},
        }
    ]
    assert prometheus["from"] == [
        {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        }
    ]
    test_pod = the(objects, "Pod", "sslmem-test")
    [peer] = helm_test["from"]
    assert selects(peer["podSelector"], test_pod["metadata"]["labels"])
    assert "namespaceSelector" not in peer  # the release namespace only
    assert extra == caller
    assert spec["egress"][-1] == proxy
    _valid(objects)
    # Without the helm test pod, no rule for it.
    objects = render(helm, values=merged(values, {"helmTest": {"enabled": False}}))
    assert len(the(objects, "NetworkPolicy", "sslmem")["spec"]["ingress"]) == 3
    assert find(objects, "Pod") == []


# --- 4. scheduling -------------------------------------------------------------------------------


def test_rolling_update_by_default_and_recreate_with_the_gpu_values(helm: Helm) -> None:
    default = the(render(helm, values=EXTERNAL), "Deployment")["spec"]["strategy"]
    assert default == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    gpu = render(helm, [CI_VALUES_DIR / "gpu-values.yaml"])
    assert the(gpu, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}  # no rollingUpdate
    _valid(gpu)
    surge0 = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    objects = render(helm, values={**EXTERNAL, "strategy": surge0})
    assert the(objects, "Deployment")["spec"]["strategy"] == surge0
    with pytest.raises(HelmError, match="strategy"):
        render(helm, values={**EXTERNAL, "strategy": {"type": "BlueGreen"}})


@pytest.mark.parametrize("length", [52, 53])
def test_long_release_names_render_valid_objects_that_spread_their_own_pods(
    helm: Helm, length: int
) -> None:
    release = ("sslmem-prod" + "-scoring" * 6)[:length].rstrip("-").ljust(length, "x")
    assert len(release) == length
    objects = render(helm, [CI_VALUES_DIR / "production-values.yaml"], release=release)
    _valid(objects)
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
    deployment = the(objects, "Deployment")
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    # The production values' zone constraint (no selector there) and the default node spread.
    assert [c["topologyKey"] for c in constraints] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    for constraint in constraints:
        assert selects(constraint["labelSelector"], pods)
        assert constraint["labelSelector"] == deployment["spec"]["selector"]
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    # The hook Job's pods are not counted by the spread.
    hook = the(objects, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not selects(constraints[0]["labelSelector"], hook)


def test_a_60_character_release_name_is_refused_by_helm(helm: Helm) -> None:
    with pytest.raises(HelmError) as refused:
        render(helm, values=EXTERNAL, release="r" * 60)
    assert "release name" in refused.value.output.lower()


def test_spread_defaults_and_overrides(helm: Helm) -> None:
    [default] = _pod_spec(render(helm, values=EXTERNAL))["topologySpreadConstraints"]
    assert (default["topologyKey"], default["maxSkew"]) == ("kubernetes.io/hostname", 1)
    assert "topologySpreadConstraints" not in _pod_spec(
        render(helm, values={**EXTERNAL, "spreadAcrossNodes": False})
    )
    # A given hostname constraint replaces the default one; its own selector is kept.
    own = {
        "maxSkew": 2,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"team": "ml"}},
    }
    spec = _pod_spec(render(helm, values={**EXTERNAL, "topologySpreadConstraints": [own]}))
    assert spec["topologySpreadConstraints"] == [own]


# --- 5. monitoring auto --------------------------------------------------------------------------


@pytest.mark.slow  # the operator validator (node) on each render
@pytest.mark.parametrize(
    "apis",
    [[SM, PR], ["monitoring.coreos.com/v1"], []],
    ids=["kind-qualified", "group-version", "none"],
)
def test_monitoring_auto_accepts_either_api_version_form(
    helm: Helm, apis: list[str], operator_validator: None
) -> None:
    objects = render(helm, values=EXTERNAL, api_versions=apis)
    kinds = {o["kind"] for o in objects}
    expected = {"ServiceMonitor", "PrometheusRule"} if apis else set()
    assert kinds & {"ServiceMonitor", "PrometheusRule"} == expected
    _valid(objects)


@pytest.mark.parametrize("monitor", ["serviceMonitor", "prometheusRule"])
def test_monitoring_true_without_the_crds_fails_the_render(helm: Helm, monitor: str) -> None:
    with pytest.raises(HelmError) as refused:
        render(helm, values=merged(EXTERNAL, {"monitoring": {monitor: {"enabled": True}}}))
    message = refused.value.output
    assert f"monitoring.{monitor}.enabled=true but the cluster does not serve" in message
    assert "--api-versions monitoring.coreos.com/v1" in message
    objects = render(
        helm,
        values=merged(EXTERNAL, {"monitoring": {monitor: {"enabled": True}}}),
        api_versions=["monitoring.coreos.com/v1"],
    )
    assert monitor[0].upper() + monitor[1:] in {o["kind"] for o in objects}


# --- 6. the webhook hook -------------------------------------------------------------------------


def test_hook_deadline_sits_inside_helms_default_timeout(helm: Helm) -> None:
    job = the(render(helm, values=EXTERNAL), "Job")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    window, per_try = int(command[4]), int(command[5])
    deadline = job["spec"]["activeDeadlineSeconds"]
    assert window + per_try + 15 <= deadline < 300  # helm's --timeout defaults to 5 minutes
    with pytest.raises(HelmError, match=r"retryWindowS \(280\) \+ attemptTimeoutS \(60\)"):
        render(helm, values=merged(EXTERNAL, {"webhook": {"ensure": {"retryWindowS": 280}}}))


@pytest.mark.parametrize("reachable", [False, True], ids=["failing", "succeeding"])
def test_hook_command_exits_zero_whatever_the_registration_does(
    helm: Helm, tmp_path: Path, reachable: bool
) -> None:
    # The rendered wrapper, run by a real /bin/sh with coreutils' timeout, around a stand-in for
    # `sslmem` that fails (MLflow unreachable) or succeeds; a 1 s window keeps it to one try.
    values = merged(EXTERNAL, {"webhook": {"ensure": {"retryWindowS": 1, "attemptTimeoutS": 5}}})
    command = the(render(helm, values=values), "Job")["spec"]["template"]["spec"]["containers"][0][
        "command"
    ]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "sslmem"
    stand_in.write_text(
        f'#!/bin/sh\necho "tried: $*" >> {tmp_path}/tries\nexit {0 if reachable else 3}\n'
    )
    stand_in.chmod(0o755)
    done = subprocess.run(
        command,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    tries = (tmp_path / "tries").read_text().splitlines()
    assert command[6] == "sslmem"
    assert tries == [f"tried: {' '.join(command[7:])}"]
    assert ("WARNING: the MLflow webhook was not registered" in done.stderr) is not reachable


# --- 7. secrets, NOTES, helm test ---------------------------------------------------------------


def test_quick_start_without_generated_secrets_renders_none(helm: Helm) -> None:
    generated = render(helm, values=QUICKSTART)
    names = {o["metadata"]["name"] for o in find(generated, "Secret")}
    assert len(names) == 5
    objects = render(helm, values=merged(QUICKSTART, {"quickstart": {"generateSecrets": False}}))
    assert find(objects, "Secret") == []
    # Two offline renders agree (nothing random is left), and the pods still name those Secrets.
    again = render(
        helm, values=merged(QUICKSTART, {"quickstart": {"generateSecrets": False, "enabled": True}})
    )
    assert again == objects
    referenced = json.dumps(objects)
    for name in names:
        assert f'"{name}"' in referenced, name
    _valid(objects)


def test_helm_test_pod_reads_readyz_and_metrics_of_the_service(helm: Helm) -> None:
    objects = render(helm, values=merged(EXTERNAL, {"service": {"port": 9090}}), namespace="ml")
    pod = the(objects, "Pod", "sslmem-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    assert (
        container["image"]
        == the(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    assert container["command"][:2] == ["python", "-c"]
    assert container["command"][3] == "http://sslmem.ml.svc:9090"
    assert "/readyz" in container["command"][2] and "/metrics" in container["command"][2]
    assert container["securityContext"]["runAsNonRoot"] is True
    _valid(objects)


def _notes(all_helms: list[Helm], *sets: str) -> str:
    """NOTES.txt as `helm install --dry-run=client` prints it. Only helm 4 does that offline
    (helm 3's client dry run still asks the cluster for its version), so helm 4 renders it."""
    [helm] = [h for h in all_helms if h.major >= 4]
    args = ["install", "sslmem", str(CHART_DIR), "--namespace", "sslmem", "--dry-run=client"]
    with_values = EXTERNAL
    flat = {
        "mlflow.trackingUri": with_values["mlflow"]["trackingUri"],
        "store.uri": with_values["store"]["uri"],
        "s3.endpoint": with_values["s3"]["endpoint"],
        "webhook.secret.existingSecret": "sslmem-webhook",
    }
    for key, value in flat.items():
        args += ["--set", f"{key}={value}"]
    for s in sets:
        args += ["--set", s]
    output = helm.run(*args)
    return output.split("NOTES:", 1)[1]


@pytest.mark.parametrize(
    ("sets", "warned"),
    [
        ((), True),
        (("image.tag=latest",), True),
        (("image.digest=sha256:" + "a" * 64,), False),
    ],
    ids=["app-version-tag", "latest", "digest"],
)
def test_notes_warn_about_rolling_tags(
    all_helms: list[Helm], sets: tuple[str, ...], warned: bool
) -> None:
    notes = _notes(all_helms, *sets)
    assert ("is not pinned by digest" in notes) is warned
    assert ('"latest" moves with every push' in notes) is ("image.tag=latest" in sets)


class _Service(http.server.BaseHTTPRequestHandler):
    """/readyz with a chosen status and /metrics with the service's real exposition."""

    ready = 200
    metrics = b""

    def do_GET(self) -> None:
        status, body = (self.ready, b"ok") if self.path == "/readyz" else (200, self.metrics)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow  # importing the service to render its real /metrics
@pytest.mark.parametrize(
    ("ready", "real_metrics", "passes"),
    [(200, True, True), (503, True, False), (200, False, False)],
    ids=["ready", "not-ready", "no-sslmem-metrics"],
)
def test_helm_test_program_passes_only_a_ready_service_with_sslmem_metrics(
    helm: Helm, ready: int, real_metrics: bool, passes: bool
) -> None:
    from sslmem.service.metrics import ServiceMetrics

    [container] = the(render(helm, values=EXTERNAL), "Pod", "sslmem-test")["spec"]["containers"]
    handler = type(
        "Handler",
        (_Service,),
        {
            "ready": ready,
            "metrics": ServiceMetrics().render() if real_metrics else b"# TYPE up gauge\nup 1\n",
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        python, flag, program, _url = container["command"]
        done = subprocess.run(
            [sys.executable, flag, program, f"http://127.0.0.1:{server.server_address[1]}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert python == "python"
    assert (done.returncode == 0) is passes, done.stdout + done.stderr
    if passes:
        assert "/readyz 200" in done.stdout and "sslmem families" in done.stdout


def test_helm_package_names_the_chart_version_and_app_version_is_the_package(
    all_helms: list[Helm], tmp_path: Path
) -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    import sslmem

    # appVersion is the sslmem release the default image tag names (docs/install.md policy).
    assert chart["appVersion"] == sslmem.__version__
    for helm in all_helms:
        out = tmp_path / f"helm{helm.major}"
        helm.run("package", str(CHART_DIR), "--destination", str(out))
        [package] = out.iterdir()
        assert package.name == f"sslmem-{chart['version']}.tgz"
        shown = yaml.safe_load(helm.run("show", "chart", str(package)))
        assert (shown["version"], shown["appVersion"]) == (chart["version"], chart["appVersion"])
