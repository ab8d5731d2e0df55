"""The chart and the service's intake settings: every SSLMEM_SERVICE_* name it sets is a setting,
no Service-link look-alikes, JSON logs, and the optional previous webhook secret."""

from __future__ import annotations

import re
from typing import Any

from sslmem.service.settings import valid_env_names
from tests.helm.render import Helm, find, render, the
from tests.helm.test_chart_security import EXTERNAL, QUICKSTART

WITH_PREVIOUS = {
    **EXTERNAL,
    "webhook": {"secret": {"existingSecret": "hmac", "previous": {"key": "old"}}},
}


def _pod(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = the(objects, kind)["spec"]["template"]["spec"]
    return spec


def test_every_service_variable_rendered_is_a_setting(helm: Helm) -> None:
    for values in (EXTERNAL, QUICKSTART, WITH_PREVIOUS):
        rendered = repr(render(helm, values=values))
        names = set(re.findall(r"SSLMEM_SERVICE_[A-Z0-9_]+", rendered))
        assert "SSLMEM_SERVICE_LOG_FORMAT" in names
        assert names <= set(valid_env_names()), sorted(names - set(valid_env_names()))


def test_no_service_links_and_json_logs(helm: Helm) -> None:
    objects = render(helm, values=EXTERNAL)
    for kind in ("Deployment", "Job"):
        assert _pod(objects, kind)["enableServiceLinks"] is False, kind
    config = [c for c in find(objects, "ConfigMap") if "SSLMEM_SERVICE_PORT" in c.get("data", {})]
    assert [c["data"]["SSLMEM_SERVICE_LOG_FORMAT"] for c in config] == ["json"]


def test_previous_secret_is_an_optional_file_of_the_service_only(helm: Helm) -> None:
    objects = render(helm, values=WITH_PREVIOUS)
    pod = _pod(objects, "Deployment")
    container = pod["containers"][0]
    volume = {v["name"]: v for v in pod["volumes"]}["webhook-secret-previous"]["secret"]
    assert volume["secretName"] == "hmac" and volume["optional"] is True
    [item] = volume["items"]
    assert item["key"] == "old"
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    expected = f"{mount['webhook-secret-previous']}/{item['path']}"
    assert env["SSLMEM_SERVICE_WEBHOOK_SECRET_PREVIOUS_FILE"] == expected
    job = _pod(objects, "Job")
    assert "webhook-secret-previous" not in {v["name"] for v in job["volumes"]}
    # Without a previous key nothing changes.
    plain = _pod(
        render(helm, values={**EXTERNAL, "webhook": {"secret": {"existingSecret": "hmac"}}}),
        "Deployment",
    )
    assert "webhook-secret-previous" not in {v["name"] for v in plain["volumes"]}
