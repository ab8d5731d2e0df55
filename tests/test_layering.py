"""The import graph of ``src/sslmem``: no circles, and no import upward between layers.

Read from the source (``ast``; imports inside functions count too: a deferred import is still a
dependency). Package ``__init__`` facades are left out of the circle check: they import their
own submodules by design.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Layers, lowest first: a package may import its own layer and those below, never above.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {"errors", "atomic", "estimators", "redaction", "outputs", "interrupts", "env_settings"}
    ),
    frozenset({"config", "config_text", "runtime", "augment", "device", "provenance", "registry"}),
    frozenset({"data", "models", "coordination"}),
    frozenset({"memorization", "training", "evaluation", "reporting"}),
    frozenset({"tracking", "pipeline_params"}),
    frozenset({"workflow", "curation"}),
    frozenset({"service"}),
    frozenset({"cli"}),
)


def import_graph(root: Path = SRC) -> tuple[dict[str, set[str]], set[str]]:
    """``(module -> sslmem modules it imports, package modules)`` for every module under root."""
    modules: dict[str, Path] = {}
    packages: set[str] = set()
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            packages.add(".".join(parts))
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph, packages


def circles(graph: Mapping[str, set[str]], leave_out: set[str]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan), ``leave_out`` removed."""
    nodes = [n for n in graph if n not in leave_out]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v] - leave_out:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else None
    return next((i for i, layer in enumerate(LAYERS) if top in layer), None)


def test_no_import_circles() -> None:
    graph, packages = import_graph()
    assert circles(graph, packages) == []


def test_every_package_has_a_layer_and_no_import_points_upward() -> None:
    graph, _ = import_graph()
    unplaced = sorted({m for m in graph if m != "sslmem" and _layer(m) is None})
    assert unplaced == [], "add these to LAYERS"
    upward = [
        (m, o)
        for m, imported in graph.items()
        for o in imported
        if (lm := _layer(m)) is not None and (lo := _layer(o)) is not None and lo > lm
    ]
    assert upward == []


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The checks can fail: a planted circle and a library module importing the service."""
    pkg = tmp_path / "sslmem"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from sslmem.data.b import g\n")
    (pkg / "data" / "b.py").write_text("from sslmem.data import a\nimport sslmem.service.app\n")
    (pkg / "service").mkdir()
    (pkg / "service" / "__init__.py").write_text("")
    (pkg / "service" / "app.py").write_text("")
    graph, packages = import_graph(tmp_path)
    assert circles(graph, packages) == [{"sslmem.data.a", "sslmem.data.b"}]
    assert _layer("sslmem.service.app") > _layer("sslmem.data.b")  # type: ignore[operator]
    assert "sslmem.service.app" in graph["sslmem.data.b"]
