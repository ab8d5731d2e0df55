"""No ``SSLMEM_*`` environment variable is read outside the settings modules.

Every variable sslmem reads is a field of a settings class (docs/configuration.md): there it is
validated, documented and named in its errors. This test reads ``src/sslmem``, ``components``
and ``pipelines`` (``ast``) and fails on a read of the environment outside the modules of
:data:`SETTINGS_MODULES` whose variable is an ``SSLMEM_*`` name, or whose name is computed (it
could be one) unless :data:`COMPUTED_READS` says why that one is not configuration.

A read is ``os.getenv(K)``, ``E.get(K)``, ``E[K]`` or ``K in E`` where ``E`` is ``os.environ``,
a parameter or import named ``environ``, or a local name assigned from an expression holding
``os.environ`` (``env = os.environ if environ is None else environ``); and iterating ``E``
(``E.items()``, ``dict(E)``, ``for k in E``) in a function that names an ``SSLMEM_*`` string.
``K`` is resolved through string constants (``NODES_ENV = "SSLMEM_TRAIN_NODES"``, imported
ones too).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = (REPO / "src" / "sslmem", REPO / "components", REPO / "pipelines")

#: The modules that hold settings classes: they alone read ``SSLMEM_*`` variables.
SETTINGS_MODULES: dict[str, str] = {
    "src/sslmem/config.py": "RuntimeSettings (SSLMEM_*)",
    "src/sslmem/env_settings.py": "EnvSettings, the base of the classes below",
    "src/sslmem/service/settings.py": "ServiceSettings (SSLMEM_SERVICE_*)",
    "src/sslmem/coordination/settings.py": "LeaseEnvSettings (SSLMEM_SERVICE_LEASE_*)",
    "src/sslmem/training/settings.py": "TrainProcessSettings (SSLMEM_TRAIN_NPROC_PER_NODE)",
    "pipelines/settings.py": "TrainStepSettings (SSLMEM_TRAIN_*), TrainJobSettings "
    "(SSLMEM_TRAINJOB_*); forwarded_environment passes settings on to the TrainJob's nodes",
}

#: Reads of a computed name outside the settings modules, by (module, function): why each one
#: is not configuration.
COMPUTED_READS: dict[tuple[str, str], str] = {
    ("src/sslmem/training/distributed.py", "_env_int"): (
        "RANK, WORLD_SIZE, LOCAL_RANK: set by torchrun for each process it starts"
    ),
    ("pipelines/local.py", "_patched_environ"): "saves variables it sets, to put them back",
}

_ENV_NAME = "environ"


@dataclass(frozen=True)
class Read:
    """One environment read: where, in which function, and the variable (``None``: computed)."""

    module: str
    line: int
    function: str
    variable: str | None


def string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments."""
    found: dict[str, str] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = value.value
    return found


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _holds_os_environ(node: ast.AST) -> bool:
    return any(_is_os_environ(sub) for sub in ast.walk(node))


class _Scanner(ast.NodeVisitor):
    def __init__(self, module: str, constants: dict[str, str]) -> None:
        self.module = module
        self.constants = constants
        self.reads: list[Read] = []
        self.function = "<module>"
        self.aliases: set[str] = {_ENV_NAME}
        self.names_sslmem = False

    def _is_env(self, node: ast.AST) -> bool:
        return _is_os_environ(node) or (isinstance(node, ast.Name) and node.id in self.aliases)

    def _key(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.constants[node.id]
        return None

    def _read(self, node: ast.AST, key: ast.AST | None) -> None:
        variable = None if key is None else self._key(key)
        self.reads.append(Read(self.module, getattr(node, "lineno", 0), self.function, variable))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        saved = (self.function, self.aliases, self.names_sslmem)
        self.function = node.name
        self.aliases = {_ENV_NAME}
        self.names_sslmem = any(
            isinstance(sub, ast.Constant)
            and isinstance(sub.value, str)
            and sub.value.upper().startswith("SSLMEM_")
            for sub in ast.walk(node)
        ) or any(
            isinstance(sub, ast.Name) and self.constants.get(sub.id, "").startswith("SSLMEM_")
            for sub in ast.walk(node)
        )
        for sub in ast.walk(node):
            if isinstance(sub, ast.Assign) and _holds_os_environ(sub.value):
                self.aliases |= {t.id for t in sub.targets if isinstance(t, ast.Name)}
        self.generic_visit(node)
        self.function, self.aliases, self.names_sslmem = saved

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and self._is_env(func.value):
            if func.attr == "get":
                self._read(node, node.args[0] if node.args else None)
            elif func.attr in ("items", "keys", "values", "copy") and self.names_sslmem:
                self._read(node, None)
        elif (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
            isinstance(func, ast.Name) and func.id == "getenv"
        ):
            self._read(node, node.args[0] if node.args else None)
        elif (
            isinstance(func, ast.Name)
            and func.id == "dict"
            and node.args
            and self._is_env(node.args[0])
            and self.names_sslmem
        ):
            self._read(node, None)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Load) and self._is_env(node.value):
            self._read(node, node.slice)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, (ast.In, ast.NotIn)) and self._is_env(right):
                self._read(node, node.left)
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        if self._is_env(node.iter) and self.names_sslmem:
            self._read(node, None)
        self.generic_visit(node)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        if self._is_env(node.iter) and self.names_sslmem:
            self._read(node.iter, None)
        self.generic_visit(node)


