"""``shard_size > 0`` through KFP's local runner: the sharded branch gives the one-pass score."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslmem.cli import main
from sslmem.tracking import tags as T
from sslmem.workflow import read_run_result
from tests.pipelines.conftest import TINY_RUN_CONFIG

pytestmark = pytest.mark.slow

MODEL = "tiny-encoder"
TIMING = {"seconds", "points_per_second", "shard_size"}


def test_a_sharded_pipeline_run_scores_as_the_one_pass_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_RUN_CONFIG)
    out = tmp_path / "out"
    assert main(["run", "--config", str(config), "--out", str(out)]) == 0
    capsys.readouterr()
    # Same inputs and code: the encoders are reused from the cache; only scoring differs.
    args = ["run", "--config", str(config), "--out", str(out), "--set", "pipeline.shard_size=7"]
    assert main(args) == 0
    err = capsys.readouterr().err
    for task in ("plan-score-shards", "score-shard", "merge-score-shards"):
        assert f"{task}: SUCCESS" in err, task
    assert "train-encoder: cached" in err

    from sslmem.tracking import configure_mlflow, get_version_tags

    configure_mlflow(f"sqlite:///{out / 'mlflow.db'}")
    results = [
        read_run_result(MODEL, pipeline_run_id=get_version_tags(MODEL, v)[T.PIPELINE_RUN])
        for v in ("1", "2")
    ]
    assert [r.candidate.tags[T.STATUS] for r in results] == ["scored", "scored"]
    plain, sharded = (r.score for r in results)
    assert plain is not None and sharded is not None
    assert (plain.shard_size, sharded.shard_size) == (None, 7)
    # Same per-set statistics and verdict, exactly: the same scores.
    assert sharded.model_dump(exclude=TIMING) == plain.model_dump(exclude=TIMING)
