"""The code version: any change of the installed sources (or the image) changes it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sslmem
from sslmem import __version__
from sslmem.config import RuntimeSettings
from sslmem.errors import ConfigError
from sslmem.provenance import (
    IMAGE_DIGEST_ENV,
    code_version,
    image_digest,
    package_files,
    source_digest,
)

PACKAGE = Path(sslmem.__file__).parent


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the installed ``sslmem`` package sources."""
    copy = tmp_path / "sslmem"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_copy_has_the_digest_of_the_original(tree: Path) -> None:
    assert source_digest(tree) == source_digest(PACKAGE)


def test_one_changed_byte_changes_the_digest(tree: Path) -> None:
    before = source_digest(tree)
    target = tree / "memorization" / "sslmem.py"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte in the middle of a source file
    target.write_bytes(bytes(data))
    assert source_digest(tree) != before


def test_a_renamed_or_added_file_changes_the_digest(tree: Path) -> None:
    before = source_digest(tree)
    (tree / "errors.py").rename(tree / "errors2.py")
    renamed = source_digest(tree)
    assert renamed != before
    (tree / "new_module.py").write_text("")
    assert source_digest(tree) not in (before, renamed)


def test_bytecode_and_non_source_files_do_not_count(tree: Path) -> None:
    before = source_digest(tree)
    (tree / "__pycache__").mkdir(exist_ok=True)
    (tree / "__pycache__" / "errors.cpython-311.pyc").write_bytes(b"\x00stale")
    (tree / "notes.txt").write_text("not code")
    assert source_digest(tree) == before


def test_the_installed_sources_cover_components_and_pipelines() -> None:
    names = set(package_files())
    assert "sslmem/__init__.py" in names and "sslmem/provenance.py" in names
    assert "sslmem/components/train_encoder.py" in names
    assert "sslmem/pipelines/memorization.py" in names


def test_code_version_names_version_sources_and_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IMAGE_DIGEST_ENV, raising=False)
    plain = code_version()
    assert plain == f"{__version__}+src.{source_digest()[:16]}"
    digest = "sha256:" + "0f" * 32
    monkeypatch.setenv(IMAGE_DIGEST_ENV, f" {digest}\n")  # read through RuntimeSettings
    assert RuntimeSettings().image_digest == digest
    assert code_version() == f"{plain}+image.{digest}"
    monkeypatch.setenv(IMAGE_DIGEST_ENV, "  ")  # blank is unset
    assert code_version() == plain
    # Explicit settings win over the environment.
    assert code_version(RuntimeSettings(image_digest=None)) == plain
    assert code_version(RuntimeSettings(image_digest=digest)) == f"{plain}+image.{digest}"


@pytest.mark.parametrize("bad", ["latest", "sha256:xyz", "sha256:" + "AB" * 32])
def test_a_malformed_image_digest_is_a_clear_error(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IMAGE_DIGEST_ENV, bad)
    with pytest.raises(ConfigError, match=f"{IMAGE_DIGEST_ENV}: .*not an image digest") as info:
        code_version()
    assert "sha256:<64 lower-case hex digits>" in info.value.problem


def test_importing_provenance_stays_light() -> None:
    # The pipeline compiler imports it for IMAGE_DIGEST_ENV and image_digest: no torch.
    probe = "import sys, sslmem.provenance; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_image_digest_of_a_reference() -> None:
    digest = "sha256:" + "12" * 32
    assert image_digest(f"reg.example:5000/team/sslmem@{digest}") == digest
    assert image_digest("reg.example:5000/team/sslmem:1.0") is None
