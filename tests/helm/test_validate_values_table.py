"""docs/install.md's values table: generated correctly, complete, and kept current by this test."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helm.render import CHART_DIR, REPO

SCRIPT = REPO / "scripts" / "helm_values_table.py"
DOC = REPO / "docs" / "install.md"
FIXTURE = Path(__file__).parent / "fixtures" / "values-table"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("helm_values_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


values_table = _load_script()


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_table_of_a_hand_checked_schema() -> None:
    # Written by hand from fixtures/values-table: dotted nested keys, defaults from values.yaml,
    # `# --` comments (continued over two lines, `|` escaped) before schema descriptions, enum,
    # oneOf, array items, $ref, group rows (commented or described in the schema) followed by
    # their keys, undocumented groups left out, and an object documented as a whole.
    assert values_table.table(FIXTURE) == (
        "| Key | Type | Default | Description |\n"
        "|---|---|---|---|\n"
        "| `replicaCount` | integer | `1` | Replicas of the service. |\n"
        "| `image` | object |  | Image settings (a group: its keys are documented too). |\n"
        '| `image.repository` | string | `"example/app"` | Image repository. |\n'
        '| `image.tag` | string | `""` | Tag; empty means the chart\'s appVersion. '
        "The pipe \\| must be escaped in the Markdown table. |\n"
        "| `monitoring` | object |  | Prometheus Operator objects. |\n"
        '| `monitoring.enabled` | one of "auto", true, false | `"auto"` | '
        "Render the monitor: auto, true or false. |\n"
        '| `monitoring.labels` | object | `{"release": "prom"}` | Labels of the monitor. |\n'
        "| `pdb.minAvailable` | integer or string or null | `null` | "
        "Fewest pods available (null: unset). |\n"
        '| `pdb.extra` | array of string | `["a", "b"]` | Extra entries. |\n'
        '| `credentials.existingSecret` | string | `"creds"` | Existing Secret name. |\n'
        '| `resources` | object | `{"limits": {"cpu": "1"}}` | '
        "Container resources, documented as a whole. |\n"
    )


def test_an_undocumented_value_is_an_error(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(FIXTURE, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("# -- Replicas of the service.\n", ""))
    result = _run("--chart", chart)
    assert result.returncode == 1
    assert "undocumented values" in result.stderr
    assert "replicaCount" in result.stderr


def _leaf_keys(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping) and value:
            yield from _leaf_keys(value, path)
        else:
            yield path


def test_every_default_value_is_in_the_install_doc() -> None:
    # Independent of the generator: walk values.yaml itself. Each leaf must be in the table, itself
    # or through a documented parent (a map such as resources documented as a whole).
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    doc = DOC.read_text()
    table_keys = {
        line.split("`")[1]
        for line in doc.split(values_table.START, 1)[1].split(values_table.END, 1)[0].splitlines()
        if line.startswith("| `")
    }
    missing = [
        leaf
        for leaf in _leaf_keys(defaults)
        if not any(leaf == key or leaf.startswith(key + ".") for key in table_keys)
    ]
    assert missing == []


def test_install_doc_table_is_current() -> None:
    result = _run("--check")  # docs/install.md and the chart's README
    assert result.returncode == 0, result.stderr


def test_the_chart_readme_is_packaged_with_a_header_from_chart_yaml(tmp_path: Path) -> None:
    chart_yaml = yaml.safe_load((REPO / "helm" / "sslmem" / "Chart.yaml").read_text())
    readme = (REPO / "helm" / "sslmem" / "README.md").read_text()
    assert readme.startswith(f"{values_table.HEADER_START}\n# {chart_yaml['name']}\n")
    assert f"**Chart version** `{chart_yaml['version']}`" in readme
    assert f"**App version** `{chart_yaml['appVersion']}`" in readme
    assert "| `replicaCount` | integer | `1` |" in readme  # the values table itself
    # A new chart version without regenerating: the README is stale, and --write fixes it.
    chart = tmp_path / "chart"
    shutil.copytree(FIXTURE, chart)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 1.2.3\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        f"{values_table.HEADER_START}\n{values_table.HEADER_END}\n"
        f"{values_table.START}\n{values_table.END}\n"
    )
    assert _run("--chart", chart, "--doc", doc, "--write").returncode == 0
    assert "# demo\n\n**Chart version** `1.2.3`" in doc.read_text()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 1.2.4\n")
    stale = _run("--chart", chart, "--doc", doc, "--check")
    assert stale.returncode == 1 and "stale" in stale.stderr


def test_a_stale_table_is_detected_and_regenerated(tmp_path: Path) -> None:
    doc = tmp_path / "install.md"
    doc.write_text(
        f"# Install\n\n{values_table.START}\n| old | table |\n{values_table.END}\n\nAfter.\n"
    )
    stale = _run("--chart", FIXTURE, "--doc", doc, "--check")
    assert stale.returncode == 1
    assert "stale" in stale.stderr
    assert "make helm-values-table" in stale.stderr
    assert _run("--chart", FIXTURE, "--doc", doc, "--write").returncode == 0
    text = doc.read_text()
    assert "| old | table |" not in text
    assert "| `replicaCount` | integer | `1` | Replicas of the service. |" in text
    assert text.startswith("# Install\n\n") and text.endswith(f"{values_table.END}\n\nAfter.\n")
    assert _run("--chart", FIXTURE, "--doc", doc, "--check").returncode == 0


@pytest.mark.parametrize("markers", ["none", "twice", "reversed"])
def test_broken_markers_are_refused(tmp_path: Path, markers: str) -> None:
    start, end = values_table.START, values_table.END
    text = {
        "none": "no table here\n",
        "twice": f"{start}\n{end}\n{start}\n{end}\n",
        "reversed": f"{end}\n{start}\n",
    }[markers]
    doc = tmp_path / "install.md"
    doc.write_text(text)
    result = _run("--chart", FIXTURE, "--doc", doc, "--write")
    assert result.returncode == 1
    assert "needs exactly one" in result.stderr
    assert doc.read_text() == text
