"""The multi-node TrainJob against Kubeflow Trainer v2.3.0's CRD schema, and its command.

No Kubernetes API server runs here: the object is validated with the CRD's own
openAPIV3Schema (tests/pipelines/fixtures, taken from kubeflow/trainer v2.3.0), strictly --
an unknown field is an error, as with ``kubectl apply --validate=strict``.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sslmem.errors import ConfigError, TrainingError
from sslmem.pipelines.platform import Accelerator, Resources, TaskProfile
from sslmem.pipelines.trainjob import build_train_job, wait_for_train_job
from sslmem.training.launch import torchrun_command
from sslmem.workflow.train_launch import TRAIN_MODULE, launch_args

CRD = json.loads((Path(__file__).parent / "fixtures" / "trainjob-v2.3.0.schema.json").read_text())
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


def _strict(schema: Any) -> Any:
    """The structural schema with unknown fields refused (the API server prunes them)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _validate(job: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(_strict(CRD["openAPIV3Schema"])).validate(job)


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


def _with_status(*conditions: tuple[str, str, str]) -> dict[str, Any]:
    job = _job()
    job["status"] = {
        "conditions": [
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": f"{kind} {reason}",
                "lastTransitionTime": "2026-12-01T12:00:00Z",
            }
            for kind, status, reason in conditions
        ]
    }
    _validate(job)  # the status the controller would write, per the CRD
    return job


def test_wait_returns_when_the_job_completes() -> None:
    states = [
        _job(),
        _with_status(("Suspended", "True", "Suspended")),
        _with_status(("Suspended", "False", "Resumed"), ("Complete", "True", "JobsCompleted")),
    ]
    reads, sleeps = iter(states), []
    done = wait_for_train_job(lambda: next(reads), timeout_s=100, poll_s=5, sleep=sleeps.append)
    assert done is states[-1] and sleeps == [5, 5]


def test_a_failed_job_is_a_training_error_with_its_reason() -> None:
    failed = _with_status(("Failed", "True", "DeadlineExceeded"))
    with pytest.raises(TrainingError, match="train-reference-2 failed: DeadlineExceeded"):
        wait_for_train_job(lambda: failed, timeout_s=100, sleep=lambda _: None)


def test_waiting_stops_at_the_timeout() -> None:
    now = iter(range(0, 1000, 40))
    with pytest.raises(TrainingError, match="did not finish within 100 s"):
        wait_for_train_job(
            _job, timeout_s=100, poll_s=40, sleep=lambda _: None, clock=lambda: next(now)
        )
