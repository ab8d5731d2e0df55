"""Several nodes: the train step as a Kubeflow Trainer ``TrainJob`` on the torch runtime.

A train step that needs more than one node cannot run in the step's own pod. Kubeflow Trainer
(v2, ``trainer.kubeflow.org/v1alpha1``) runs it: :func:`build_train_job` makes a ``TrainJob``
that references the ``torch-distributed`` ClusterTrainingRuntime, with ``numNodes`` nodes of
``numProcPerNode`` processes each and the profile's resources per node. Its command is the
single-node launch (:func:`sslmem.training.launch.torchrun_command`) without the ``--standalone``
and ``--nproc-per-node`` options: the torch runtime sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` on every node, which torchrun
reads. Every process runs the same :mod:`sslmem.workflow.train_launch` entry point.

The object is built with the models of ``kubeflow-trainer-api`` 2.3 (a dependency of sslmem,
so the runtime image has them) and handed on as a plain dict: creating it through the
Kubernetes API, polling it until its ``Complete`` or ``Failed`` condition or the timeout, and
turning API failures into typed errors are the library's
(:func:`sslmem.training.trainjob_client.submit_and_wait`).

:func:`train_step` is what the train component calls: on one node it is
:func:`~sslmem.workflow.train_launch.train_role_processes`; on ``nodes > 1`` (the pipeline sets
``SSLMEM_TRAIN_NODES``, the train profile and the image in the step's environment) it builds and
submits the TrainJob and waits, inside
:func:`~sslmem.workflow.train_launch.train_across_nodes`, the library's side of the exchange:
it stages the split manifest and the recipe in the object store under a prefix derived from the
step's identity and reads rank 0's checkpoint and result back -- the nodes share no disk with
the step. This module only builds the TrainJob from the platform's models and reads its
settings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sslmem.errors import ConfigError
from sslmem.pipelines.platform import (
    DATA_DIR_ENV,
    TRAIN_IMAGE_ENV,
    TRAIN_PROFILE_ENV,
    TRAIN_SECRETS_ENV,
    DataCache,
    SecretEnv,
    TaskProfile,
)
from sslmem.pipelines.settings import (
    TrainJobSettings,
    TrainStepSettings,
    forwarded_environment,
)
from sslmem.training.launch import torchrun_command
from sslmem.training.trainjob_client import TRAINER_API_VERSION, pod_namespace, submit_and_wait
from sslmem.workflow.train_launch import TRAIN_MODULE, train_across_nodes, train_role_processes

if TYPE_CHECKING:
    from sslmem.data.splits import Role
    from sslmem.data.store import ObjectStore
    from sslmem.workflow.train import TrainedEncoder

#: The ClusterTrainingRuntime Kubeflow Trainer installs for PyTorch (torchrun) jobs.
TORCH_RUNTIME = "torch-distributed"
#: The torch runtime's replicated job, and its container, that run the training nodes.
NODE_JOB = "node"
#: Owner of the runtime patch that gives the nodes the train profile's scheduling and volumes.
PATCH_MANAGER = "sslmem.io/train-step"
_CACHE_VOLUME = "sslmem-data-cache"
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


def _node_patch(profile: TaskProfile, data_cache: DataCache | None) -> Any:
    """The node pods' patch: the profile's node selector and tolerations, the cache volume.

    Returns ``None`` when there is nothing to patch.
    """
    from kubeflow_trainer_api import models

    if not (profile.node_selector or profile.tolerations or data_cache):
        return None
    volumes = containers = None
    if data_cache is not None:
        volumes = [
            models.IoK8sApiCoreV1Volume(
                name=_CACHE_VOLUME,
                persistentVolumeClaim=models.IoK8sApiCoreV1PersistentVolumeClaimVolumeSource(
                    claimName=data_cache.pvc_name
                ),
            )
        ]
        mount = models.IoK8sApiCoreV1VolumeMount(
            name=_CACHE_VOLUME, mountPath=data_cache.mount_path
        )
        containers = [models.TrainerV1alpha1ContainerPatch(name=NODE_JOB, volumeMounts=[mount])]
    tolerations = [
        models.IoK8sApiCoreV1Toleration(
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
            tolerationSeconds=toleration.toleration_seconds,
        )
        for toleration in profile.tolerations
    ]
    pod = models.TrainerV1alpha1PodSpecPatch(
        nodeSelector=dict(profile.node_selector) or None,
        tolerations=tolerations or None,
        volumes=volumes,
        containers=containers,
    )
    replicated = models.TrainerV1alpha1ReplicatedJobPatch(
        name=NODE_JOB,
        template=models.TrainerV1alpha1JobTemplatePatch(
            spec=models.TrainerV1alpha1JobSpecPatch(
                template=models.TrainerV1alpha1PodTemplatePatch(spec=pod)
            )
        ),
    )
    return models.TrainerV1alpha1RuntimePatch(
        manager=PATCH_MANAGER,
        trainingRuntimeSpec=models.TrainerV1alpha1TrainingRuntimeSpecPatch(
            template=models.TrainerV1alpha1JobSetTemplatePatch(
                spec=models.TrainerV1alpha1JobSetSpecPatch(replicatedJobs=[replicated])
            )
        ),
    )


def build_train_job(
    *,
    name: str,
    namespace: str,
    image: str,
    nodes: int,
    profile: TaskProfile,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    secrets: Sequence[SecretEnv] = (),
    data_cache: DataCache | None = None,
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
            come from ``secrets``).
        secrets: Kubernetes Secrets mapped to environment variables of every node (the
            platform's ``secrets``: S3 and MLflow credentials), by reference only.
        data_cache: The platform's dataset cache claim, mounted in every node (it must be
            ``ReadWriteMany``) as ``SSLMEM_DATA_DIR``.
        runtime: The ClusterTrainingRuntime to reference.
        python: The interpreter in the image.

    The profile's node selector and tolerations (and the cache volume) reach the node pods
    through a ``runtimePatches`` entry owned by :data:`PATCH_MANAGER` on the runtime's
    ``node`` job: resources alone would not bring the pods onto a tainted GPU pool.

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
    if data_cache is not None:
        env = {**(env or {}), DATA_DIR_ENV: data_cache.mount_path}
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
        + [
            models.IoK8sApiCoreV1EnvVar(
                name=variable,
                valueFrom=models.IoK8sApiCoreV1EnvVarSource(
                    secretKeyRef=models.IoK8sApiCoreV1SecretKeySelector(
                        name=secret.name, key=key, optional=secret.optional
                    )
                ),
            )
            for secret in secrets
            for variable, key in sorted(secret.env.items())
        ]
        or None,
    )
    patch = _node_patch(profile, data_cache)
    job = models.TrainerV1alpha1TrainJob(
        apiVersion=TRAINER_API_VERSION,
        kind="TrainJob",
        metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(name=name, namespace=namespace),
        spec=models.TrainerV1alpha1TrainJobSpec(
            runtimeRef=models.TrainerV1alpha1RuntimeRef(
                apiGroup="trainer.kubeflow.org", kind="ClusterTrainingRuntime", name=runtime
            ),
            trainer=trainer,
            runtimePatches=[patch] if patch is not None else None,
        ),
    )
    result: dict[str, Any] = job.to_dict()
    return result


#: The TrainJob's namespace (default: the step pod's own, from its service account).
NAMESPACE_ENV = "SSLMEM_TRAINJOB_NAMESPACE"
#: Seconds the step waits for its TrainJob (default
#: :data:`sslmem.pipelines.settings.DEFAULT_TIMEOUT_S`).
TIMEOUT_ENV = "SSLMEM_TRAINJOB_TIMEOUT_S"


def job_name(role: str, seed: int, attempt: str) -> str:
    """A TrainJob name (a DNS label) for one attempt of the step: ``sslmem-<role>-<seed>-<id>``."""
    return _check_name(f"sslmem-{role}-{seed}-{attempt}"[:63].rstrip("-"), "name")


def _namespace(settings: TrainJobSettings) -> str:
    namespace: str | None = settings.namespace
    if namespace:
        return namespace
    namespace = pod_namespace()
    if namespace:
        return namespace
    raise ConfigError(
        f"no namespace for the TrainJob: not in a pod and {NAMESPACE_ENV} is unset",
        f"set {NAMESPACE_ENV} to the namespace Kubeflow Trainer runs jobs in",
    )


_Value = TypeVar("_Value")


def _required(value: _Value | None, name: str) -> _Value:
    """A setting the compiled pipeline puts on a multi-node train step."""
    if value is None:
        raise ConfigError(
            f"{name} is unset, and the train step runs on several nodes",
            "compile the pipeline again with the platform config "
            "(sslmem pipeline compile --platform ...)",
        )
    return value


def train_on_nodes(
    *,
    nodes: int,
    profile: TaskProfile,
    image: str,
    namespace: str,
    store: ObjectStore,
    manifest_path: Path | str,
    recipe_json: str,
    role: Role,
    seed: int,
    out_path: Path,
    expected_manifest_sha256: str,
    experiment: str | None,
    code_version: str,
    env: Mapping[str, str],
    timeout_s: float,
    secrets: Sequence[SecretEnv] = (),
    data_cache: DataCache | None = None,
    submit: Callable[..., Mapping[str, Any]] = submit_and_wait,
) -> TrainedEncoder:
    """Train one encoder as a TrainJob of ``nodes`` nodes and fetch rank 0's checkpoint.

    Args:
        nodes: Nodes (> 1).
        profile: The train profile (resources and processes per node).
        image: The sslmem image the step runs (every node runs the same).
        namespace: The TrainJob's namespace.
        store: The object store every node reaches (``SSLMEM_STORE_URI``).
        manifest_path: The split manifest on the step's disk (staged in the store).
        recipe_json: The training recipe.
        role: ``"candidate"`` or ``"reference"``.
        seed: Training seed.
        out_path: Where the checkpoint is written on the step's disk.
        expected_manifest_sha256: The manifest's hash (checked by every rank).
        experiment: MLflow experiment of rank 0's run.
        code_version: The code identity (resume key, metadata).
        env: Plain environment of the training containers.
        timeout_s: How long to wait for the TrainJob.
        secrets: Secrets mapped to the training containers' environment (credentials).
        data_cache: The dataset cache claim every node mounts (``ReadWriteMany``).
        submit: Creates the TrainJob and waits
            (:func:`sslmem.training.trainjob_client.submit_and_wait`).

    Returns:
        Rank 0's result, its checkpoint at ``out_path``.

    Raises:
        TrainingError: The TrainJob failed (its condition's message), timed out, or left no
            result.
        ConfigError: The Kubernetes API refused it (credentials, RBAC, no Trainer).
        TransientError: The API server did not answer.

    """

    def run(attempt: str, args: list[str]) -> None:
        job = build_train_job(
            name=job_name(role, seed, attempt),
            namespace=namespace,
            image=image,
            nodes=nodes,
            profile=profile,
            args=args,
            env=env,
            secrets=secrets,
            data_cache=data_cache,
        )
        submit(job, timeout_s=timeout_s)

    return train_across_nodes(
        run,
        store=store,
        manifest_path=manifest_path,
        recipe_json=recipe_json,
        role=role,
        seed=seed,
        out_path=out_path,
        expected_manifest_sha256=expected_manifest_sha256,
        experiment=experiment,
        code_version=code_version,
    )


def train_step(
    *,
    manifest_path: Path | str,
    recipe_json: str,
    role: Role,
    seed: int,
    out_path: Path,
    expected_manifest_sha256: str,
    experiment: str | None,
    code_version: str,
    environ: Mapping[str, str] | None = None,
) -> TrainedEncoder:
    """The train step: in this pod (one or N processes) or, on ``nodes > 1``, as a TrainJob.

    The node count, train profile and image come from the step's environment
    (:func:`sslmem.pipelines.platform.apply_platform` sets them).

    Raises:
        ConfigError: A bad node count or profile, no namespace, or a local store on several
            nodes.
        TrainingError: Training (or the TrainJob) failed.

    """
    step = TrainStepSettings.from_environ(environ)
    if step.nodes == 1:
        return train_role_processes(
            nproc=step.nproc_per_node,
            manifest_path=manifest_path,
            recipe=recipe_json,
            role=role,
            seed=seed,
            out_path=out_path,
            expected_manifest_sha256=expected_manifest_sha256,
            experiment=experiment,
            code_version=code_version,
        )
    from sslmem.config import RuntimeSettings
    from sslmem.data.store import open_store

    job = TrainJobSettings.from_environ(environ)
    settings = RuntimeSettings()
    if "://" not in settings.store_uri or settings.store_uri.startswith("file://"):
        raise ConfigError(
            f"training on {step.nodes} nodes needs a shared object store, SSLMEM_STORE_URI is "
            f"{settings.store_uri!r}",
            "set SSLMEM_STORE_URI to an s3:// store every node reaches",
        )
    image = _required(step.image, TRAIN_IMAGE_ENV)
    profile = _required(step.profile, TRAIN_PROFILE_ENV)
    secrets = _required(step.secrets, TRAIN_SECRETS_ENV)
    store = open_store(settings.store_uri, settings)
    return train_on_nodes(
        nodes=step.nodes,
        profile=profile,
        image=image,
        namespace=_namespace(job),
        store=store,
        manifest_path=manifest_path,
        recipe_json=recipe_json,
        role=role,
        seed=seed,
        out_path=out_path,
        expected_manifest_sha256=expected_manifest_sha256,
        experiment=experiment,
        code_version=code_version,
        env=forwarded_environment(environ),
        timeout_s=job.timeout_s,
        secrets=secrets,
        data_cache=step.data_cache,
    )
