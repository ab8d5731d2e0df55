"""Several nodes: the train step as a Kubeflow Trainer ``TrainJob`` on the torch runtime.

A train step that needs more than one node cannot run in the step's own pod. Kubeflow Trainer
(v2, ``trainer.kubeflow.org/v1alpha1``) runs it: :func:`build_train_job` makes a ``TrainJob``
that references the ``torch-distributed`` ClusterTrainingRuntime, with ``numNodes`` nodes of
``numProcPerNode`` processes each and the profile's resources per node. Its command is the
single-node launch (:func:`sslmem.training.launch.torchrun_command`) without the ``--standalone``
and ``--nproc-per-node`` options: the torch runtime sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` on every node, which torchrun
reads. Every process runs the same :mod:`sslmem.workflow.train_launch` entry point.

The object is built with the models of ``kubeflow-trainer-api`` 2.3 (``pip install
sslmem[cluster]``). :func:`wait_for_train_job` polls it until its ``Complete`` or ``Failed``
condition; :func:`submit_and_wait` does both through the Kubernetes API (needs a cluster).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from sslmem.errors import ConfigError, TrainingError
from sslmem.pipelines.platform import TaskProfile
from sslmem.training.launch import torchrun_command
from sslmem.workflow.train_launch import TRAIN_MODULE

TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
TRAINER_API_VERSION = f"{TRAINER_GROUP}/{TRAINER_VERSION}"
#: The ClusterTrainingRuntime Kubeflow Trainer installs for PyTorch (torchrun) jobs.
TORCH_RUNTIME = "torch-distributed"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _check_name(value: str, what: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ConfigError(
            f"TrainJob {what} {value!r} is not a Kubernetes DNS label",
            "use at most 63 lower-case letters, digits and '-', starting and ending alphanumeric",
        )
    return value


def _resources(profile: TaskProfile) -> dict[str, dict[str, str]]:
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    res = profile.resources
    for target, key, value in (
        (requests, "cpu", res.cpu_request),
        (limits, "cpu", res.cpu_limit),
        (requests, "memory", res.memory_request),
        (limits, "memory", res.memory_limit),
    ):
        if value is not None:
            target[key] = value
    if profile.accelerator is not None:
        # Extended resources (GPUs) are requested through their limit.
        limits[profile.accelerator.type] = str(profile.accelerator.limit)
    return {key: value for key, value in (("limits", limits), ("requests", requests)) if value}


def build_train_job(
    *,
    name: str,
    namespace: str,
    image: str,
    nodes: int,
    profile: TaskProfile,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    runtime: str = TORCH_RUNTIME,
    python: str = "python",
) -> dict[str, Any]:
    """The ``TrainJob`` that trains one encoder on ``nodes`` nodes.

    Args:
        name: The TrainJob's name (a DNS label).
        namespace: Its namespace.
        image: The sslmem runtime image (the pipeline's).
        nodes: Number of nodes (``numNodes``), at least 1.
        profile: The train step's platform profile: resources per node, and processes per
            node (:meth:`~sslmem.pipelines.platform.TaskProfile.nproc`).
        args: The entry point's arguments (:func:`sslmem.workflow.train_launch.launch_args`;
            paths must be on storage every node reads, e.g. ``s3://`` URIs).
        env: Plain environment variables of the training container (no credentials: those
            come from the runtime's Secrets).
        runtime: The ClusterTrainingRuntime to reference.
        python: The interpreter in the image.

    Returns:
        The TrainJob as a plain dict (camelCase keys, ready for the Kubernetes API).

    Raises:
        ConfigError: A bad name or node count.

    """
    from kubeflow_trainer_api import models

    _check_name(name, "name")
    _check_name(namespace, "namespace")
    if nodes < 1:
        raise ConfigError(f"a TrainJob needs at least 1 node, got {nodes}", "set nodes >= 1")
    resources = _resources(profile)
    quantity = models.IoK8sApimachineryPkgApiResourceQuantity
    trainer = models.TrainerV1alpha1Trainer(
        image=image,
        command=torchrun_command(None, TRAIN_MODULE, args, python=python),
        numNodes=nodes,
        numProcPerNode=profile.nproc(),
        resourcesPerNode=models.IoK8sApiCoreV1ResourceRequirements(
            **{
                kind: {key: quantity(value) for key, value in values.items()}
                for kind, values in resources.items()
            }
        )
        if resources
        else None,
        env=[
            models.IoK8sApiCoreV1EnvVar(name=key, value=value)
            for key, value in sorted((env or {}).items())
        ]
        or None,
    )
    job = models.TrainerV1alpha1TrainJob(
        apiVersion=TRAINER_API_VERSION,
        kind="TrainJob",
        metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(name=name, namespace=namespace),
        spec=models.TrainerV1alpha1TrainJobSpec(
            runtimeRef=models.TrainerV1alpha1RuntimeRef(
                apiGroup="trainer.kubeflow.org", kind="ClusterTrainingRuntime", name=runtime
            ),
            trainer=trainer,
        ),
    )
    result: dict[str, Any] = job.to_dict()
    return result


TrainJobState = Literal["running", "complete"]


def train_job_state(job: Mapping[str, Any]) -> TrainJobState:
    """Where a TrainJob stands, from its ``status.conditions`` (Trainer v2.3 condition types).

    Returns:
        ``"complete"`` once ``Complete`` is true, else ``"running"`` (also while suspended or
        before the controller wrote a status).

    Raises:
        TrainingError: ``Failed`` is true; names the job, the reason and the message.

    """
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}
    name = (job.get("metadata") or {}).get("name", "?")
    failed = conditions.get("Failed")
    if failed is not None and failed.get("status") == "True":
        raise TrainingError(
            f"TrainJob {name} failed: {failed.get('reason', '')}: {failed.get('message', '')}",
            f"see the logs of its pods (kubectl logs -l jobset.sigs.k8s.io/jobset-name={name}); "
            "fix the cause and run the step again",
        )
    complete = conditions.get("Complete")
    if complete is not None and complete.get("status") == "True":
        return "complete"
    return "running"


def wait_for_train_job(
    read: Callable[[], Mapping[str, Any]],
    *,
    timeout_s: float,
    poll_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Mapping[str, Any]:
    """Poll a TrainJob (``read()`` returns it) until it completes.

    Returns:
        The completed TrainJob.

    Raises:
        TrainingError: It failed, or did not finish within ``timeout_s``.

    """
    deadline = clock() + timeout_s
    while True:
        job = read()
        if train_job_state(job) == "complete":
            return job
        if clock() >= deadline:
            name = (job.get("metadata") or {}).get("name", "?")
            raise TrainingError(
                f"TrainJob {name} did not finish within {timeout_s:.0f} s",
                "raise the timeout, or check why its pods are pending "
                f"(kubectl describe trainjob {name})",
            )
        sleep(poll_s)


def submit_and_wait(
    job: Mapping[str, Any], *, timeout_s: float, poll_s: float = 30.0
) -> Mapping[str, Any]:  # pragma: no cover - needs a Kubernetes API server with Trainer
    """Create ``job`` with the in-cluster (or kubeconfig) credentials and wait for it."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CustomObjectsApi()
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    api.create_namespaced_custom_object(
        TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOB_PLURAL, dict(job)
    )

    def read() -> Mapping[str, Any]:
        got: Mapping[str, Any] = api.get_namespaced_custom_object(
            TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOB_PLURAL, name
        )
        return got

    return wait_for_train_job(read, timeout_s=timeout_s, poll_s=poll_s)
