"""The image's locks agree with pyproject.toml, the Makefile and deploy/Dockerfile.

An edited pyproject.toml (or TORCH_PINS) without a re-lock fails here, naming ``make lock``.
What ships is what is tested: the image's lock is the runtime part of the development lock
(deploy/requirements-dev.lock), which constrains every ``make`` install of ``.venv``, and the
environment running this suite holds exactly those versions. The cu12 variant's lock
(deploy/requirements-cu12.lock, TORCH_PINS_CU12) is held to the same checks and differs from
the development lock in torch's own build only (torch, torchvision, triton, CUDA libraries);
`make test-variant-cu12` runs the torch-dependent tests on it (docs/image.md).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from tests.deploy.image_files import (
    DEV_LOCK,
    DOCKERFILE,
    RELOCK,
    REPO,
    TORCH_BUILD,
    VARIANTS,
    canonical,
    makefile_variable,
    read_lock,
)

#: The image's platform (deploy/Dockerfile: python:3.11-slim on linux/amd64).
IMAGE_MARKERS = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
PYPROJECT_VIA = "sslmem (pyproject.toml)"
#: Every image lock, one test parameter each (named by its TORCH_VARIANT).
LOCKS = pytest.mark.parametrize("lock_path", [v[0] for v in VARIANTS.values()], ids=list(VARIANTS))


def runtime_requirements() -> list[Requirement]:
    """pyproject.toml's runtime dependencies that apply on the image's platform."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(IMAGE_MARKERS)]


@LOCKS
def test_every_runtime_dependency_is_locked_within_its_range(lock_path: Path) -> None:
    lock = read_lock(lock_path)
    problems = []
    for requirement in runtime_requirements():
        entry = lock.get(canonical(requirement.name))
        if entry is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(entry.version, prereleases=True):
            problems.append(f"{requirement}: the lock pins {entry.version}")
    assert not problems, (
        f"{lock_path.relative_to(REPO)} is stale against pyproject.toml ({'; '.join(problems)}); "
        f"re-lock with `{RELOCK}`"
    )


@LOCKS
def test_lock_names_exactly_pyprojects_direct_dependencies(lock_path: Path) -> None:
    # uv annotates each direct dependency "via sslmem (pyproject.toml)": a dependency removed
    # from pyproject.toml but still locked as direct means the lock was not regenerated.
    lock = read_lock(lock_path)
    locked_direct = {name for name, entry in lock.items() if PYPROJECT_VIA in entry.via}
    declared = {canonical(requirement.name) for requirement in runtime_requirements()}
    assert locked_direct == declared, (
        f"direct dependencies differ (only in lock: {sorted(locked_direct - declared)}, only in "
        f"pyproject.toml: {sorted(declared - locked_direct)}); re-lock with `{RELOCK}`"
    )


@LOCKS
def test_every_locked_distribution_is_pinned_with_sha256_hashes(lock_path: Path) -> None:
    lock = read_lock(lock_path)
    assert len(lock) > 50  # the whole tree (mlflow, kfp, torch...), not only the direct ones
    unhashed = [name for name, entry in lock.items() if not entry.hashes]
    assert not unhashed, f"no --hash for {unhashed}; re-lock with `{RELOCK}`"
    for entry in lock.values():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!]*", entry.version), entry
        for digest in entry.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), (entry.name, digest)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_torch_pins_equal_the_makefiles(variant: str) -> None:
    lock_path, pins_variable, lock_variable = VARIANTS[variant]
    assert makefile_variable(lock_variable) == str(lock_path.relative_to(REPO))
    pins = dict(pin.split("==") for pin in makefile_variable(pins_variable).split())
    assert set(pins) == {"torch", "torchvision"}
    lock = read_lock(lock_path)
    for name, version in pins.items():
        assert lock[name].version == version, (
            f"Makefile {pins_variable} has {name}=={version}, {lock_path.name} "
            f"{lock[name].version}; re-lock with `{RELOCK}`"
        )


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_locks_the_cuda_of_its_name(variant: str) -> None:
    """cuNN: CUDA runtime NN.x, and no CUDA library of another major version (-cuMM suffix)."""
    major = variant.removeprefix("cu")
    lock = read_lock(VARIANTS[variant][0])
    runtimes = {
        n: e.version for n, e in lock.items() if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", n)
    }
    assert len(runtimes) == 1, runtimes
    assert next(iter(runtimes.values())).split(".")[0] == major, (variant, runtimes)
    suffixes = {m.group(1) for n in lock if (m := re.fullmatch(r"nvidia-.+-cu(\d+)", n))}
    assert suffixes <= {major}, f"{variant} locks CUDA libraries for CUDA {sorted(suffixes)}"


