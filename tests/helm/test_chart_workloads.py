"""The hook Job, the settings the pods read, and the config checksum that restarts them.

The hook command is parsed with sslmem's own CLI parser (a flag the CLI does not know would fail
here, not on the cluster); the rendered settings are loaded by the service's own settings
classes; the pipeline ConfigMap's keys are those pipelines/platform.py maps to variables.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sslmem.cli import build_parser, command_of
from sslmem.config import RuntimeSettings
from sslmem.pipelines.platform import PlatformConfig
from sslmem.service.settings import ENV_PREFIX, ServiceSettings
from tests.helm.render import Helm, render, the
from tests.helm.test_chart_security import EXTERNAL, QUICKSTART, merged
from tests.servers import WEBHOOK_SERVER_ENV, MlflowServer, start_mlflow_server


def hook_job(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return the(objects, "Job", "sslmem-webhook-ensure")


def sslmem_argv(command: list[str]) -> list[str]:
    """The `sslmem ...` argv inside the hook's retry wrapper
    (`/bin/sh -c SCRIPT webhook-ensure WINDOW TRY_TIMEOUT sslmem ...`)."""
    assert command[:2] == ["/bin/sh", "-c"] and command[3] == "webhook-ensure", command[:4]
    return command[6:]


def test_hook_job_runs_webhook_ensure_after_install_and_upgrade(helm: Helm) -> None:
    objects = render(helm, values=EXTERNAL)
    job = hook_job(objects)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    # Kept after success: its log may hold the warning of a registration that gave up.
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    container = job["spec"]["template"]["spec"]["containers"][0]
    # release "sslmem" in namespace "sslmem": Service sslmem, port 8080
    assert sslmem_argv(container["command"]) == [
        "sslmem",
        "webhook",
        "ensure",
        "--url",
        "http://sslmem.sslmem.svc:8080/v1/webhooks/mlflow",
        "--name",
        "sslmem-scoring",
    ]
    argv = sslmem_argv(container["command"])[1:]
    args = build_parser(command_of(argv)).parse_args(argv)  # exits on an unknown flag
    assert (args.url, args.name) == (
        "http://sslmem.sslmem.svc:8080/v1/webhooks/mlflow",
        "sslmem-scoring",
    )
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # Same image and hardening as the service, and the same settings and webhook secret file
    # (the sender and the receiver share one setting).
    service = the(objects, "Deployment")["spec"]["template"]["spec"]
    served = service["containers"][0]
    assert container["image"] == served["image"] == "ghcr.io/sslmem/sslmem:0.1.0"
    assert container["securityContext"] == served["securityContext"]
    assert job["spec"]["template"]["spec"]["securityContext"] == service["securityContext"]
    assert container["envFrom"] == served["envFrom"]
    job_env = {e["name"]: e for e in container["env"]}
    served_env = {e["name"]: e for e in served["env"]}
    assert (
        job_env["SSLMEM_SERVICE_WEBHOOK_SECRET_FILE"]
        == served_env["SSLMEM_SERVICE_WEBHOOK_SECRET_FILE"]
    )


def job_environment(
    objects: list[dict[str, Any]], secrets: dict[str, dict[str, str]], root: Path
) -> dict[str, str]:
    """The hook container's environment and files as the kubelet would set them up, under ROOT.

    Variables come from its ConfigMaps and `env`; a Secret reference is looked up in SECRETS (a
    reference to any other Secret raises KeyError), Secret volumes become files below ROOT, and a
    variable holding a path inside a mount is moved below ROOT with it.
    """
    spec = hook_job(objects)["spec"]["template"]["spec"]
    [container] = spec["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(the(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    for mount in container["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if "secret" in volumes[mount["name"]]:
            secret = volumes[mount["name"]]["secret"]
            for item in secret["items"]:
                (target / item["path"]).write_text(secrets[secret["secretName"]][item["key"]])
    for name, value in env.items():
        if any(value == m or value.startswith(m + "/") for m in mounts):
            env[name] = str(root / value.lstrip("/"))
    return env


@pytest.fixture(scope="module")
def hook_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` that accepts registry webhooks (as the quick-start one does)."""
    from cryptography.fernet import Fernet

    root = tmp_path_factory.mktemp("hook-mlflow")
    env = {
        **WEBHOOK_SERVER_ENV,
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    with start_mlflow_server(root, str(root / "artifacts"), env=env) as server:
        yield server


@pytest.mark.slow
def test_hook_job_has_what_webhook_ensure_needs_and_nothing_else(
    helm: Helm, hook_mlflow: MlflowServer, tmp_path: Path
) -> None:
    # One try (no retry window) with time enough on the shared, loaded test machine: a timed-out
    # try would end in the wrapper's warning, not in a registration.
    one_try = {"retryWindowS": 0, "attemptTimeoutS": 250, "activeDeadlineSeconds": 280}
    objects = render(helm, values=merged(EXTERNAL, {"webhook": {"ensure": one_try}}))
    job = hook_job(objects)["spec"]["template"]["spec"]
    # Nothing else: the only Secrets it can read are MLflow's credentials and the webhook secret.
    [container] = job["containers"]
    referenced = {
        var["valueFrom"]["secretKeyRef"]["name"] for var in container["env"] if "valueFrom" in var
    } | {v["secret"]["secretName"] for v in job["volumes"] if "secret" in v}
    assert referenced == {"sslmem-mlflow", "sslmem-webhook"}
    # What it needs: with only those two Secrets, the Job's own command and environment register
    # the webhook in a real MLflow server. The one substitution: the server's address, since the
    # cluster DNS name of the values cannot resolve here.
    secrets = {
        "sslmem-mlflow": {"username": "sslmem", "password": "mlflow-pass"},
        "sslmem-webhook": {"webhook-secret": "hook-secret-7d1f0c"},
    }
    env = job_environment(objects, secrets, tmp_path)
    assert env["SSLMEM_MLFLOW_TRACKING_URI"] == EXTERNAL["mlflow"]["trackingUri"]
    env["SSLMEM_MLFLOW_TRACKING_URI"] = hook_mlflow.url
    command = container["command"]
    # The Job's whole command, retry wrapper included (/bin/sh, coreutils timeout), with the
    # venv's console script first on PATH as /opt/venv/bin is in the image.
    done = subprocess.run(
        command,
        env={**env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "webhook 'sslmem-scoring' " in done.stdout, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    assert "hook-secret-7d1f0c" not in done.stdout + done.stderr
    from mlflow import MlflowClient

    [hook] = [
        h
        # registry_uri too: an earlier test may have set the process-wide registry URI.
        for h in MlflowClient(
            tracking_uri=hook_mlflow.url, registry_uri=hook_mlflow.url
        ).list_webhooks(max_results=100)
        if h.name == "sslmem-scoring"
    ]
    assert hook.url == "http://sslmem.sslmem.svc:8080/v1/webhooks/mlflow"


def test_hook_url_port_events_and_opt_out(helm: Helm) -> None:
    objects = render(
        helm,
        values=merged(
            EXTERNAL,
            {
                "service": {"port": 9000},
                "webhook": {"ensure": {"events": ["model_version.created"], "name": "scoring"}},
            },
        ),
        namespace="ml",
    )
    command = sslmem_argv(hook_job(objects)["spec"]["template"]["spec"]["containers"][0]["command"])
    assert command[3:] == [
        "--url",
        "http://sslmem.ml.svc:9000/v1/webhooks/mlflow",
        "--name",
        "scoring",
        "--events",
        "model_version.created",
    ]
    args = build_parser("webhook").parse_args(command[1:])
    assert args.events == ["model_version.created"]
    objects = render(helm, values=merged(EXTERNAL, {"webhook": {"ensure": {"enabled": False}}}))
    assert [o for o in objects if o["kind"] == "Job"] == []


def test_quickstart_hook_targets_the_quickstart_mlflow(helm: Helm) -> None:
    objects = render(helm, values=QUICKSTART)
    config = the(objects, "ConfigMap", "sslmem")["data"]
    assert config["SSLMEM_MLFLOW_TRACKING_URI"] == "http://sslmem-mlflow.sslmem.svc:5000"
    mlflow = the(objects, "Service", "sslmem-mlflow")
    assert mlflow["spec"]["ports"][0]["port"] == 5000
    server = the(objects, "Deployment", "sslmem-mlflow")["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = {e["name"]: e for e in server["env"]}
    # docs/service.md: the three MLflow server settings webhooks need
    assert env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"]["value"] == "http,https"
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"]["value"] == "true"
    key_ref = env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"]
    assert key_ref == {"name": "sslmem-mlflow-encryption", "key": "encryption-key"}
    command = server["command"]
    assert command[:2] == ["mlflow", "server"]
    backend = command[command.index("--backend-store-uri") + 1]
    assert backend == "postgresql://mlflow:$(POSTGRES_PASSWORD)@sslmem-postgresql:5432/mlflow"
    assert the(objects, "Service", "sslmem-postgresql")["spec"]["ports"][0]["port"] == 5432
    assert command[command.index("--artifacts-destination") + 1].startswith("s3://mlflow/")
    # the service's own Host header must pass MLflow's DNS-rebinding check
    assert "sslmem-mlflow.sslmem*" in command[command.index("--allowed-hosts") + 1].split(",")


def service_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    return dict(the(objects, "ConfigMap", "sslmem")["data"])


def test_rendered_settings_load_in_the_service(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        **EXTERNAL,
        "settings": {
            "reconcileIntervalS": 15,
            "leaseTtlS": 90,
            "leaseRenewS": 20,
            "configOverrides": ["scoring.views=8"],
            "policy": {"alpha": 0.05, "budget_mean": 0.2},
            "championAlias": "prod",
        },
    }
    env = service_env(render(helm, values=values))
    # every variable is one the service or the runtime reads (extra="ignore" would hide a typo)
    known_service = {f"{ENV_PREFIX}{name.upper()}" for name in ServiceSettings.model_fields}
    known_runtime = {f"SSLMEM_{name.upper()}" for name in RuntimeSettings.model_fields}
    others = {"MLFLOW_S3_ENDPOINT_URL", "XDG_CACHE_HOME", "HOME"}
    assert set(env) - known_service - known_runtime - others == set()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ServiceSettings.load()
    assert settings.host == "0.0.0.0" and settings.port == 8080
    assert settings.reconcile_interval_s == 15
    assert (settings.lease_ttl_s, settings.lease_renew_s) == (90, 20)
    assert settings.config_overrides == ["scoring.views=8"]
    assert settings.policy == {"alpha": 0.05, "budget_mean": 0.2}
    assert settings.champion_alias == "prod"
    runtime = RuntimeSettings()
    assert runtime.mlflow_tracking_uri == "http://mlflow.mlflow.svc.cluster.local:5000"
    assert runtime.store_uri == "s3://sslmem/store"
    assert runtime.s3_endpoint == "minio.minio.svc.cluster.local:9000"
    assert runtime.s3_secure is False


def test_pipeline_config_map_has_the_keys_the_pipeline_reads(helm: Helm) -> None:
    objects = render(helm, values=EXTERNAL)
    data = the(objects, "ConfigMap", "sslmem-config")["data"]
    [config_map] = PlatformConfig().config_maps  # the pipeline's default: optional sslmem-config
    assert config_map.name == "sslmem-config"
    assert set(data) == set(config_map.env.values())
    # each key carries what its variable means in the service's own settings
    env = service_env(objects)
    for variable, key in config_map.env.items():
        assert data[key] == env.get(variable, ""), variable
    # and the Secrets the service reads are the pipeline's defaults
    deployment_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in the(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    for secret in PlatformConfig().secrets:
        for variable, key in secret.env.items():
            ref = deployment_env[variable]
            assert (ref["name"], ref["key"]) == (secret.name, key), variable


def checksum(objects: list[dict[str, Any]]) -> str:
    annotations = the(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations["checksum/config"]
    return value


def test_checksum_changes_with_the_config_only(helm: Helm) -> None:
    base = checksum(render(helm, values=EXTERNAL))
    assert len(base) == 64
    changed = checksum(render(helm, values=EXTERNAL, set={"settings.reconcileIntervalS": 30}))
    uri = checksum(render(helm, values=EXTERNAL, set={"mlflow.trackingUri": "http://other:5000"}))
    scaled = checksum(render(helm, values=EXTERNAL, set={"replicaCount": 3}))
    assert changed != base and uri != base and uri != changed
    assert scaled == base  # scaling is not a config change: no needless restart
