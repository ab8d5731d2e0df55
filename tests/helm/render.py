"""Render, lint and validate the sslmem Helm chart offline, with real helm binaries.

No Kubernetes API server can run in CI, so the chart is checked the way a cluster would see it
short of applying it: `helm lint --strict`, `helm template` with helm 3 and helm 4 (both still in
use on clusters), every rendered object against the Kubernetes OpenAPI schemas of several minor
versions (kubernetes-validate) and the Prometheus Operator's objects against the operator's own
schemas and API types (npm @kubernetes-models/prometheus-operator, via operator/validate.mjs and
operator/fields.mjs).

The binaries come from `make helm-tools` (.tools/helm-VERSION/helm), the operator schemas from
`make operator-validator`. Fixtures wrapping these helpers are in conftest.py.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "sslmem"
CI_VALUES_DIR = CHART_DIR / "ci"
TOOLS_DIR = REPO / ".tools"
OPERATOR_DIR = Path(__file__).resolve().parent / "operator"

HELM_VERSIONS = ("3.17.2", "4.1.4")
"""The helm releases the chart must work with; `make helm-tools` fetches exactly these."""

KUBE_VERSIONS = ("1.25.0", "1.37.0")
"""Kubernetes versions rendered for and validated against: the oldest the chart supports (its
Chart.yaml kubeVersion, checked by a test) and the newest kubernetes-validate has schemas of."""

OPERATOR_API = "monitoring.coreos.com/v1"
"""Custom resources of this API go to the operator's schemas; kubernetes-validate has none."""

RELEASE = "sslmem"
NAMESPACE = "sslmem"


class HelmError(Exception):
    """A helm command failed; `stderr` holds helm's message (e.g. a schema or `fail` error)."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args_ = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        # helm lint prints its findings on stdout and only the summary on stderr.
        super().__init__(f"helm {' '.join(args)} exited {returncode}:\n{stdout}{stderr}")

    @property
    def output(self) -> str:
        """Everything helm printed (findings and error), for asserting on the user's message."""
        return self.stdout + self.stderr


@dataclass(frozen=True)
class Helm:
    """One helm binary. `version` is the release without the `v` (e.g. "3.17.2")."""

    version: str
    path: Path

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    def run(self, *args: str) -> str:
        """Run helm ARGS with an isolated helm home; return stdout, raise HelmError on failure."""
        result = subprocess.run(
            [str(self.path), *args],
            capture_output=True,
            text=True,
            env=_helm_env(),
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise HelmError(args, result.returncode, result.stdout, result.stderr)
        return result.stdout

    def __str__(self) -> str:
        return f"helm {self.version}"


def helm_path(version: str) -> Path:
    """Where `make helm-tools` puts helm VERSION."""
    return TOOLS_DIR / f"helm-{version}" / "helm"


def find_helm(version: str) -> Helm | None:
    """Helm VERSION from .tools/, or None when `make helm-tools` has not fetched it."""
    path = helm_path(version)
    if not os.access(path, os.X_OK):
        return None
    return Helm(version, path)


@functools.cache
def _helm_env() -> dict[str, str]:
    """Environment for helm: its cache/config/data in a private temp dir, no kubeconfig.

    Keeps the tests from reading or writing the user's ~/.config/helm (repositories, plugins) and
    from ever talking to whatever cluster the user's kubeconfig points at.
    """
    home = Path(tempfile.mkdtemp(prefix="sslmem-helm-home-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_") and k != "KUBECONFIG"}
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-kubeconfig"),
    )
    return env