@LOCKS
def test_lock_holds_the_build_backend_the_dockerfile_builds_with(lock_path: Path) -> None:
    # deploy/Dockerfile builds the wheel with --no-build-isolation: the backend must be locked
    # (the venv's own setuptools from ensurepip is older than the build requires).
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    lock = read_lock(lock_path)
    for requirement in map(Requirement, build["requires"]):
        if requirement.name == "wheel":  # setuptools >= 70.1 builds wheels itself
            continue
        entry = lock.get(canonical(requirement.name))
        assert entry is not None, f"{lock_path.name} lacks {requirement}; re-lock with `{RELOCK}`"
        assert requirement.specifier.contains(entry.version), (requirement, entry.version)


def test_lock_targets_the_dockerfiles_python() -> None:
    match = re.search(r"^ARG PYTHON_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "deploy/Dockerfile: no ARG PYTHON_VERSION=..."
    assert match.group(1) == makefile_variable("IMAGE_PYTHON"), (
        "deploy/Dockerfile's PYTHON_VERSION differs from the Makefile's IMAGE_PYTHON (the lock's "
        f"Python); align them and re-lock with `{RELOCK}`"
    )


def test_the_image_lock_pins_what_the_development_lock_pins() -> None:
    image, dev = read_lock(), read_lock(DEV_LOCK)
    missing = sorted(set(image) - set(dev))
    assert not missing, f"{missing} are in the image's lock only; re-lock with `{RELOCK}`"
    differ = {
        n: (e.version, dev[n].version) for n, e in image.items() if e.version != dev[n].version
    }
    assert not differ, (
        f"the image would ship versions the suite does not run (image, dev): {differ}; "
        f"re-lock with `{RELOCK}`"
    )


def test_the_variant_lock_differs_from_the_development_lock_in_torchs_build_only() -> None:
    variant, dev = read_lock(VARIANTS["cu12"][0]), read_lock(DEV_LOCK)
    other = {n: e.version for n, e in variant.items() if not TORCH_BUILD.fullmatch(n)}
    missing = sorted(set(other) - set(dev))
    assert not missing, f"{missing} are in the cu12 lock only; re-lock with `{RELOCK}`"
    differ = {n: (v, dev[n].version) for n, v in other.items() if v != dev[n].version}
    assert not differ, (
        f"the cu12 image would ship versions the suite does not run (cu12, dev): {differ}; "
        f"re-lock with `{RELOCK}`"
    )
    # ...and it does lock a different torch, with its own CUDA build.
    assert variant["torch"].version != dev["torch"].version
    assert {n for n in variant if TORCH_BUILD.fullmatch(n)} != {
        n for n in dev if TORCH_BUILD.fullmatch(n)
    }


def test_this_environment_runs_the_locked_versions() -> None:
    """The suite runs what the image ships: every locked distribution installed here is pinned.

    Distributions the lock pins for the image's platform but this machine does not install
    (none on Linux x86_64 today) are not required; a *different* version is a failure.
    """
    installed = {
        canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    differ = {
        name: (entry.version, installed[name])
        for name, entry in read_lock(DEV_LOCK).items()
        if name in installed and installed[name] != entry.version
    }
    assert not differ, (
        f"this environment's versions differ from {DEV_LOCK.relative_to(REPO)} (locked, "
        f"installed): {differ}; run `make install-dev` (it installs with the lock as constraints)"
    )
