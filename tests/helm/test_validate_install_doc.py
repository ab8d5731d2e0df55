"""docs/install.md stays true to the chart: its values example and its Secret commands."""

from __future__ import annotations

import re
import shlex

import yaml

from tests.helm.render import CHART_DIR, CI_VALUES_DIR, REPO

DOC = (REPO / "docs" / "install.md").read_text()


def _section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else None]


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_values_example_is_the_ci_value_set() -> None:
    # The doc says the example is helm/sslmem/ci/existing-services-values.yaml, which CI renders
    # and validates; so the example a reader copies is known to install.
    [example] = _code_blocks(_section("Install with existing services"), "yaml")
    ci = yaml.safe_load((CI_VALUES_DIR / "existing-services-values.yaml").read_text())
    assert yaml.safe_load(example) == ci


def _created_secrets() -> dict[str, set[str]]:
    """{secret name: keys} of the `kubectl create secret generic` commands in the doc."""
    secrets: dict[str, set[str]] = {}
    for block in _code_blocks(_section("Create the Secrets"), "bash"):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words[:1] != ["kubectl"] or "secret" not in words:
                continue
            name = words[words.index("generic") + 1]
            secrets[name] = {w.split("=", 2)[1] for w in words if w.startswith("--from-literal=")}
    return secrets


def test_secret_commands_create_what_the_chart_references() -> None:
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    example = yaml.safe_load((CI_VALUES_DIR / "existing-services-values.yaml").read_text())
    mlflow, s3 = defaults["mlflow"]["credentials"], defaults["s3"]["credentials"]
    expected = {
        example["mlflow"]["credentials"]["existingSecret"]: {
            mlflow["usernameKey"],
            mlflow["passwordKey"],
        },
        example["s3"]["credentials"]["existingSecret"]: {s3["accessKeyKey"], s3["secretKeyKey"]},
        example["webhook"]["secret"]["existingSecret"]: {defaults["webhook"]["secret"]["key"]},
        example["apiToken"]["existingSecret"]: {defaults["apiToken"]["key"]},
    }
    assert _created_secrets() == expected


def test_every_value_named_in_the_doc_exists() -> None:
    # Dotted value names in backticks (e.g. `settings.reconcileIntervalS`) must be chart values.
    table_start = DOC.index("<!-- values-table:start -->")
    prose = DOC[:table_start]
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    top_level = set(defaults)
    named = {
        m.split("=", 1)[0]
        for m in re.findall(r"`([a-z][A-Za-z]+(?:\.[A-Za-z*]+)+(?:=[^`]*)?)`", prose)
        if m.split(".", 1)[0] in top_level
    }
    assert named, "expected the doc to name chart values"
    missing = []
    for name in sorted(named):
        node = defaults
        for part in name.split("."):
            if part == "*":
                break
            if not isinstance(node, dict) or part not in node:
                missing.append(name)
                break
            node = node[part]
    assert missing == []
