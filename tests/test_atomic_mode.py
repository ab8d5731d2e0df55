"""Every writer honours the umask: 0644 under umask 022, 0600 under 077.

A file written with mode 0600 whatever the umask could not be read by other users or pods
sharing a volume; ``open(path, "w")`` gives ``0666 & ~umask``, and so must every atomic write.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from sslmem.atomic import atomic_path, atomic_write_bytes
from sslmem.config import load_experiment_config
from sslmem.data import ImageDataset, make_split, save_manifest
from sslmem.data.store import write_bytes
from sslmem.models import build_encoder, save_checkpoint
from sslmem.reporting.plots import sslmem_histogram
from sslmem.training.resume import ResumeState, save_resume_state


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    previous = os.umask(0o022)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


def _bytes(path: Path) -> None:
    atomic_write_bytes(path, b"data")


def _path(path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("data")


def _store_json(path: Path) -> None:
    write_bytes(str(path), b"{}\n")


def _manifest(path: Path) -> None:
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 4, 4)
    dataset = ImageDataset(
        name="bundled", images=images, labels=torch.arange(40) % 2, classes=("a", "b")
    )
    save_manifest(make_split(dataset), path)


def _checkpoint(path: Path) -> None:
    config = load_experiment_config(None, ["model.arch_kwargs={widths: [4, 8]}"])
    save_checkpoint(build_encoder(config.model, in_channels=1, image_size=8), path, metadata={})


def _resume(path: Path) -> None:
    state = ResumeState(
        epoch=1,
        global_step=1,
        model={"w": torch.zeros(2)},
        optimizer={},
        scheduler={},
        rng={"cpu": torch.get_rng_state()},
        history=[],
        run="{}",
    )
    save_resume_state(path, state)


def _png(path: Path) -> None:
    sslmem_histogram({"set": np.array(["candidate"] * 3), "sslmem_raw": np.zeros(3)}, path)


WRITERS = {
    "atomic_write_bytes": (_bytes, "out.bin"),
    "atomic_path": (_path, "out.txt"),
    "store-json": (_store_json, "summary.json"),
    "manifest": (_manifest, "split.json"),
    "checkpoint": (_checkpoint, "encoder.safetensors"),
    "resume": (_resume, "resume.pt"),
    "png": (_png, "histogram.png"),
}


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_written_files_get_the_mode_the_umask_allows(
    writer: str, mask: int, mode: int, tmp_path: Path, umask: Callable[[int], None]
) -> None:
    write, name = WRITERS[writer]
    umask(mask)
    target = tmp_path / name
    write(target)
    assert stat.S_IMODE(target.stat().st_mode) == mode
    # Replacing an existing file applies the umask too (the temporary file is new each time).
    umask(0o022)
    write(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [name]
