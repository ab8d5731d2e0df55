from pathlib import Path

import pytest

from sslmem.atomic import TMP_MARKER, atomic_path, atomic_write_bytes, atomic_writer


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_names_the_temporary_with_marker_and_suffix(tmp_path: Path) -> None:
    target = tmp_path / "figure.png"
    with atomic_path(target, suffix=".png") as tmp:
        assert TMP_MARKER in tmp.name and tmp.name.endswith(".png") and tmp.parent == tmp_path
        assert not target.exists()  # nothing visible until the block ends
        tmp.write_bytes(b"png")
    assert target.read_bytes() == b"png" and not tmp.exists()


def test_temporary_names_are_cut_so_a_name_of_name_max_bytes_can_be_written(
    tmp_path: Path,
) -> None:
    import os

    from sslmem.atomic import name_max, sibling_name

    limit = name_max(tmp_path)
    name = "é" * ((limit - 1) // 2) + "x" * (limit - 2 * ((limit - 1) // 2))  # limit bytes
    with atomic_path(tmp_path / name, suffix=".png") as tmp:
        assert len(os.fsencode(tmp.name)) <= limit and TMP_MARKER in tmp.name
        tmp.write_bytes(b"png")
    assert [p.name for p in tmp_path.iterdir()] == [name]
    cut = sibling_name(tmp_path / name, ".staging-0123abcd").name
    assert cut.startswith(".é") and cut.endswith("é.staging-0123abcd")  # whole characters
    assert sibling_name(tmp_path / "out", ".old-1").name == ".out.old-1"  # short: unchanged
