"""The multi-node TrainJob against Kubeflow Trainer v2.3.0's CRD schema, and its command.

No Kubernetes API server runs here: the object is validated with the CRD's own
openAPIV3Schema (tests/pipelines/fixtures, taken from kubeflow/trainer v2.3.0), strictly --
an unknown field is an error, as with ``kubectl apply --validate=strict``. Creating and polling
the TrainJob through the Kubernetes API is the library's
(:func:`sslmem.training.trainjob_client.submit_and_wait`, tested with a fake API client in
tests/training/test_trainjob_client.py; never against a cluster). Here the step's library
function is run with a submitter that validates the TrainJob it was given and runs that
TrainJob's own command on this machine as node 0 of 1 (torchrun reads the ``PET_*`` layout the
torch runtime would set), against a real local store and a real S3 server.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sslmem.config import RuntimeSettings, SplitConfig
from sslmem.config_text import training_recipe
from sslmem.data import make_split
from sslmem.data.datasets import load_dataset
from sslmem.data.splits import load_manifest, save_manifest
from sslmem.data.store import ObjectStore, open_store
from sslmem.errors import ConfigError, TrainingError
from sslmem.models import load_checkpoint
from sslmem.models.checkpoint import file_sha256
from sslmem.pipelines.memorization import compile_pipeline
from sslmem.pipelines.platform import (
    NODES_ENV,
    TRAIN_DATA_CACHE_ENV,
    TRAIN_IMAGE_ENV,
    TRAIN_PROFILE_ENV,
    TRAIN_SECRETS_ENV,
    Accelerator,
    DataCache,
    PlatformConfig,
    Resources,
    SecretEnv,
    TaskProfile,
    Toleration,
)
from sslmem.pipelines.trainjob import build_train_job, job_name, train_on_nodes, train_step
from sslmem.training.launch import torchrun_command
from sslmem.workflow.train_launch import (
    TRAIN_MODULE,
    collect_result,
    launch_args,
    step_prefix,
    train_across_nodes,
    train_role_processes,
)
from tests.pipelines.crd import CRD, validate_train_job
from tests.servers import S3Server, free_port
from tests.training.helpers import tiny_config

ARGS = launch_args(
    manifest_path="s3://sslmem/store/splits/abc.json",
    recipe_file="s3://sslmem/runs/r1/recipe.json",
    role="reference",
    seed=2,
    out_path="s3://sslmem/runs/r1/reference.safetensors",
    result_file="s3://sslmem/runs/r1/result.json",
    experiment="exp",
)
PROFILE = TaskProfile(
    accelerator=Accelerator(type="nvidia.com/gpu", limit=4),
    resources=Resources(cpu_request="8", memory_request="32Gi", memory_limit="48Gi"),
)


def _validate(job: dict[str, Any]) -> None:
    validate_train_job(job)


def _job(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "train-reference-2",
        "namespace": "ml",
        "image": "ghcr.io/sslmem/sslmem:0.1.0",
        "nodes": 2,
        "profile": PROFILE,
        "args": ARGS,
        "env": {"SSLMEM_STORE_URI": "s3://sslmem/store"},
    }
    return build_train_job(**{**fields, **overrides})


def test_train_job_matches_the_trainer_crd_schema() -> None:
    job = _job()
    _validate(job)
    assert job["apiVersion"] == f"{CRD['group']}/{CRD['version']}"
    assert job["kind"] == CRD["kind"] == "TrainJob"
    assert job["metadata"] == {"name": "train-reference-2", "namespace": "ml"}
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["resourcesPerNode"] == {
        "limits": {"nvidia.com/gpu": "4", "memory": "48Gi"},
        "requests": {"cpu": "8", "memory": "32Gi"},
    }
    assert trainer["env"] == [{"name": "SSLMEM_STORE_URI", "value": "s3://sslmem/store"}]
    assert "runtimePatches" not in job["spec"]  # nothing to schedule or mount beyond resources


def test_node_pods_get_the_profiles_scheduling_and_the_data_cache() -> None:
    from kubeflow_trainer_api import models

    gpu_pool = PROFILE.model_copy(
        update={
            "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
            "tolerations": [
                Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
                Toleration(key="spot", value="true", effect="NoExecute", toleration_seconds=60),
            ],
        }
    )
    job = _job(profile=gpu_pool, data_cache=DataCache(pvc_name="sslmem-data-cache-rwx"))
    _validate(job)
    # The SDK's own models read the body back unchanged (runtimePatches is schemaless in the CRD).
    assert models.TrainerV1alpha1TrainJob.from_dict(job).to_dict() == job
    pod = {
        "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {
                "key": "spot",
                "operator": "Equal",
                "value": "true",
                "effect": "NoExecute",
                "tolerationSeconds": 60,
            },
        ],
        "volumes": [
            {
                "name": "sslmem-data-cache",
                "persistentVolumeClaim": {"claimName": "sslmem-data-cache-rwx"},
            }
        ],
        # The torch runtime names its training job and container "node".
        "containers": [
            {
                "name": "node",
                "volumeMounts": [
                    {"name": "sslmem-data-cache", "mountPath": "/var/cache/sslmem/data"}
                ],
            }
        ],
    }
    assert job["spec"]["runtimePatches"] == [
        {
            "manager": "sslmem.io/train-step",
            "trainingRuntimeSpec": {
                "template": {
                    "spec": {
                        "replicatedJobs": [
                            {"name": "node", "template": {"spec": {"template": {"spec": pod}}}}
                        ]
                    }
                }
            },
        }
    ]
    env = {item["name"]: item["value"] for item in job["spec"]["trainer"]["env"]}
    assert env["SSLMEM_DATA_DIR"] == "/var/cache/sslmem/data"
    # The CRD's patch schema is checked strictly: a field a patch may not set is refused.
    wrong = copy.deepcopy(job)
    patched = wrong["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    patched["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["hostNetwork"] = True
    with pytest.raises(jsonschema.ValidationError, match="hostNetwork"):
        _validate(wrong)


def test_the_schema_check_refuses_what_the_api_server_would() -> None:
    job = _job()
    typo = copy.deepcopy(job)
    typo["spec"]["trainer"]["numNode"] = 2
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["trainer"]["numNodes"] = "2"
    no_runtime = copy.deepcopy(job)
    del no_runtime["spec"]["runtimeRef"]
    for bad in (typo, wrong_type, no_runtime):
        with pytest.raises(jsonschema.ValidationError):
            _validate(bad)


def test_train_job_runs_the_single_node_command_with_the_layout_from_the_runtime() -> None:
    trainer = _job()["spec"]["trainer"]
    expected = ["python", "-m", "torch.distributed.run", "-m", "sslmem.workflow.train_launch"]
    assert trainer["command"] == [*expected, *ARGS]
    # The single-node launch is the same command plus the local layout options.
    single = torchrun_command(4, TRAIN_MODULE, ARGS, python="python")
    assert [a for a in single if a not in ("--standalone", "--nproc-per-node=4")] == (
        trainer["command"]
    )
    assert torchrun_command(4, TRAIN_MODULE, ARGS)[0] == sys.executable


def test_processes_per_node_override_and_no_accelerator() -> None:
    cpu = TaskProfile(processes_per_node=2)
    trainer = _job(profile=cpu)["spec"]["trainer"]
    assert trainer["numProcPerNode"] == 2 and "resourcesPerNode" not in trainer
    _validate(_job(profile=cpu, env={}))


@pytest.mark.parametrize(
    ("field", "value"), [("name", "Train_Job"), ("namespace", "-ml"), ("nodes", 0)]
)
def test_bad_train_job_settings_are_config_errors(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        _job(**{field: value})
    assert info.value.fix


def test_the_adapter_submits_through_the_librarys_client() -> None:
    """Only the TrainJob is built in ``pipelines/``: the Kubernetes API calls are the library's."""
    import inspect

    from sslmem.pipelines import trainjob
    from sslmem.training import trainjob_client

    assert inspect.signature(train_on_nodes).parameters["submit"].default is (
        trainjob_client.submit_and_wait
    )
    assert job_name("reference", 2, "0a1b2c3d") == "sslmem-reference-2-0a1b2c3d"
    assert "kubernetes" not in inspect.getsource(trainjob)


