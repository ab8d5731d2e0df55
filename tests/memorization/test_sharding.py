"""Sharded scoring equals the unsharded run exactly; the merge refuses gaps and overlaps."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sslmem.config import ScoringConfig, SplitConfig
from sslmem.data import ImageDataset, SplitManifest, load_dataset, make_split
from sslmem.errors import ConfigError, ScoringError
from sslmem.memorization.scoring import SCORE_COLUMNS, ScoreReport, score_split, select_points
from sslmem.memorization.sharding import (
    ShardTable,
    merge_shards,
    parse_range,
    read_shards,
    score_shard,
    shard_ranges,
    write_shard,
)
from tests.memorization.test_scoring import SPEC, _pair

SCORING = ScoringConfig(views=2, sets=("candidate", "independent", "extra"), chunk_size=4)
#: Summary fields that legitimately differ between a sharded and an unsharded run.
TIMING = {"seconds", "points_per_second", "shard_size"}


@pytest.fixture(scope="module")
def data() -> tuple[ImageDataset, SplitManifest]:
    dataset = load_dataset("bundled")
    return dataset, make_split(dataset, fractions=SplitConfig(pool_size=60, seed=1))


@pytest.fixture(scope="module")
def pair(data: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return _pair(tmp_path_factory.mktemp("ckpt"), data[1])


@pytest.fixture(scope="module")
def unsharded(data: Any, pair: Any) -> ScoreReport:
    dataset, split = data
    return score_split([pair[0]], [pair[1]], dataset, split, scoring=SCORING, augment_spec=SPEC)


def _shards(data: Any, pair: Any, size: int) -> list[ShardTable]:
    dataset, split = data
    total = len(_points(data))
    return [
        score_shard(
            [pair[0]],
            [pair[1]],
            dataset,
            split,
            start=a,
            stop=b,
            scoring=SCORING,
            augment_spec=SPEC,
        )
        for a, b in shard_ranges(total, size)
    ]


def _points(data: Any) -> Any:
    return select_points(data[1], SCORING.sets, shared_sample=SCORING.shared_sample, seed=0)[0]


def _merge(data: Any, pair: Any, shards: list[ShardTable]) -> ScoreReport:
    return merge_shards(shards, [pair[0]], [pair[1]], data[1], scoring=SCORING, augment_spec=SPEC)


def test_shard_ranges_cover_the_points_with_a_short_last_shard() -> None:
    assert shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_ranges(3, 1) == [(0, 1), (1, 2), (2, 3)]
    assert shard_ranges(5, 100) == [(0, 5)]
    with pytest.raises(ConfigError, match="shard size"):
        shard_ranges(10, 0)


def test_a_range_is_parsed_or_refused() -> None:
    assert parse_range("3:17") == (3, 17)
    for bad in ("5:5", "7:3", "x:4", "4", "-1:3", "1:2:3"):
        with pytest.raises(ConfigError, match="START:STOP"):
            parse_range(bad)


@pytest.mark.slow
@pytest.mark.parametrize("size", [1, 6, 7, 10**6])
def test_sharded_scores_equal_the_unsharded_run_exactly(
    data: Any, pair: Any, unsharded: ScoreReport, size: int, tmp_path: Path
) -> None:
    """Per-point values bit-identical (CPU), summary equal but for timing and the shard size.

    Sizes: every point alone, sizes that do (6 of 18) and do not (7) divide the point count, and
    one shard holding everything. The shards go through their Parquet tables.
    """
    n = len(unsharded.columns["sample_index"])
    assert n % 6 == 0 and n % 7 != 0  # the sizes above mean what their names say
    for shard in _shards(data, pair, size):
        write_shard(shard, tmp_path)
    merged = _merge(data, pair, read_shards([tmp_path]))
    for name in SCORE_COLUMNS:
        np.testing.assert_array_equal(merged.columns[name], unsharded.columns[name], name)
    assert merged.summary.model_dump(exclude=TIMING) == unsharded.summary.model_dump(exclude=TIMING)
    assert merged.summary.shard_size == min(size, n)
    assert unsharded.summary.shard_size is None


@pytest.fixture(scope="module")
def sixes(data: Any, pair: Any) -> list[ShardTable]:
    return _shards(data, pair, 6)


def test_the_merge_names_a_missing_range(data: Any, pair: Any, sixes: list[ShardTable]) -> None:
    n = sixes[-1].info.stop
    with pytest.raises(ScoringError, match=r"missing \[6, 12\)") as err:
        _merge(data, pair, [sixes[0], *sixes[2:]])
    assert "--shard" in (err.value.fix or "")
    with pytest.raises(ScoringError, match=rf"missing \[{n - 6}, {n}\)"):
        _merge(data, pair, sixes[:-1])


def test_the_merge_names_an_overlap(data: Any, pair: Any, sixes: list[ShardTable]) -> None:
    with pytest.raises(ScoringError, match=r"scored more than once \[6, 12\)"):
        _merge(data, pair, [*sixes, sixes[1]])


def test_the_merge_refuses_shards_of_another_run(
    data: Any, pair: Any, sixes: list[ShardTable]
) -> None:
    other = ScoringConfig(**{**SCORING.model_dump(), "seed": 1})
    with pytest.raises(ScoringError, match="another scoring"):
        merge_shards(sixes, [pair[0]], [pair[1]], data[1], scoring=other, augment_spec=SPEC)
    with pytest.raises(ScoringError, match="another candidates"):
        merge_shards(sixes, [pair[1]], [pair[1]], data[1], scoring=SCORING, augment_spec=SPEC)
    # A waiver the shards were not checked under is never recorded in the summary.
    with pytest.raises(ScoringError, match="another allow_cross_split"):
        merge_shards(
            sixes, [pair[0]], [pair[1]], data[1], scoring=SCORING, augment_spec=SPEC,
            allow_cross_split=True,
        )  # fmt: skip


def test_a_shard_beyond_the_points_is_refused(data: Any, pair: Any) -> None:
    dataset, split = data
    with pytest.raises(ConfigError, match="not within the 18 scored points"):
        score_shard(
            [pair[0]],
            [pair[1]],
            dataset,
            split,
            start=10,
            stop=19,
            scoring=SCORING,
            augment_spec=SPEC,
        )


def test_a_directory_without_shards_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no shard table"):
        read_shards([tmp_path])
