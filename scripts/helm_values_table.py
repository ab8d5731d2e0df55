"""Generate the table of every chart value in docs/install.md and the chart's README.

The chart's README (helm/sslmem/README.md, packaged with the chart: what Artifact Hub and
`helm show readme` display) carries the same table and a header made from Chart.yaml (name,
version, appVersion, Kubernetes versions, description) between its own markers.

Rows come from helm/sslmem/values.schema.json (every property, nested ones as dotted keys), the
defaults from values.yaml and each description from the key's helm-docs style `# --` comment in
values.yaml, else the schema's `description`. A key with neither is an error: the chart promises
that every value is documented. The table sits between the markers

    <!-- values-table:start -->  ...  <!-- values-table:end -->

    python scripts/helm_values_table.py            # print the table
    python scripts/helm_values_table.py --write    # update both docs (make helm-values-table)
    python scripts/helm_values_table.py --check    # exit 1 when one of them is stale (tests)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHART = REPO / "helm" / "sslmem"
DEFAULT_DOCS = (REPO / "docs" / "install.md", DEFAULT_CHART / "README.md")
START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"
HEADER_START = "<!-- chart-header:start -->"
HEADER_END = "<!-- chart-header:end -->"
REGENERATE = "make helm-values-table"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/\"']+):(\s|$)")


class TableError(Exception):
    """The chart or the doc is not in a state a table can be made from; the message says why."""


def value_comments(values_yaml: str) -> dict[str, str]:
    """`# --` comments of values.yaml keyed by dotted key path (helm-docs convention).

    A comment block starting with `# --` documents the next key; `#` lines right after it continue
    the text. Keys are tracked by indentation, so only block-style mappings are understood (which
    is what values.yaml uses); list items end the tracking of deeper keys.
    """
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in values_yaml.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        if not stripped:
            pending = None
            continue
        match = KEY_LINE.match(line)
        if match is None or stripped.startswith("-"):
            pending = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"].strip("\"'")))
        if pending is not None:
            comments[".".join(key for _, key in stack)] = " ".join(p for p in pending if p)
            pending = None
    return comments


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """SCHEMA with a local `$ref` (#/definitions/x, #/$defs/x) replaced by its target."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    if not ref.startswith("#/"):
        raise TableError(f"only local $ref is supported, got {ref!r}")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    merged = {**_resolve(target, root), **{k: v for k, v in schema.items() if k != "$ref"}}
    return merged


def type_of(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """A short type for the table: `string`, `integer`, `string or null`, `one of a, b`, …"""
    schema = _resolve(schema, root)
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return f"exactly {json.dumps(schema['const'])}"
    kinds: list[str] = []
    declared = schema.get("type")
    if isinstance(declared, str):
        kinds.append(declared)
    elif isinstance(declared, list):
        kinds += declared
    for combinator in ("oneOf", "anyOf"):
        for branch in schema.get(combinator, []):
            kind = type_of(branch, root)
            if kind not in kinds:
                kinds.append(kind)
    if kinds == ["array"] and "items" in schema:
        return f"array of {type_of(schema['items'], root)}"
    return " or ".join(kinds) if kinds else "any"


def _rows(
    schema: Mapping[str, Any], root: Mapping[str, Any], prefix: str, comments: Mapping[str, str]
) -> Iterator[tuple[str, Mapping[str, Any], bool]]:
    """(dotted key, schema, is a group) for every documented value, parents before children.

    helm-docs semantics: a key with a `# --` comment is documented as a whole (e.g. `resources`,
    a label selector) unless keys below it carry comments too, in which case it is a group row
    followed by those keys. An undocumented object with properties is walked into.
    """
    for name, sub in _resolve(schema, root).get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        sub = _resolve(sub, root)
        nested = "properties" in sub
        documented_below = any(k.startswith(key + ".") for k in comments)
        if nested and (documented_below or key not in comments):
            yield key, sub, True
            yield from _rows(sub, root, key, comments)
        else:
            yield key, sub, False


def _default(values: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(chart: Path) -> str:
    """The Markdown table of every value of CHART (a directory with values.yaml and its schema)."""
    schema_path = chart / "values.schema.json"
    values_path = chart / "values.yaml"
    for path in (schema_path, values_path):
        if not path.exists():
            raise TableError(f"{path} not found")
    schema = json.loads(schema_path.read_text())
    values_text = values_path.read_text()
    values = yaml.safe_load(values_text) or {}
    comments = value_comments(values_text)
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    undocumented: list[str] = []
    for key, sub, group in _rows(schema, schema, "", comments):
        description = comments.get(key) or sub.get("description", "")
        if not description:
            if not group:
                undocumented.append(key)
            continue  # an undocumented group: its keys carry the documentation
        present, default = _default(values, key)
        shown = "" if group or not present else f"`{json.dumps(default)}`"
        rows.append(
            f"| `{key}` | {_cell(type_of(sub, schema))} | {_cell(shown)} | {_cell(description)} |"
        )
    if undocumented:
        raise TableError(
            "undocumented values (add a `# --` comment in values.yaml or a schema description): "
            + ", ".join(undocumented)
        )
    return "\n".join(rows) + "\n"


def chart_header(chart: Path) -> str:
    """Markdown of the chart's identity, from its Chart.yaml (for the chart's README)."""
    path = chart / "Chart.yaml"
    if not path.exists():
        raise TableError(f"{path} not found")
    meta = yaml.safe_load(path.read_text()) or {}
    facts = [
        f"**Chart version** `{meta.get('version', '?')}`",
        f"**App version** `{meta.get('appVersion', '?')}`",
        f"**Kubernetes** `{meta.get('kubeVersion', 'any')}`",
        f"**Type** `{meta.get('type', 'application')}`",
    ]
    description = " ".join(str(meta.get("description", "")).split())
    return f"# {meta.get('name', chart.name)}\n\n{' · '.join(facts)}\n\n{description}\n"


def splice(doc: str, generated: str, start: str = START, end: str = END) -> str:
    """DOC with the text between the START and END markers replaced by GENERATED."""
    if doc.count(start) != 1 or doc.count(end) != 1 or doc.index(start) > doc.index(end):
        raise TableError(f"the doc needs exactly one {start} followed by one {end}")
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{generated}{end}{tail}"


def updated_doc(doc: str, chart: Path, generated: str) -> str:
    """DOC with its table (and its chart header, where it has the markers) regenerated."""
    doc = splice(doc, generated)
    if HEADER_START in doc or HEADER_END in doc:
        doc = splice(doc, chart_header(chart), HEADER_START, HEADER_END)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART, help="chart directory")
    parser.add_argument(
        "--doc",
        type=Path,
        action="append",
        help="Markdown file to update (repeatable; default: docs/install.md and the chart README)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the table in each --doc")
    mode.add_argument("--check", action="store_true", help="fail when a --doc is stale")
    args = parser.parse_args(argv)
    docs: list[Path] = args.doc or list(DEFAULT_DOCS)
    try:
        generated = table(args.chart)
        if not (args.write or args.check):
            sys.stdout.write(generated)
            return 0
        texts = {path: path.read_text() for path in docs}
        updated = {path: updated_doc(text, args.chart, generated) for path, text in texts.items()}
    except (TableError, OSError) as e:
        print(f"helm_values_table: {e}", file=sys.stderr)
        return 1
    stale = [path for path in docs if updated[path] != texts[path]]
    if args.check:
        for path in stale:
            print(
                f"helm_values_table: the values table in {path} is stale "
                f"(values.yaml, values.schema.json or Chart.yaml changed); regenerate it: "
                f"{REGENERATE}",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(updated[path])
        tmp.replace(path)  # atomic: a crash never leaves a half-written doc
    for path in docs:
        print(f"{path}: values table {'updated' if path in stale else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
