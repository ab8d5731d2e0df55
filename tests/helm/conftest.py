"""Fixtures for the chart tests: the two helm binaries and the operator schema validator.

`make test` fetches both (`make helm-tools operator-validator`). In CI (`CI` set) a missing one is
a test failure naming the make target; on a developer machine the tests skip with that reason.
Helpers (render, lint, validation) are plain functions in tests/helm/render.py.
"""

from __future__ import annotations

import os

import pytest

from tests.helm.render import HELM_VERSIONS, Helm, find_helm, helm_path, operator_validator_ready


def _missing(what: str, target: str) -> None:
    message = f"{what} missing: run `make {target}`"
    if os.environ.get("CI"):  # `make test` provides it, so in CI its absence is a failure
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session", params=HELM_VERSIONS, ids=[f"helm{v}" for v in HELM_VERSIONS])
def helm_binaries(request: pytest.FixtureRequest) -> Helm:
    """Each supported helm release in turn (tests using it run once per release)."""
    version: str = request.param
    helm = find_helm(version)
    if helm is None:
        _missing(f"helm {version} ({helm_path(version)})", "helm-tools")
    assert helm is not None
    return helm


@pytest.fixture(scope="session")
def helm(helm_binaries: Helm) -> Helm:
    """Short name for `helm_binaries`: one helm binary per test parametrization."""
    return helm_binaries


@pytest.fixture(scope="session")
def all_helms() -> list[Helm]:
    """Both helm binaries at once (for comparing their output)."""
    helms = [find_helm(v) for v in HELM_VERSIONS]
    if any(h is None for h in helms):
        _missing(f"helm {' and '.join(HELM_VERSIONS)} (.tools/)", "helm-tools")
    return [h for h in helms if h is not None]


@pytest.fixture(scope="session")
def operator_validator() -> None:
    """Require the Prometheus Operator schema validator (node, tests/helm/operator/node_modules)."""
    if not operator_validator_ready():
        _missing(
            "the Prometheus Operator schemas (node and tests/helm/operator)", "operator-validator"
        )
