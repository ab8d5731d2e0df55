"""Workflow functions refuse an unusable output through ``sslmem.outputs``, before the work."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslmem.config import ExperimentConfig
from sslmem.errors import OutputError
from sslmem.workflow.score import score_pair_shard, score_to_dir
from sslmem.workflow.unitmem import units_to_dir


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    file = tmp_path / "afile"
    file.write_text("x")
    return file


def test_a_file_as_shard_directory_is_refused_before_reading_anything(
    afile: Path, tmp_path: Path
) -> None:
    # The manifest and checkpoints do not exist: the output is checked first.
    with pytest.raises(OutputError, match=r"cannot write shard directory .*afile: it is a regular"):
        score_pair_shard(
            candidate_checkpoints=[tmp_path / "f.safetensors"],
            reference_checkpoints=[tmp_path / "g.safetensors"],
            manifest_path=tmp_path / "missing.json",
            config=ExperimentConfig(),
            shard="0:4",
            out_dir=afile,
        )
    assert afile.read_text() == "x"


def test_a_file_as_unitmem_directory_is_refused_before_reading_anything(
    afile: Path, tmp_path: Path
) -> None:
    with pytest.raises(OutputError, match=r"output directory .*afile: it is a regular"):
        units_to_dir(
            encoder=tmp_path / "f.safetensors",
            manifest_path=tmp_path / "missing.json",
            config=ExperimentConfig(),
            out_dir=afile,
        )


def test_a_file_as_report_directory_is_refused_before_reading_anything(
    afile: Path, tmp_path: Path
) -> None:
    with pytest.raises(OutputError, match=r"output directory .*afile is a file, not a directory"):
        score_to_dir(
            candidate_checkpoints=[tmp_path / "f.safetensors"],
            reference_checkpoints=[tmp_path / "g.safetensors"],
            manifest_path=tmp_path / "missing.json",
            config=ExperimentConfig(),
            out_dir=afile,
        )
