"""The train component with 2 processes: torchrun + DDP (gloo on the CPU), its own code path.

The component's function is called as the KFP runner calls it, with
``SSLMEM_TRAIN_NPROC_PER_NODE=2`` (what the pipeline sets for a step with 2 GPUs): it launches
``python -m torch.distributed.run --standalone --nproc-per-node=2`` around the train step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from kfp import dsl

from sslmem.components import prepare_split, resolve_config, train_encoder
from sslmem.models import load_checkpoint
from tests.pipelines.conftest import TINY_RUN_CONFIG


def _artifact(cls: Any, root: Path, name: str) -> Any:
    return cls(name=name, uri=str(root / name), metadata={})


@pytest.mark.slow
def test_two_process_training_writes_one_checkpoint_with_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("SSLMEM_STORE_URI", str(tmp_path / "store"))
    monkeypatch.setenv("SSLMEM_DEVICE", "cpu")
    monkeypatch.setenv("SSLMEM_NUM_THREADS", "1")
    raw = yaml.safe_load(TINY_RUN_CONFIG)  # bundled data, 1 epoch, batch 16
    raw.pop("pipeline")
    _, split_json, recipe_json, _ = resolve_config(config_yaml=yaml.safe_dump(raw))
    split = _artifact(dsl.Dataset, tmp_path, "split")
    split_sha256, _ = prepare_split(split_json=split_json, split=split)

    monkeypatch.setenv("SSLMEM_TRAIN_NPROC_PER_NODE", "2")
    model = _artifact(dsl.Model, tmp_path, "model")
    train_encoder(
        split=split,
        split_sha256=split_sha256,
        recipe_json=recipe_json,
        role="candidate",
        seed=3,
        mlflow_experiment="ddp",
        model=model,
    )

    saved = load_checkpoint(model.path)
    meta = saved.metadata
    assert meta["world_size"] == 2 and meta["device_type"] == "cpu"
    assert meta["role"] == "candidate" and meta["seed"] == 3
    assert meta["split_manifest_sha256"] == split_sha256
    # The global batch is the configured one: 16 images per step over both processes.
    assert meta["training"]["batch_size"] == 16
    assert meta["steps"] == meta["num_train"] // 16
    assert meta["epochs"] == 1
    assert json.loads(recipe_json)["training"]["batch_size"] == 16
    # The component's outputs come from rank 0, read back through the launcher.
    assert model.metadata["seed"] == 3 and model.metadata["epochs"] == 1
    assert model.metadata["num_train"] == meta["num_train"]
    assert len(model.metadata["sha256"]) == 64
    assert model.metadata["final_loss"] == pytest.approx(meta["final_loss"])
    # Only rank 0 talks to MLflow: exactly one run, the one the model names.
    mlflow.set_tracking_uri(tracking)
    runs = mlflow.search_runs(experiment_names=["ddp"], output_format="list")
    assert [run.info.run_id for run in runs] == [model.metadata["mlflow_run_id"]]
    # Nothing but the checkpoint next to it (rank 1 wrote no file).
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("model")) == ["model"]
