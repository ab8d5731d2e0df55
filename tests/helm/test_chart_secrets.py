"""Credentials reach the pods only by reference to Secrets; the chart writes no secret value.

Outside quick-start mode the chart renders no Secret at all, and every credential variable or
file comes from the Secret named in values. In quick-start mode the only Secrets are the
generated ones, and their values appear nowhere else in the rendered manifests.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import yaml

from tests.helm.render import Helm, find, render, the
from tests.helm.test_chart_security import EXTERNAL, QUICKSTART, containers, pod_specs


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_no_secret_rendered_without_quickstart(helm: Helm) -> None:
    assert find(render(helm, values=EXTERNAL), "Secret") == []


def test_credentials_come_from_the_named_secrets(helm: Helm) -> None:
    values = {
        **EXTERNAL,
        "mlflow": {
            **EXTERNAL["mlflow"],
            "credentials": {"existingSecret": "ml-auth", "usernameKey": "u", "passwordKey": "p"},
        },
        "s3": {
            **EXTERNAL["s3"],
            "credentials": {"existingSecret": "obj", "accessKeyKey": "ak", "secretKeyKey": "sk"},
        },
        "webhook": {"secret": {"existingSecret": "hmac", "key": "h"}},
        "apiToken": {"existingSecret": "tok", "key": "t"},
    }
    objects = render(helm, values=values)
    mlflow = {
        "MLFLOW_TRACKING_USERNAME": ("ml-auth", "u"),
        "MLFLOW_TRACKING_PASSWORD": ("ml-auth", "p"),
    }
    s3 = {
        "SSLMEM_S3_ACCESS_KEY": ("obj", "ak"),
        "AWS_ACCESS_KEY_ID": ("obj", "ak"),
        "SSLMEM_S3_SECRET_KEY": ("obj", "sk"),
        "AWS_SECRET_ACCESS_KEY": ("obj", "sk"),
    }
    # The service reads MLflow and the object store; the hook Job talks to MLflow only.
    for kind, expected in (("Deployment", {**mlflow, **s3}), ("Job", mlflow)):
        spec = the(objects, kind)["spec"]["template"]["spec"]
        container = spec["containers"][0]
        env = env_of(container)
        referenced = {
            name: (
                var["valueFrom"]["secretKeyRef"]["name"],
                var["valueFrom"]["secretKeyRef"]["key"],
            )
            for name, var in env.items()
            if "secretKeyRef" in var.get("valueFrom", {})
        }
        assert referenced == expected, kind
        # The webhook secret is a file from Secret hmac/h, at the path the *_FILE variable names.
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        secret_volume = volumes["webhook-secret"]["secret"]
        assert secret_volume["secretName"] == "hmac"
        [item] = secret_volume["items"]
        assert item["key"] == "h"
        file_path = env["SSLMEM_SERVICE_WEBHOOK_SECRET_FILE"]["value"]
        assert file_path == f"{mounts['webhook-secret']}/{item['path']}"
    # Only the service needs the API token: the hook Job has no trace of it.
    job = the(objects, "Job")["spec"]["template"]["spec"]
    assert "tok" not in {v.get("secret", {}).get("secretName") for v in job["volumes"]}
    assert "SSLMEM_SERVICE_API_TOKEN_FILE" not in env_of(job["containers"][0])
    container = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    volume = {
        v["name"]: v for v in the(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }["api-token"]["secret"]
    assert volume["secretName"] == "tok" and volume["items"][0]["key"] == "t"
    assert env_of(container)["SSLMEM_SERVICE_API_TOKEN_FILE"]["value"].endswith(
        "/" + volume["items"][0]["path"]
    )


def test_no_credential_variable_holds_a_literal_value(helm: Helm) -> None:
    for values in (EXTERNAL, QUICKSTART):
        for name, spec in pod_specs(render(helm, values=values)):
            for c in containers(spec):
                for var in c.get("env", []):
                    if any(w in var["name"] for w in ("PASSWORD", "SECRET", "TOKEN", "ACCESS_KEY")):
                        # either a Secret reference or a path to a mounted Secret file
                        assert "valueFrom" in var or var["name"].endswith("_FILE"), (name, var)


def test_without_api_token_the_service_gets_none(helm: Helm) -> None:
    values = {**EXTERNAL, "apiToken": {"existingSecret": ""}}
    container = the(render(helm, values=values), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "SSLMEM_SERVICE_API_TOKEN_FILE" not in env_of(container)


def test_quickstart_secrets_are_generated_and_nowhere_else(helm: Helm) -> None:
    objects = render(helm, values=QUICKSTART)
    secrets = find(objects, "Secret")
    names = {s["metadata"]["name"] for s in secrets}
    assert names == {
        "sslmem-webhook",
        "sslmem-api-token",
        "sslmem-s3",  # the name the pipeline steps read (pipelines/platform.py)
        "sslmem-postgresql",
        "sslmem-mlflow-encryption",
    }
    assert all(
        s["metadata"]["labels"]["app.kubernetes.io/component"] == "quickstart-secrets"
        for s in secrets
    )
    values = [base64.b64decode(v).decode() for s in secrets for v in s["data"].values()]
    assert all(len(v) >= 20 for v in values)
    others = yaml.safe_dump_all([o for o in objects if o["kind"] != "Secret"])
    for value in values:
        assert value not in others
        assert base64.b64encode(value.encode()).decode() not in others


def test_quickstart_encryption_key_is_a_fernet_key(helm: Helm) -> None:
    from cryptography.fernet import Fernet  # an MLflow dependency

    secret = the(render(helm, values=QUICKSTART), "Secret", "sslmem-mlflow-encryption")
    key = base64.b64decode(secret["data"]["encryption-key"])
    token = Fernet(key).encrypt(b"webhook secret")  # raises on a malformed key
    assert Fernet(key).decrypt(token) == b"webhook secret"


def test_values_hold_no_credentials() -> None:
    # Every string value under a credential-ish key names a Secret or a key in one: the schema
    # (which rejects unknown keys) has no place for a secret itself.
    path = Path(__file__).resolve().parents[2] / "helm" / "sslmem" / "values.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    words = ("password", "token", "secret", "credential", "accesskey")
    naming = {"existingSecret", "key", "usernameKey", "passwordKey", "accessKeyKey", "secretKeyKey"}
    leaves: list[str] = []

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for key, sub in node.get("properties", {}).items():
            here = (*path, key)
            if "properties" in sub:
                walk(sub, here)
            elif sub.get("type") == "string" and any(w in ".".join(here).lower() for w in words):
                leaves.append(".".join(here))
                assert key in naming, f"{'.'.join(here)} would hold a credential"

    walk(schema, ())
    # the walk saw the four credentials (MLflow, S3, webhook HMAC secret, API token)
    assert {"mlflow.credentials.existingSecret", "s3.credentials.existingSecret"} <= set(leaves)
    assert {"webhook.secret.existingSecret", "apiToken.existingSecret"} <= set(leaves)


KEEP = "helm.sh/resource-policy"


def test_quickstart_persistence_keeps_the_secrets_with_the_volumes(helm: Helm) -> None:
    # The kept volumes hold data made with the generated credentials (PostgreSQL's password is
    # fixed at initdb, MLflow's stored webhook secret is encrypted with the encryption key), so a
    # reinstall can use the data only if the Secrets survive `helm uninstall` too.
    values = {**QUICKSTART, "quickstart": {"enabled": True, "persistence": {"enabled": True}}}
    objects = render(helm, values=values)
    claims = find(objects, "PersistentVolumeClaim")
    assert {c["metadata"]["name"] for c in claims} == {"sslmem-postgresql", "sslmem-minio"}
    kept = {
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o["metadata"].get("annotations", {}).get(KEEP) == "keep"
    }
    assert kept == {
        ("PersistentVolumeClaim", "sslmem-postgresql"),
        ("PersistentVolumeClaim", "sslmem-minio"),
        ("Secret", "sslmem-postgresql"),  # the password in PostgreSQL's data directory
        ("Secret", "sslmem-mlflow-encryption"),  # decrypts the webhook secret MLflow stored
        ("Secret", "sslmem-webhook"),  # the secret that stored webhook signs with
        ("Secret", "sslmem-s3"),  # MinIO's root user, owner of the kept objects
        ("Secret", "sslmem-api-token"),  # clients keep working after a reinstall
    }
    # PostgreSQL reads its password from the kept Secret and stores its data on the kept claim
    postgres = the(objects, "Deployment", "sslmem-postgresql")["spec"]["template"]["spec"]
    env = env_of(postgres["containers"][0])
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "sslmem-postgresql"
    claim_names = {
        v["persistentVolumeClaim"]["claimName"]
        for v in postgres["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claim_names == {"sslmem-postgresql"}


def test_quickstart_without_persistence_keeps_nothing(helm: Helm) -> None:
    objects = render(helm, values=QUICKSTART)
    assert find(objects, "PersistentVolumeClaim") == []
    assert [o for o in objects if KEEP in o["metadata"].get("annotations", {})] == []
