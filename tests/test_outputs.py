import os
import re
from pathlib import Path

import pytest

from sslmem.errors import OutputError
from sslmem.outputs import (
    check_output_dir,
    check_output_file,
    check_output_uri,
    check_replaceable_dir,
)


def test_a_writable_destination_passes_and_nothing_is_created(tmp_path: Path) -> None:
    assert check_output_file(tmp_path / "a" / "b" / "out.json") == tmp_path / "a" / "b" / "out.json"
    check_output_dir(tmp_path / "run")
    check_output_dir(tmp_path)  # an existing directory
    (tmp_path / "old.json").write_text("{}")
    check_output_file(tmp_path / "old.json")  # an existing file is replaced later
    check_output_uri(f"file://{tmp_path}/x.json")
    check_output_uri("s3://bucket/key.json")  # remote: the store reports its own errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]


def test_files_in_the_way_are_named(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=r"afile is a file, not a directory"):
        check_output_file(tmp_path / "afile" / "sub" / "out.json")
    with pytest.raises(OutputError, match=r"it is a directory"):
        check_output_file(tmp_path)
    with pytest.raises(OutputError, match=r"it is a regular file, not a directory"):
        check_output_dir(tmp_path / "afile")
    with pytest.raises(OutputError, match=r"path is empty"):
        check_output_file("")
    with pytest.raises(OutputError, match=r"path is empty"):
        check_output_uri(" ")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_directory_that_takes_no_files_is_refused_even_for_root() -> None:
    with pytest.raises(OutputError, match=r"/proc is not writable") as info:
        check_output_dir("/proc/sslmem-run")
    assert info.value.fix
    with pytest.raises(OutputError, match=r"/proc is not writable"):
        check_output_uri("file:///proc/x.json")


def test_a_name_longer_than_name_max_or_not_utf8_is_refused_and_nothing_made(
    tmp_path: Path,
) -> None:
    from sslmem.atomic import name_max
    from sslmem.outputs import check_path_names

    limit = name_max(tmp_path)
    check_output_file(tmp_path / "new" / ("f" * limit))  # exactly NAME_MAX bytes: fine
    with pytest.raises(OutputError, match=rf"is {limit + 1} bytes long.*at most {limit} bytes"):
        check_output_dir(tmp_path / "new" / ("d" * (limit + 1)) / "run")
    with pytest.raises(OutputError, match=r"path .*o\\xff is not valid UTF-8"):
        check_path_names(tmp_path / os.fsdecode(b"o\xff"))
    assert list(tmp_path.iterdir()) == []


def test_a_replaceable_dir_holds_only_a_runs_files(tmp_path: Path) -> None:
    """``check_replaceable_dir``: the check every whole-directory writer calls before the work."""
    owned = {"summary.json", "scores.parquet"}
    out = tmp_path / "report"
    assert check_replaceable_dir(out, owned=owned) == out.resolve()
    assert not out.exists()  # checked, nothing made
    out.mkdir()
    (out / "summary.json").write_text("{}")
    assert check_replaceable_dir(out, owned=owned) == out.resolve()  # an older run: replaced
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds files that are not part of a report \(notes"):
        check_replaceable_dir(out, owned=owned)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=r"output directory .*afile is a file, not a directory"):
        check_replaceable_dir(tmp_path / "afile", owned=owned)
    with pytest.raises(OutputError, match=r"parent directory of the output .*afile: it is a reg"):
        check_replaceable_dir(tmp_path / "afile" / "sub", owned=owned)  # the parent's check
    with pytest.raises(OutputError, match="contains the working directory"):
        check_replaceable_dir(Path.cwd().parent, owned=owned)
    with pytest.raises(OutputError, match="NAME_MAX"):
        check_replaceable_dir(tmp_path / ("n" * 300), owned=owned)


#: Where "a file is in the way of an output directory" may be decided: here, and nowhere else.
_DIR_CHECK = re.compile(r"\.exists\(\) and not \w+\.is_dir\(\)")
_ROOT = Path(__file__).resolve().parents[1]


def test_output_checks_have_one_home() -> None:
    sources = [
        *(_ROOT / "src" / "sslmem").rglob("*.py"),
        *(_ROOT / "components").rglob("*.py"),
        *(_ROOT / "pipelines").rglob("*.py"),
    ]
    homes = sorted(
        str(path.relative_to(_ROOT)) for path in sources if _DIR_CHECK.search(path.read_text())
    )
    assert homes == ["src/sslmem/outputs.py"], "call sslmem.outputs instead of checking by hand"
    # The check can fail: it sees a copy such as the shard step's former one.
    assert _DIR_CHECK.search("    if out.exists() and not out.is_dir():\n")