def test_credentials_reach_the_nodes_by_secret_reference_only() -> None:
    secret = SecretEnv(name="sslmem-s3", env={"SSLMEM_S3_ACCESS_KEY": "access-key"}, optional=True)
    job = _job(secrets=[secret])
    _validate(job)
    assert job["spec"]["trainer"]["env"] == [
        {"name": "SSLMEM_STORE_URI", "value": "s3://sslmem/store"},
        {
            "name": "SSLMEM_S3_ACCESS_KEY",
            "valueFrom": {
                "secretKeyRef": {"name": "sslmem-s3", "key": "access-key", "optional": True}
            },
        },
    ]


# ----------------------------------------------------------------- compiled pipeline


def _train_env(path: Path) -> dict[str, str]:
    pipeline_spec, _ = list(yaml.safe_load_all(path.read_text()))
    label = pipeline_spec["components"]["comp-train-encoder"]["executorLabel"]
    container = pipeline_spec["deploymentSpec"]["executors"][label]["container"]
    return {item["name"]: item["value"] for item in container.get("env", [])}


def test_multi_node_compile_gives_the_train_step_nodes_profile_and_image(tmp_path: Path) -> None:
    profile = TaskProfile(accelerator=Accelerator(limit=4), nodes=2)
    path = compile_pipeline(
        tmp_path / "p.yaml",
        image="reg.example/sslmem:1.2",
        platform=PlatformConfig(train=profile),
    )
    env = _train_env(path)
    assert env[NODES_ENV] == "2"
    assert env[TRAIN_IMAGE_ENV] == "reg.example/sslmem:1.2"
    got = TaskProfile.model_validate_json(env[TRAIN_PROFILE_ENV])
    assert got.nodes == 2 and got.nproc() == 4 and got == profile
    secrets = [SecretEnv.model_validate(item) for item in json.loads(env[TRAIN_SECRETS_ENV])]
    assert secrets == PlatformConfig().secrets  # names and keys only: sslmem-mlflow, sslmem-s3
    assert TRAIN_DATA_CACHE_ENV not in env
    single = _train_env(compile_pipeline(tmp_path / "s.yaml", image="reg.example/sslmem:1.2"))
    assert not {NODES_ENV, TRAIN_IMAGE_ENV, TRAIN_PROFILE_ENV, TRAIN_SECRETS_ENV} & set(single)
    cache = DataCache(pvc_name="sslmem-data-cache-rwx")
    cached = _train_env(
        compile_pipeline(
            tmp_path / "c.yaml",
            image="reg.example/sslmem:1.2",
            platform=PlatformConfig(train=profile, data_cache=cache),
        )
    )
    assert DataCache.model_validate_json(cached[TRAIN_DATA_CACHE_ENV]) == cache


