"""End to end against a real ``mlflow server`` whose artifacts live in a real S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from minio import Minio

from sslmem.augment import AugmentationSpec
from sslmem.config import ExperimentConfig
from sslmem.models import save_checkpoint
from sslmem.tracking import (
    MlflowEpochLogger,
    RetryPolicy,
    check_tracking_server,
    configure_mlflow,
    get_version_tags,
    load_registered_encoder,
    log_config,
    pipeline_run,
    provenance_tags,
    register_encoder,
    resolve_alias,
    set_alias,
    set_version_tags,
)
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from tests.servers import MlflowServer, S3Server, start_mlflow_server
from tests.tracking.conftest import tiny_registry_encoder

pytestmark = [pytest.mark.slow, pytest.mark.s3]


@pytest.fixture(scope="module")
def mlflow_server(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[MlflowServer, str]]:
    bucket = s3_server.make_bucket("mlflow")
    env = s3_server.artifact_env()
    with start_mlflow_server(
        tmp_path_factory.mktemp("mlflow-server"), f"s3://{bucket}/", env=env
    ) as server:
        print(f"mlflow server ready in {server.startup_s:.1f} s")
        yield server, bucket


def test_run_registry_and_weights_only_round_trip(
    mlflow_server: tuple[MlflowServer, str], s3_server: S3Server, tmp_path: Path
) -> None:
    server, bucket = mlflow_server
    configure_mlflow(server.url, retry=RetryPolicy(max_retries=2, timeout=30))
    check_tracking_server()

    encoder = tiny_registry_encoder(0).eval()
    path = save_checkpoint(encoder, tmp_path / "enc.safetensors", metadata={"seed": 0})
    reference = save_checkpoint(
        tiny_registry_encoder(1), tmp_path / "ref.safetensors", metadata={"seed": 1}
    )
    with pipeline_run("kfp-e2e", step="train", experiment="sslmem-e2e") as run_id:
        log_config(ExperimentConfig())
        callback = MlflowEpochLogger("candidate")
        for epoch in range(2):
            callback.on_epoch_end(epoch, {"loss": 2.0 - epoch})
        ref_version = register_encoder(reference, model_name="sslmem-encoder")
        set_alias("sslmem-encoder", "reference", ref_version.version)
        tags = provenance_tags(
            reference_version=resolve_alias("sslmem-encoder", "reference"),
            split_manifest_uri=f"s3://{bucket}/splits/split.json",
            split_manifest_sha256="cd" * 32,
            augmentation=AugmentationSpec(),
            layer="backbone",
            seed=0,
        )
        version = register_encoder(
            path, model_name="sslmem-encoder", tags=tags, augmentation=AugmentationSpec()
        )
    assert version.run_id == run_id and version.version == "2"
    history = client().get_metric_history(run_id, "candidate/loss")
    assert [m.value for m in history] == [2.0, 1.0]

    set_version_tags("sslmem-encoder", version.version, {T.STATUS: "scored"})
    set_alias("sslmem-encoder", "champion", version.version)
    assert resolve_alias("sslmem-encoder", "champion") == "2"
    stored = get_version_tags("sslmem-encoder", "2")
    assert stored[T.REFERENCE_VERSION] == "1" and stored[T.STATUS] == "scored"

    loaded = load_registered_encoder("models:/sslmem-encoder@champion", cache_dir=tmp_path / "c")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.encoder(x), encoder(x))
        assert torch.equal(loaded.encoder.features(x), encoder.features(x))

    # Artifacts went through the server into the S3 bucket; nothing is pickled.
    s3 = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )
    objects = [o.object_name for o in s3.list_objects(bucket, recursive=True)]
    assert any(name.endswith("config/experiment_config.json") for name in objects)
    assert sum(name.endswith("artifacts/checkpoint.safetensors") for name in objects) == 2
    assert not [name for name in objects if name.endswith((".pkl", ".pickle"))]
