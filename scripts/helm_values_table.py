"""Generate the table of every chart value in docs/install.md from the chart's schema.

Rows come from helm/sslmem/values.schema.json (every property, nested ones as dotted keys), the
defaults from values.yaml and each description from the key's helm-docs style `# --` comment in
values.yaml, else the schema's `description`. A key with neither is an error: the chart promises
that every value is documented. The table sits between the markers

    <!-- values-table:start -->  ...  <!-- values-table:end -->

    python scripts/helm_values_table.py            # print the table
    python scripts/helm_values_table.py --write    # update docs/install.md (make helm-values-table)
    python scripts/helm_values_table.py --check    # exit 1 when docs/install.md is stale (tests)
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
DEFAULT_DOC = REPO / "docs" / "install.md"
START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"
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


def splice(doc: str, generated: str) -> str:
    """DOC with the text between the table markers replaced by GENERATED."""
    if doc.count(START) != 1 or doc.count(END) != 1 or doc.index(START) > doc.index(END):
        raise TableError(f"the doc needs exactly one {START} followed by one {END}")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{generated}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART, help="chart directory")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="Markdown file to update")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the table in --doc")
    mode.add_argument("--check", action="store_true", help="fail when --doc's table is stale")
    args = parser.parse_args(argv)
    try:
        generated = table(args.chart)
        if not (args.write or args.check):
            sys.stdout.write(generated)
            return 0
        doc = args.doc.read_text()
        updated = splice(doc, generated)
    except (TableError, OSError) as e:
        print(f"helm_values_table: {e}", file=sys.stderr)
        return 1
    if args.check:
        if updated != doc:
            print(
                f"helm_values_table: the values table in {args.doc} is stale "
                f"(values.yaml or values.schema.json changed); regenerate it: {REGENERATE}",
                file=sys.stderr,
            )
            return 1
        return 0
    if updated != doc:
        tmp = args.doc.with_name(f".{args.doc.name}.tmp")
        tmp.write_text(updated)
        tmp.replace(args.doc)  # atomic: a crash never leaves a half-written doc
    print(f"{args.doc}: values table {'updated' if updated != doc else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