def test_a_garbled_data_cache_setting_is_a_config_error() -> None:
    from sslmem.pipelines.settings import TrainStepSettings

    assert TrainStepSettings.from_environ({}).data_cache is None
    with pytest.raises(ConfigError, match=TRAIN_DATA_CACHE_ENV) as info:
        TrainStepSettings.from_environ({TRAIN_DATA_CACHE_ENV: '{"pvc_name": "Bad_Name"}'})
    assert info.value.fix and "compile the pipeline again" in info.value.fix


def test_nodes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="nodes"):
        TaskProfile.model_validate({"nodes": 0})


# --------------------------------------------------------- the step, node 0 of 1 here


@pytest.fixture(scope="module")
def split_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48-image split of the bundled dataset (the candidate trains on 39 images)."""
    data = load_dataset("bundled", split="train")
    manifest = make_split(data, fractions=SplitConfig(pool_size=48))
    return save_manifest(manifest, tmp_path_factory.mktemp("split") / "split.json")


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuntimeSettings]:
    """A fresh local store or a fresh bucket on the real S3 server (SeaweedFS)."""
    if request.param == "local":
        yield RuntimeSettings(store_uri=str(tmp_path / "store"))
        return
    server: S3Server = request.getfixturevalue("s3_server")
    yield server.store_settings("trainjob")


def _store_env(settings: RuntimeSettings) -> dict[str, str]:
    env = {"SSLMEM_STORE_URI": settings.store_uri, "SSLMEM_DEVICE": "cpu"}
    if settings.s3_endpoint:
        env.update(SSLMEM_S3_ENDPOINT=settings.s3_endpoint, SSLMEM_S3_SECURE="false")
    return env


def _credentials(settings: RuntimeSettings) -> dict[str, str]:
    """What the runtime's Secrets give the training pods on a cluster."""
    if settings.s3_access_key is None or settings.s3_secret_key is None:
        return {}
    return {
        "SSLMEM_S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
        "SSLMEM_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
    }


