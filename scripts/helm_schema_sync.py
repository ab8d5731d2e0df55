"""Keep helm/sslmem/values.schema.json's descriptions and defaults equal to values.yaml.

values.yaml is the source: each key's helm-docs `# --` comment is its schema `description`, and
its value there is its schema `default` (for leaves and for objects documented as a whole; a
group of documented keys gets no default of its own). Keys values.yaml does not comment keep the
schema's own description, but it may not repeat another key's comment: that is how 40 resource
quantities came to be described as "Size of the MinIO volume.".

    python scripts/helm_schema_sync.py            # print what differs (exit 1 when something does)
    python scripts/helm_schema_sync.py --write    # rewrite the schema (make helm-schema-sync)
    python scripts/helm_schema_sync.py --check    # exit 1 when the schema is stale (tests)
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHART = REPO / "helm" / "sslmem"
REGENERATE = "make helm-schema-sync"


def _value_comments(values_yaml: str) -> dict[str, str]:
    """The `# --` comments by dotted key, parsed exactly as the values table parses them."""
    spec = importlib.util.spec_from_file_location(
        "helm_values_table", Path(__file__).with_name("helm_values_table.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    comments: dict[str, str] = module.value_comments(values_yaml)
    return comments


def _properties(
    schema: Mapping[str, Any], prefix: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted key, schema node) of every named property, parents first.

    `$ref`s and conditional branches are not followed: the documented shape is the `properties`
    tree (the restricted security contexts under `definitions` keep their own descriptions).
    """
    for name, sub in schema.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        yield key, sub
        yield from _properties(sub, key)


def _lookup(values: Any, key: str) -> tuple[bool, Any]:
    node = values
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def sync(schema: Mapping[str, Any], values_yaml: str) -> tuple[dict[str, Any], list[str]]:
    """SCHEMA with descriptions and defaults taken from VALUES_YAML, and what changed.

    Raises:
        ValueError: a key's description repeats another key's comment (a copy error), or a
            documented key is missing from the schema; the message names the keys.
    """
    out = copy.deepcopy(dict(schema))
    values = yaml.safe_load(values_yaml) or {}
    comments = _value_comments(values_yaml)
    changes: list[str] = []
    nodes = dict(_properties(out))
    missing = sorted(set(comments) - set(nodes))
    if missing:
        raise ValueError(f"values.yaml documents keys the schema lacks: {', '.join(missing)}")
    by_text: dict[str, list[str]] = {}
    for key, text in comments.items():
        by_text.setdefault(text, []).append(key)
    copied: list[str] = []
    for key, node in nodes.items():
        comment = comments.get(key)
        if comment is not None:
            if node.get("description") != comment:
                changes.append(f"{key}: description {node.get('description')!r} -> {comment!r}")
                node["description"] = comment
        elif not node.get("description"):
            node.pop("description", None)
        elif node["description"] in by_text:
            owners = ", ".join(by_text[node["description"]])
            copied.append(f"{key} (described as {owners})")
        present, value = _lookup(values, key)
        group = "properties" in node and any(k.startswith(key + ".") for k in comments)
        if present and not group and node.get("default", object()) != value:
            changes.append(f"{key}: default {node.get('default')!r} -> {value!r}")
            node["default"] = value
    if copied:
        raise ValueError(
            "schema descriptions copied from other keys' values.yaml comments (give these keys "
            "their own `# --` comment or description): " + "; ".join(copied)
        )
    return out, changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART, help="chart directory")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite values.schema.json")
    mode.add_argument("--check", action="store_true", help="fail when the schema is stale")
    args = parser.parse_args(argv)
    schema_path = args.chart / "values.schema.json"
    try:
        schema = json.loads(schema_path.read_text())
        synced, changes = sync(schema, (args.chart / "values.yaml").read_text())
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.write:
        if changes:
            schema_path.write_text(json.dumps(synced, indent=2, ensure_ascii=False) + "\n")
        print(f"{schema_path}: {len(changes)} change(s)")
        return 0
    for change in changes:
        print(change)
    if changes and args.check:
        print(f"{schema_path} is stale: run `{REGENERATE}`", file=sys.stderr)
    return 1 if changes else 0


if __name__ == "__main__":
    sys.exit(main())