def env_reads(sources: dict[str, str]) -> list[Read]:
    """Every environment read in ``sources`` (module path -> source text)."""
    trees = {module: ast.parse(text) for module, text in sources.items()}
    constants: dict[str, str] = {}
    for tree in trees.values():  # imported constants resolve by name too
        constants.update(string_constants(tree))
    reads: list[Read] = []
    for module, tree in trees.items():
        scanner = _Scanner(module, {**constants, **string_constants(tree)})
        scanner.visit(tree)
        reads += scanner.reads
    return reads


def violations(reads: list[Read]) -> list[str]:
    """The reads outside the settings modules of an ``SSLMEM_*`` or an unexplained name."""
    bad = []
    for read in reads:
        if read.module in SETTINGS_MODULES:
            continue
        if read.variable is None and (read.module, read.function) in COMPUTED_READS:
            continue
        if read.variable is None or read.variable.upper().startswith("SSLMEM_"):
            what = read.variable or "a computed name"
            bad.append(f"{read.module}:{read.line} ({read.function}) reads {what}")
    return bad


def _sources() -> dict[str, str]:
    return {
        path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8")
        for root in ROOTS
        for path in sorted(root.rglob("*.py"))
    }


def test_no_sslmem_variable_is_read_outside_the_settings_modules() -> None:
    sources = _sources()
    assert "pipelines/trainjob.py" in sources and "src/sslmem/workflow/_common.py" in sources
    assert violations(env_reads(sources)) == [], (
        "read these through a settings class (sslmem.env_settings.EnvSettings; "
        "docs/configuration.md), or add a computed read that is not configuration to "
        "COMPUTED_READS with the reason"
    )


def test_the_allow_lists_name_existing_modules_and_functions() -> None:
    sources = _sources()
    assert set(SETTINGS_MODULES) <= set(sources)
    reads = env_reads(sources)
    for module, function in COMPUTED_READS:
        assert any(r.module == module and r.function == function for r in reads), (
            f"{module}:{function} no longer reads the environment: drop it from COMPUTED_READS"
        )


def test_the_scan_finds_each_kind_of_read() -> None:
    """The check can fail: planted reads of every form are found, others are not."""
    constants = 'NODES_ENV = "SSLMEM_TRAIN_NODES"\n'
    planted = """
import os
from os import environ, getenv
from consts import NODES_ENV

def literal():
    return os.environ.get("SSLMEM_DEVICE")

def subscript():
    return os.environ["SSLMEM_STORE_URI"]

def membership():
    return "SSLMEM_KFP_TOKEN" in os.environ

def through_getenv():
    return getenv("SSLMEM_LOG_LEVEL"), os.getenv("SSLMEM_DATA_DIR")

def imported_constant(environ=None):
    env = os.environ if environ is None else environ
    return env.get(NODES_ENV)

def named_environ():
    return environ.get("SSLMEM_S3_REGION")

def computed(name):
    return os.environ.get(name)

def scanned():
    return {k: v for k, v in os.environ.items() if k.startswith("SSLMEM_")}

def fine():
    os.environ["SSLMEM_DEVICE"] = "cpu"  # a write, not a read
    return os.environ.get("MLFLOW_TRACKING_URI")

def fine_copy():  # the whole environment passed on (to a subprocess), no SSLMEM_ name here
    return dict(os.environ), os.environ.copy()
"""
    reads = env_reads({"consts.py": constants, "m.py": planted})
    found = violations(reads)
    for function in (
        "literal",
        "subscript",
        "membership",
        "imported_constant",
        "named_environ",
        "computed",
        "scanned",
    ):
        assert any(f"({function})" in line for line in found), (function, found)
    assert sum("(through_getenv)" in line for line in found) == 2
    assert not any("(fine" in line for line in found), found
    assert any("reads SSLMEM_TRAIN_NODES" in line for line in found)
    # The same reads inside a settings module are allowed.
    assert violations(env_reads({"consts.py": constants, "pipelines/settings.py": planted})) == []