class RunHere:
    """Submitter that runs the TrainJob's own command here, as Trainer's node 0 of 1 would."""

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self.credentials = dict(credentials)
        self.jobs: list[dict[str, Any]] = []

    def __call__(self, job: Mapping[str, Any], *, timeout_s: float) -> Mapping[str, Any]:
        _validate(dict(job))
        self.jobs.append(dict(job))
        trainer = job["spec"]["trainer"]
        assert trainer["command"][0] == "python"
        env = {
            **os.environ,
            **{item["name"]: item["value"] for item in trainer.get("env", [])},
            **self.credentials,
            # The torch runtime's layout variables (torchrun reads PET_*).
            "PET_NNODES": "1",
            "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
            "PET_NODE_RANK": "0",
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": str(free_port()),
        }
        command = [sys.executable, *trainer["command"][1:]]
        subprocess.run(command, env=env, check=True, timeout=timeout_s)
        return job


@pytest.mark.slow
def test_the_step_trains_through_its_train_job_and_reads_rank_0_from_the_store(
    split_path: Path, settings: RuntimeSettings, tmp_path: Path
) -> None:
    # No resume mirroring: the single-node run below must train from epoch 0 too.
    config = tiny_config(
        "simclr", "small_cnn", "training.deterministic=true", "training.resume_every_epochs=0"
    )
    recipe = training_recipe(config)
    manifest = load_manifest(split_path)
    sha = manifest.manifest_sha256
    run_here = RunHere(_credentials(settings))
    store = open_store(settings.store_uri, settings)
    trained = train_on_nodes(
        nodes=2,
        profile=TaskProfile(),
        image="reg.example/sslmem:1.2",
        namespace="ml",
        store=store,
        manifest_path=split_path,
        recipe_json=recipe,
        role="candidate",
        seed=3,
        out_path=tmp_path / "model.safetensors",
        expected_manifest_sha256=sha,
        experiment=None,
        code_version="v1",
        env=_store_env(settings),
        timeout_s=600,
        submit=run_here,
    )
    (job,) = run_here.jobs
    assert job["spec"]["trainer"]["numNodes"] == 2
    prefix = step_prefix(
        split_sha256=sha, recipe_json=recipe, role="candidate", seed=3, code_version="v1"
    )
    # Every input and output of the job went through the store, under the step's prefix.
    keys = store.list(prefix)
    assert {key.rsplit("/", 1)[1] for key in keys} == {
        "manifest.json",
        "recipe.json",
        "encoder.safetensors",
        "result.json",
    }
    assert trained.checkpoint == tmp_path / "model.safetensors"
    (checkpoint_key,) = [key for key in keys if key.endswith("encoder.safetensors")]
    assert trained.checkpoint.read_bytes() == store.get_bytes(checkpoint_key)
    assert trained.sha256 == file_sha256(trained.checkpoint)
    assert (trained.role, trained.seed, trained.epochs, trained.num_train) == (
        "candidate",
        3,
        2,  # tiny_config: 2 epochs
        len(manifest.indices.shared) + len(manifest.indices.candidate),  # S_S ∪ S_C
    )
    # The same encoder as the single-node step trains from the same inputs.
    single = train_role_processes(
        nproc=1,
        manifest_path=split_path,
        recipe=recipe,
        role="candidate",
        seed=3,
        out_path=tmp_path / "single.safetensors",
        expected_manifest_sha256=sha,
        device="cpu",
        code_version="v1",
    )
    got = load_checkpoint(trained.checkpoint).encoder.state_dict()
    want = load_checkpoint(single.checkpoint).encoder.state_dict()
    assert got.keys() == want.keys()
    assert all(bool((got[k] == want[k]).all()) for k in got)


