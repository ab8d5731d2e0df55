from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslmem.errors import DataError
from sslmem.reporting import memorised_grid, sslmem_histogram
from sslmem.reporting.plots import _extremes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _columns(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sets = np.array(["candidate"] * 40 + ["independent"] * 30 + ["extra"] * 30)
    scores = np.concatenate(
        [rng.normal(0.3, 0.1, 40), rng.normal(-0.2, 0.1, 30), rng.normal(0, 0.1, 30)]
    )
    return {"set": sets, "sslmem_raw": scores}


def _png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_histogram_is_a_deterministic_png(tmp_path: Path) -> None:
    a = sslmem_histogram(_columns(), tmp_path / "a.png")
    b = sslmem_histogram(_columns(), tmp_path / "sub" / "b.png")
    assert _png_size(a) == (700, 420)
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_size > 5_000
    assert not list(tmp_path.glob(".*.png"))  # no temp file left behind


def test_histogram_handles_one_set_with_constant_scores(tmp_path: Path) -> None:
    cols = {"set": np.array(["candidate"] * 3), "sslmem_raw": np.zeros(3)}
    assert _png_size(sslmem_histogram(cols, tmp_path / "h.png")) == (700, 420)


@pytest.mark.parametrize(
    "cols",
    [
        {"set": np.array(["candidate"])},
        {"set": np.array(["candidate", "extra"]), "sslmem_raw": np.zeros(3)},
        {"set": np.array([], dtype=str), "sslmem_raw": np.zeros(0)},
        {"set": np.array(["candidate"]), "sslmem_raw": np.array([np.nan])},
    ],
)
def test_histogram_rejects_bad_columns(tmp_path: Path, cols: dict[str, np.ndarray]) -> None:
    with pytest.raises(DataError):
        sslmem_histogram(cols, tmp_path / "h.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_grid_is_a_deterministic_png(tmp_path: Path, channels: int) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, channels, 28, 28), dtype=torch.uint8, generator=gen)
    scores = np.linspace(-1, 1, 20)
    indices = np.arange(20) * 3
    a = memorised_grid(images, scores, indices, tmp_path / "a.png", k=16)
    b = memorised_grid(images.numpy(), torch.from_numpy(scores), indices, tmp_path / "b.png")
    width, height = _png_size(a)
    assert (width, height) == (1000, 710)  # 8 columns x (2 blocks x 2 rows)
    assert a.read_bytes() == b.read_bytes()


def test_grid_caps_k_at_the_number_of_points(tmp_path: Path) -> None:
    images = torch.zeros(5, 1, 8, 8, dtype=torch.uint8)
    path = memorised_grid(images, [0.1, 0.2, 0.3], [0, 2, 4], tmp_path / "g.png", k=16)
    assert _png_size(path)[0] == 375  # 3 columns


def test_extremes_order_and_ties() -> None:
    scores = np.array([0.5, 0.9, 0.1, 0.9, -0.3])
    indices = np.array([10, 7, 3, 2, 8])
    top, bottom = _extremes(scores, indices, 2)
    assert indices[top].tolist() == [2, 7]  # equal scores: lower dataset index first
    assert indices[bottom].tolist() == [8, 3]


@pytest.mark.parametrize(
    ("images", "scores", "indices"),
    [
        (torch.zeros(4, 1, 8, 8), [0.1], [0]),  # float images
        (torch.zeros(4, 2, 8, 8, dtype=torch.uint8), [0.1], [0]),  # 2 channels
        (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), [0.1, 0.2], [0]),  # lengths differ
        (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), [0.1], [4]),  # index out of range
        (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), [float("inf")], [0]),
        (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), [], []),
    ],
)
def test_grid_rejects_bad_inputs(
    tmp_path: Path, images: torch.Tensor, scores: list[float], indices: list[int]
) -> None:
    with pytest.raises(DataError):
        memorised_grid(images, scores, indices, tmp_path / "g.png")
