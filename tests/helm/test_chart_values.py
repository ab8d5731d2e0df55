"""Values: the schema rejects bad input readably, contradictions fail with a fix, all documented.

The messages asserted are what `helm install` prints to the user (helm 3 and helm 4 word schema
errors differently; both must name the offending key).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.helm.render import CHART_DIR, Helm, HelmError, render
from tests.helm.test_chart_security import EXTERNAL, QUICKSTART, merged


def error_of(helm: Helm, values: dict[str, Any]) -> str:
    with pytest.raises(HelmError) as caught:
        render(helm, values=values)
    return caught.value.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            merged(QUICKSTART, {"mlflow": {"trackingUri": "http://mlflow:5000"}}),
            "quickstart.enabled=true brings its own MLflow server: unset mlflow.trackingUri",
        ),
        (
            merged(QUICKSTART, {"s3": {"endpoint": "minio:9000"}}),
            "quickstart.enabled=true brings its own MinIO: unset s3.endpoint",
        ),
        ({}, "mlflow.trackingUri is required"),
        (merged(EXTERNAL, {"store": {"uri": ""}}), "store.uri is required"),
        (
            merged(EXTERNAL, {"webhook": {"secret": {"existingSecret": ""}}}),
            "webhook.ensure.enabled=true needs the webhook HMAC secret",
        ),
        (
            merged(EXTERNAL, {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}),
            "podDisruptionBudget: set minAvailable or maxUnavailable, not both",
        ),
        (
            merged(EXTERNAL, {"settings": {"leaseTtlS": 50, "leaseRenewS": 30}}),
            "settings.leaseRenewS (30) must be at most half of settings.leaseTtlS (50)",
        ),
    ],
    ids=[
        "quickstart+trackingUri",
        "quickstart+s3",
        "no-mlflow",
        "no-store",
        "ensure-without-secret",
        "pdb-both",
        "lease-renewal",
    ],
)
def test_contradictions_fail_with_a_fix(helm: Helm, values: dict[str, Any], message: str) -> None:
    assert message in error_of(helm, values)


def test_consistent_alternatives_render(helm: Helm) -> None:
    render(
        helm,
        values=merged(
            EXTERNAL, {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": None}}
        ),
    )
    render(
        helm,
        values=merged(
            EXTERNAL, {"webhook": {"secret": {"existingSecret": ""}, "ensure": {"enabled": False}}}
        ),
    )
    render(helm, values=merged(EXTERNAL, {"settings": {"leaseTtlS": 60, "leaseRenewS": 30}}))


def test_schema_rejects_a_wrong_type(helm: Helm) -> None:
    message = error_of(helm, merged(EXTERNAL, {"replicaCount": "two"}))
    assert "values don't meet the specifications of the schema" in message
    assert "replicaCount" in message
    assert re.search(r"Expected: integer, given: string|got string, want integer", message)


def test_schema_rejects_an_unknown_key_with_its_path(helm: Helm) -> None:
    message = error_of(helm, merged(EXTERNAL, {"settings": {"reconcileInterval": 30}}))
    assert "reconcileInterval" in message
    assert "settings" in message
    assert re.search(r"[Aa]dditional propert(y|ies)", message)


@pytest.mark.parametrize(
    "values",
    [
        {"monitoring": {"serviceMonitor": {"enabled": "yes"}}},
        {"monitoring": {"prometheusRule": {"alerts": {"SSLMemServiceDown": {"severity": "page"}}}}},
        {"monitoring": {"prometheusRule": {"alerts": {"SSLMemServiceDown": {"threshold": 1}}}}},
        {"monitoring": {"prometheusRule": {"alerts": {"SSLMemNoSuchAlert": {"enabled": False}}}}},
        {"service": {"port": 0}},
        {"settings": {"logLevel": "verbose"}},
        {"s3": {"endpoint": "http://minio:9000"}},  # host:port, not a URL
        {"webhook": {"secret": {"value": "s3cr3t"}}},  # no inline secrets
    ],
    ids=[
        "auto-enum",
        "severity-enum",
        "no-threshold-here",
        "unknown-alert",
        "port-min",
        "log-level",
        "s3-url",
        "inline-secret",
    ],
)
def test_schema_rejects(helm: Helm, values: dict[str, Any]) -> None:
    message = error_of(helm, merged(EXTERNAL, values))
    assert "values don't meet the specifications of the schema" in message


def test_every_value_is_documented() -> None:
    # helm-docs style: a "# -- text" comment directly above every leaf value (or its parent map).
    lines = (CHART_DIR / "values.yaml").read_text(encoding="utf-8").splitlines()
    documented: set[tuple[str, ...]] = set()
    path: list[str] = []
    pending = False
    for line in lines:
        if re.match(r"^\s*# -- ", line):
            pending = True
            continue
        if re.match(r"^\s*#", line) and pending:
            continue
        key = re.match(r"^(\s*)([A-Za-z0-9_./\"-]+):", line)
        if not key:
            pending = pending and line.strip() != ""
            continue
        depth = len(key.group(1)) // 2
        path = [*path[:depth], key.group(2).strip('"')]
        if pending:
            documented.add(tuple(path))
        pending = False
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    missing: list[str] = []

    def walk(node: Any, here: tuple[str, ...]) -> None:
        if here in documented:
            return
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, (*here, key))
        else:
            missing.append(".".join(here))

    walk(values, ())
    assert missing == []


def test_defaults_are_valid_against_the_schema(helm: Helm) -> None:
    # values.yaml itself passes the schema (helm validates the merged values, defaults included)
    render(helm, values=EXTERNAL)
    render(helm, values=QUICKSTART)


def values_comments() -> dict[str, str]:
    """The `# --` comment text above each key of values.yaml (continuation lines joined)."""
    comments: dict[str, str] = {}
    path: list[str] = []
    pending: list[str] | None = None
    for line in (CHART_DIR / "values.yaml").read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("# -- "):
            pending = [line.strip()[len("# -- ") :]]
            continue
        if line.strip().startswith("#"):
            if pending is not None:
                pending.append(line.strip().lstrip("#").strip())
            continue
        key = re.match(r"^(\s*)([A-Za-z0-9_./\"-]+):", line)
        if key:
            path = [*path[: len(key.group(1)) // 2], key.group(2).strip('"')]
            if pending is not None:
                comments[".".join(path)] = " ".join(pending)
        pending = None
    return comments


def schema_descriptions() -> dict[str, str]:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    found: dict[str, str] = {}

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        if "description" in node and path:
            found[".".join(path)] = node["description"]
        for key, sub in node.get("properties", {}).items():
            walk(sub, (*path, key))

    walk(schema, ())
    return found


def test_descriptions_are_sentences() -> None:
    # They are the Description column of docs/install.md's values table and what editors show.
    texts = {f"schema {k}": v for k, v in schema_descriptions().items()}
    texts |= {f"values.yaml {k}": v for k, v in values_comments().items()}
    assert len(texts) > 150  # both sources were read
    fragments = {k: v for k, v in texts.items() if not re.match(r"^[A-Z].*[.]$", v, re.S)}
    assert fragments == {}


def test_schema_descriptions_are_the_values_comments() -> None:
    # One text per key: the schema repeats the values.yaml comment (a copied description that
    # was never adapted, e.g. "Size of the MinIO volume." on the /tmp size, is caught here).
    comments = values_comments()
    descriptions = schema_descriptions()
    both = set(comments) & set(descriptions)
    assert len(both) > 150
    assert {k: descriptions[k] for k in both if descriptions[k] != comments[k]} == {}