def _put_result(store: ObjectStore, prefix: str, checkpoint: bytes, sha256: str) -> None:
    store.put_bytes(f"{prefix}/encoder.safetensors", checkpoint)
    result = {
        "checkpoint": "s3://elsewhere/encoder.safetensors",
        "sha256": sha256,
        "role": "reference",
        "seed": 1,
        "final_loss": 0.5,
        "epochs": 2,
        "num_train": 10,
        "mlflow_run_id": None,
        "resumed_from_epoch": None,
    }
    store.put_bytes(f"{prefix}/result.json", json.dumps(result).encode())


def test_collect_result_checks_the_checkpoint_against_rank_0s_hash(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")

    data = b"weights"
    _put_result(store, "p/ok", data, hashlib.sha256(data).hexdigest())
    trained = collect_result(store, "p/ok", tmp_path / "ok.bin")
    assert trained.checkpoint.read_bytes() == data and trained.role == "reference"

    _put_result(store, "p/cut", b"weigh", hashlib.sha256(data).hexdigest())
    with pytest.raises(TrainingError, match="rank 0 reported"):
        collect_result(store, "p/cut", tmp_path / "cut.bin")
    assert not (tmp_path / "cut.bin").exists()
    with pytest.raises(TrainingError, match="without rank 0's result"):
        collect_result(store, "p/none", tmp_path / "none.bin")


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"SSLMEM_TRAIN_NODES": "two"}, "SSLMEM_TRAIN_NODES: Input should be a valid integer"),
        ({"SSLMEM_TRAIN_NODES": "0"}, "SSLMEM_TRAIN_NODES: Input should be greater than"),
        ({"SSLMEM_TRAIN_NODE": "2"}, "unknown environment variable.* SSLMEM_TRAIN_NODE:"),
        ({"SSLMEM_TRAIN_NODES": "2", "SSLMEM_STORE_URI": "/data/store"}, "shared object store"),
    ],
)
def test_train_step_on_several_nodes_refuses_bad_settings(
    environ: dict[str, str], match: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=match) as info:
        train_step(
            manifest_path=tmp_path / "split.json",
            recipe_json="{}",
            role="candidate",
            seed=0,
            out_path=tmp_path / "m.safetensors",
            expected_manifest_sha256="0" * 64,
            experiment=None,
            code_version="",
            environ=environ,
        )
    assert info.value.fix


def test_the_store_exchange_is_the_librarys_and_the_adapter_only_starts_the_nodes(
    tmp_path: Path,
) -> None:
    """``workflow.train_launch.train_across_nodes``: a fresh attempt each time, run's failure."""
    store = open_store(tmp_path / "store")
    manifest = tmp_path / "split.json"
    manifest.write_text("{}")
    calls: list[tuple[str, list[str]]] = []

    def fail(attempt: str, args: list[str]) -> None:
        calls.append((attempt, args))
        raise TrainingError("TrainJob sslmem-candidate-0 failed: OOMKilled")

    common: dict[str, Any] = {
        "store": store,
        "manifest_path": manifest,
        "recipe_json": "{}",
        "role": "candidate",
        "seed": 0,
        "out_path": tmp_path / "enc.safetensors",
        "expected_manifest_sha256": "ab" * 32,
        "experiment": None,
        "code_version": "v1",
    }
    for _ in range(2):
        with pytest.raises(TrainingError, match="OOMKilled"):
            train_across_nodes(fail, **common)
    (first, args), (second, _) = calls
    assert first != second  # a retry never reads an earlier attempt's result
    prefix = step_prefix(
        split_sha256="ab" * 32, recipe_json="{}", role="candidate", seed=0, code_version="v1"
    )
    assert f"--recipe={store.uri(f'{prefix}/{first}/recipe.json')}" in args
    assert not (tmp_path / "enc.safetensors").exists()