def _value_args(
    values_files: Iterable[str | Path],
    values: Mapping[str, Any] | None,
    set_: Mapping[str, Any] | None,
    tmp: Path,
) -> list[str]:
    """`-f`/`--set-json` arguments. `set_` values are JSON-encoded, so types survive exactly."""
    args: list[str] = []
    for f in values_files:
        args += ["-f", str(f)]
    if values is not None:
        inline = tmp / "inline-values.yaml"
        inline.write_text(yaml.safe_dump(dict(values), sort_keys=False))
        args += ["-f", str(inline)]
    for key, value in (set_ or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


@functools.lru_cache(maxsize=256)
def _template(
    helm: Helm,
    chart: str,
    args: tuple[str, ...],
    values_yaml: str | None,
    files_key: str,
    release: str = RELEASE,
) -> str:
    """Cached `helm template` output (YAML text); render() parses it into fresh dicts each call.

    `files_key` (the values files' contents) is only part of the cache key, so a values file
    rewritten between two renders is not answered from the cache.
    """
    with tempfile.TemporaryDirectory(prefix="sslmem-render-") as tmp:
        extra = _value_args(
            (), yaml.safe_load(values_yaml) if values_yaml else None, None, Path(tmp)
        )
        return helm.run("template", release, chart, *args, *extra)


def render(
    helm: Helm,
    values_files: Iterable[str | Path] = (),
    set: Mapping[str, Any] | None = None,  # mirrors helm's --set
    api_versions: Iterable[str] = (),
    *,
    values: Mapping[str, Any] | None = None,
    kube_version: str | None = None,
    namespace: str = NAMESPACE,
    show_only: Iterable[str] = (),
    chart: Path = CHART_DIR,
    release: str = RELEASE,
) -> list[dict[str, Any]]:
    """`helm template` the chart and return the rendered objects (hooks included), in order.

    Args:
        helm: The binary (the `helm` fixture).
        values_files: `-f` files, applied in order (e.g. CI_VALUES_DIR / "production-values.yaml").
        set: `--set-json` overrides, `{"dotted.key": value}`; values keep their JSON type.
        api_versions: `--api-versions` entries for `.Capabilities.APIVersions.Has`, e.g.
            "monitoring.coreos.com/v1/ServiceMonitor" to pretend the operator's CRDs exist.
        values: An inline values mapping, applied after `values_files` and before `set`.
        kube_version: `--kube-version` (default: helm's built-in, which differs by helm release).
        namespace: `--namespace` of the release.
        show_only: `--show-only` templates (paths relative to the chart, "templates/x.yaml").
        chart: The chart directory.
        release: The release name.

    Raises:
        HelmError: helm failed (schema violation, `fail` in a template, bad YAML); its `stderr`
            holds the message a user would see.
    """
    files = [Path(f).resolve() for f in values_files]
    args: list[str] = ["--namespace", namespace]
    for f in files:
        args += ["-f", str(f)]
    for key, value in (set or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    for api in api_versions:
        args += ["--api-versions", api]
    if kube_version is not None:
        args += ["--kube-version", kube_version]
    for template in show_only:
        args += ["--show-only", template]
    # helm merges all -f files (in order) before any --set-json, whatever the flag order.
    values_yaml = yaml.safe_dump(dict(values), sort_keys=False) if values is not None else None
    files_key = "\0".join(f.read_text() for f in files)
    text = _template(helm, str(chart), tuple(args), values_yaml, files_key, release)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def lint(
    helm: Helm,
    values_files: Iterable[str | Path] = (),
    set: Mapping[str, Any] | None = None,  # mirrors helm's --set
    *,
    values: Mapping[str, Any] | None = None,
    kube_version: str | None = None,
    namespace: str = NAMESPACE,
    strict: bool = True,
    chart: Path = CHART_DIR,
) -> str:
    """`helm lint --strict` the chart; return helm's output, raise HelmError on any finding."""
    with tempfile.TemporaryDirectory(prefix="sslmem-lint-") as tmp:
        files = [Path(f).resolve() for f in values_files]
        args = ["lint", str(chart), "--namespace", namespace]
        args += _value_args(files, values, set, Path(tmp))
        if strict:
            args.append("--strict")
        if kube_version is not None:
            args += ["--kube-version", kube_version]
        return helm.run(*args)


def ci_values_files() -> list[Path]:
    """The chart's realistic value sets, helm/sslmem/ci/*-values.yaml (chart-testing's layout)."""
    return sorted(CI_VALUES_DIR.glob("*-values.yaml"))


def find(
    objects: Iterable[Mapping[str, Any]], kind: str, name: str | None = None
) -> list[dict[str, Any]]:
    """The rendered objects of KIND (and NAME, when given)."""
    return [
        dict(o)
        for o in objects
        if o.get("kind") == kind and (name is None or o.get("metadata", {}).get("name") == name)
    ]


def the(objects: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single rendered object of KIND (and NAME); AssertionError unless exactly one."""
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {len(found)}"
    return found[0]


def describe(obj: Mapping[str, Any]) -> str:
    """`Kind/name` of a rendered object, for messages."""
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def kubernetes_errors(obj: Mapping[str, Any], kube_version: str) -> list[str]:
    """Errors of OBJ against Kubernetes KUBE_VERSION's OpenAPI schema (strict: unknown fields too).

    An object whose kind the schemas do not know is an error here too: the chart renders only
    built-in kinds plus the operator's (which go to operator_errors instead).
    """
    try:
        kubernetes_validate.validate(dict(obj), kube_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "<root>"
        return [f"{describe(obj)} against Kubernetes {e.version}: {path}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{describe(obj)}: {e.message}"]
    return []


def node_binary() -> str | None:
    """The `node` executable, or None."""
    return shutil.which("node")


def operator_validator_ready() -> bool:
    """Whether `make operator-validator` has installed the operator's schemas and node exists."""
    return node_binary() is not None and (OPERATOR_DIR / "node_modules" / ".installed").exists()


def _run_operator_script(
    script: str, what: str, objects: Sequence[Mapping[str, Any]]
) -> list[list[str]]:
    """Run tests/helm/operator/SCRIPT on OBJECTS; the errors of each object, one list per object."""
    node = node_binary()
    if node is None:
        raise RuntimeError("node not found: the operator validator needs Node.js (>= 20)")
    result = subprocess.run(
        [node, str(OPERATOR_DIR / script)],
        input=json.dumps(list(objects)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"{script} exited {result.returncode}: {result.stderr}")
    return [
        [f"{r['kind']}/{r['name']} against the operator {what}: {e}" for e in r["errors"]]
        for r in json.loads(result.stdout)
    ]


def operator_errors(objects: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Errors of each object against the Prometheus Operator's JSON schemas (types, patterns,
    required fields), one list per object. Fast (one node process); unknown keys pass here."""
    return _run_operator_script("validate.mjs", "schema", objects)


def operator_field_errors(objects: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Unknown (misspelt, misplaced) keys in each object per the operator's own API types, one
    list per object. Slow (a TypeScript type check, ~5 s a call): pass all objects in one call."""
    return _run_operator_script("fields.mjs", "types", objects)


def validation_errors(objects: Sequence[Mapping[str, Any]], kube_version: str) -> list[str]:
    """Every schema error in OBJECTS: built-in kinds via Kubernetes KUBE_VERSION, operator kinds
    via the operator's schemas. Empty when everything is valid."""
    errors: list[str] = []
    custom = [o for o in objects if o.get("apiVersion") == OPERATOR_API]
    for obj in objects:
        if obj.get("apiVersion") != OPERATOR_API:
            errors += kubernetes_errors(obj, kube_version)
    if custom:
        for found in operator_errors(custom):
            errors += found
    return errors
