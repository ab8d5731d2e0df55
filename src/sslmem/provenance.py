"""The identity of the code that computes: what pipeline cache keys and provenance record.

A cached pipeline step (split, training, evaluation) may only be reused when the code that
would run now is the code that produced it. :func:`code_version` names that code: the package
version, a digest of the installed package sources (``sslmem`` with its ``components`` and
``pipelines``), and -- on a cluster, when known -- the digest of the runtime image, which also
pins every dependency (torch, kfp, ...). The image digest comes from ``SSLMEM_IMAGE_DIGEST``
(read and validated as :attr:`sslmem.config.RuntimeSettings.image_digest`, like every other
variable); ``sslmem pipeline compile/submit --image repo@sha256:...`` sets it on the step that
computes the code version, and a platform config may set it too (``env:``). Importing this module
stays light (no torch): the pipeline's compiler reads :data:`IMAGE_DIGEST_ENV` and
:func:`image_digest`; only :func:`code_version` reads the settings.

The pipeline computes the code version once per run, in its first (never cached) step, and
hands it to every cached step as an input, so the cache key of a step changes whenever the code
inside the image or virtualenv changes -- in ``sslmem run`` (KFP local runner) as on a cluster.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sslmem import __version__

if TYPE_CHECKING:
    from sslmem.config import RuntimeSettings

#: Packages whose sources make up the code version (the last two are mapped into sslmem).
CODE_PACKAGES = ("sslmem", "sslmem.components", "sslmem.pipelines")
#: The environment variable holding the runtime image's digest (``sha256:<64 hex>``).
IMAGE_DIGEST_ENV = "SSLMEM_IMAGE_DIGEST"
_IMAGE_REF_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")


def _source_files(package: str, root: Path) -> dict[str, Path]:
    """Every ``*.py`` file under ``root`` by its name inside the installed package tree."""
    prefix = package.replace(".", "/")
    files: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts:
            continue
        files[f"{prefix}/{relative.as_posix()}"] = path
    return files


def tree_digest(files: dict[str, Path]) -> str:
    """SHA-256 over named files: each name and content, in name order.

    Args:
        files: ``{name inside the package tree: file}``.

    Returns:
        64 hex digits; any change of a byte, a name, or the set of files changes it.

    """
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name].read_bytes()
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def package_files(packages: tuple[str, ...] = CODE_PACKAGES) -> dict[str, Path]:
    """The installed source files of ``packages``, named as in a wheel install.

    An editable install keeps ``components/`` and ``pipelines/`` outside ``src/sslmem`` and a
    wheel keeps them inside it; naming files by package path gives both the same digest.
    """
    files: dict[str, Path] = {}
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            files.update(_source_files(package, Path(location)))
    return files


def source_digest(root: Path | None = None, package: str = "sslmem") -> str:
    """The digest of the installed sources, or of a package tree at ``root``.

    Args:
        root: A directory holding a copy of ``package`` (its ``__init__.py`` level);
            ``None`` for the installed packages :data:`CODE_PACKAGES`.
        package: The package name of ``root``'s files.

    Returns:
        64 hex digits.

    """
    if root is None:
        return tree_digest(package_files())
    return tree_digest(_source_files(package, Path(root)))


def image_digest(image: str) -> str | None:
    """The ``sha256:...`` digest pinned by an image reference ``repo@sha256:...``, if any."""
    match = _IMAGE_REF_DIGEST.search(image)
    return match.group(1) if match else None


def code_version(settings: RuntimeSettings | None = None) -> str:
    """The identity of the code this process runs, for cache keys and provenance.

    Args:
        settings: Where the image digest is read (``image_digest``, from
            ``SSLMEM_IMAGE_DIGEST``); default: read from the environment.

    Returns:
        ``"<version>+src.<16 hex>"``, plus ``"+image.sha256:<64 hex>"`` when the image digest
        is known, e.g. ``"0.1.0+src.3f2a9c0d1b7e4a55"``.

    Raises:
        ConfigError: ``SSLMEM_IMAGE_DIGEST`` is set but is not ``sha256:<64 hex digits>`` (or
            another runtime setting is invalid; the message names the variable).

    """
    if settings is None:
        from sslmem.config import RuntimeSettings  # deferred: the config imports torch

        settings = RuntimeSettings()
    version = f"{__version__}+src.{source_digest()[:16]}"
    if settings.image_digest is None:
        return version
    return f"{version}+image.{settings.image_digest}"
