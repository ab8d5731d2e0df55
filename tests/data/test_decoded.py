"""The node-local decoded cache: decode once, memory-map afterwards, never trust a partial entry.

Expectations come from the bundled pixels the sources yield (and, for colour promotion, the
grey pixels replicated by hand), never from the cache's own output.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sslmem.data import load_dataset
from sslmem.data.decoded import load_decoded
from sslmem.errors import DataError

Sample = tuple[npt.NDArray[np.uint8], int]


def _bundled(n: int) -> npt.NDArray[np.uint8]:
    """``[n, 28, 28]`` grey bundled training images."""
    return load_dataset("bundled").images[:n, 0].numpy().copy()


class Source:
    """Yields given samples and counts how often it was asked to."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples, self.calls = samples, 0

    def __call__(self) -> Iterator[Sample]:
        self.calls += 1
        yield from self.samples


def _mapped_files() -> str:
    return Path("/proc/self/maps").read_text()


def test_an_entry_is_decoded_once_then_memory_mapped(tmp_path: Path) -> None:
    pixels = _bundled(30)
    labels = [i % 7 for i in range(30)]
    source = Source([(image, label) for image, label in zip(pixels, labels, strict=True)])
    first = load_decoded(tmp_path, "abc-native-v1", source)
    assert list(first.images.shape) == [30, 1, 28, 28]
    np.testing.assert_array_equal(first.images[:, 0].numpy(), pixels)
    np.testing.assert_array_equal(first.labels.numpy(), labels)
    assert first.path == tmp_path / "abc-native-v1.u8"
    assert first.path.stat().st_size == 30 * 28 * 28
    # Mapped, not read into memory: the kernel lists the file among this process's mappings.
    assert str(first.path) in _mapped_files()

    again = load_decoded(tmp_path, "abc-native-v1", source)
    assert source.calls == 1  # the entry was trusted: nothing decoded again
    np.testing.assert_array_equal(again.images.numpy(), first.images.numpy())
    # Copy-on-write: writing to the tensor never changes the cached file.
    again.images[0].fill_(7)
    np.testing.assert_array_equal(
        np.fromfile(first.path, dtype=np.uint8)[: 28 * 28].reshape(28, 28), pixels[0]
    )


def test_a_colour_image_after_grey_ones_makes_the_whole_set_rgb(tmp_path: Path) -> None:
    grey = _bundled(2)
    colour = np.stack([grey[0], grey[1], 255 - grey[0]], axis=-1)  # [28, 28, 3]
    source = Source([(grey[0], 0), (grey[1], 1), (colour, 1)])
    decoded = load_decoded(tmp_path, "mixed", source)
    assert list(decoded.images.shape) == [3, 3, 28, 28]
    for i in range(2):
        for channel in range(3):  # grey replicated into every channel
            np.testing.assert_array_equal(decoded.images[i, channel].numpy(), grey[i])
    np.testing.assert_array_equal(decoded.images[2].numpy(), colour.transpose(2, 0, 1))
    assert source.calls == 2  # the first pass stopped at the colour image


def test_a_failing_source_leaves_no_entry_and_the_next_load_decodes(tmp_path: Path) -> None:
    pixels = _bundled(3)

    def broken() -> Iterator[Sample]:
        yield pixels[0], 0
        raise DataError("cannot decode image s3://b/p/x/2.png: truncated", "remove or fix it")

    with pytest.raises(DataError, match="truncated"):
        load_decoded(tmp_path, "k1", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1.lock"]  # no part of an entry

    decoded = load_decoded(tmp_path, "k1", Source([(pixels[i], i) for i in range(3)]))
    np.testing.assert_array_equal(decoded.images[:, 0].numpy(), pixels)


@pytest.mark.parametrize("damage", ["no-json", "short-pixels", "other-format"])
def test_an_incomplete_or_foreign_entry_is_rebuilt(tmp_path: Path, damage: str) -> None:
    pixels = _bundled(4)
    source = Source([(pixels[i], i) for i in range(4)])
    decoded = load_decoded(tmp_path, "k2", source)
    if damage == "no-json":  # a crash between the pixels and the JSON that marks them done
        (tmp_path / "k2.json").unlink()
    elif damage == "short-pixels":
        with decoded.path.open("r+b") as handle:
            handle.truncate(100)
    else:
        (tmp_path / "k2.json").write_text('{"format": 99, "shape": [4, 1, 28, 28]}')
    rebuilt = load_decoded(tmp_path, "k2", source)
    assert source.calls == 2
    np.testing.assert_array_equal(rebuilt.images[:, 0].numpy(), pixels)


def test_a_key_that_is_not_a_plain_file_name_is_refused(tmp_path: Path) -> None:
    for key in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(DataError, match="not a plain file name"):
            load_decoded(tmp_path, key, Source([]))


def test_an_empty_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images to decode"):
        load_decoded(tmp_path, "empty", Source([]))
    assert not list(tmp_path.glob("empty.u8")) and not list(tmp_path.glob("empty.json"))


_LOADER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sslmem.data import load_dataset
    from sslmem.data.decoded import load_decoded

    root, log = Path(sys.argv[1]), Path(sys.argv[2])
    pixels = load_dataset("bundled").images[:40, 0].numpy()

    def slow():
        with log.open("a") as handle:
            handle.write("decoded\\n")
        for i, image in enumerate(pixels):
            time.sleep(0.1)  # long enough that both processes want the entry at once
            yield image, i % 3

    decoded = load_decoded(root, "shared-entry", slow)
    assert (decoded.images[:, 0].numpy() == pixels).all()
    """
)


@pytest.mark.slow
def test_concurrent_loaders_on_one_node_decode_once(tmp_path: Path) -> None:
    log = tmp_path / "decodes.log"
    processes = [
        subprocess.Popen([sys.executable, "-c", _LOADER, str(tmp_path / "cache"), str(log)])
        for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    assert log.read_text().splitlines() == ["decoded"]  # the second waited, then mapped it
