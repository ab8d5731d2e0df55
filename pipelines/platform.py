"""Kubernetes platform settings of the pipeline's tasks, in one typed place.

:class:`PlatformConfig` says where and with what each step runs on a cluster: GPU type and
count, node selector and tolerations, a memory-backed ``/dev/shm`` (PyTorch data loaders and
NCCL need more than the container default of 64 MiB), CPU/memory requests and limits, retries,
and which Kubernetes Secrets and ConfigMaps become environment variables (MLflow and S3
credentials never appear in the pipeline spec, only the Secret names). :func:`apply_platform`
applies a step's profile to a task; the pipeline calls it for every task, so nothing
platform-specific is spread over the pipeline code.

The local runner ignores all of it (``sslmem run`` on a laptop). Load a YAML file with
:func:`load_platform_config`, e.g.::

    env: {SSLMEM_STORE_URI: "s3://sslmem/store", SSLMEM_S3_ENDPOINT: "minio.minio:9000"}
    train:
      accelerator: {type: nvidia.com/gpu, limit: 2}
      node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      shared_memory: {size_limit: 16Gi}
      resources: {cpu_request: "8", memory_request: 32Gi, memory_limit: 48Gi}
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sslmem.config import format_validation_error
from sslmem.errors import ConfigError
from sslmem.redaction import redact
from sslmem.training.launch import NPROC_ENV

#: Set on a train step with ``nodes > 1``: the node count, the train profile (JSON) and the
#: image, which the step's pod needs to build the TrainJob (:mod:`sslmem.pipelines.trainjob`).
NODES_ENV = "SSLMEM_TRAIN_NODES"
TRAIN_PROFILE_ENV = "SSLMEM_TRAIN_PROFILE"
TRAIN_IMAGE_ENV = "SSLMEM_TRAIN_IMAGE"
#: Also set there: the platform's Secret mappings (JSON), which the TrainJob's nodes use too.
TRAIN_SECRETS_ENV = "SSLMEM_TRAIN_SECRETS"
#: Where datasets (and the ``s3://`` dataset cache) live in every task.
DATA_DIR_ENV = "SSLMEM_DATA_DIR"
#: The platform's ``data_cache`` (JSON) for the nodes of a multi-node train step.
TRAIN_DATA_CACHE_ENV = "SSLMEM_TRAIN_DATA_CACHE"

Step = Literal["prepare", "train", "evaluate", "register", "score", "finalize"]
STEPS: tuple[Step, ...] = ("prepare", "train", "evaluate", "register", "score", "finalize")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_CPU = re.compile(r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(E|P|T|G|M|K|Ei|Pi|Ti|Gi|Mi|Ki)?$")
# Variables that hold credentials by name: they belong in a Secret, never in the plain env.
_SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL)", re.IGNORECASE)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_env_names(names: list[str]) -> None:
    bad = [name for name in names if not _ENV_NAME.match(name)]
    if bad:
        raise ValueError(f"invalid environment variable name(s): {bad}")


class SecretEnv(_Model):
    """A Kubernetes Secret whose keys become environment variables.

    Attributes:
        name: Secret name.
        env: ``{ENV_VAR: secret key}`` (one key may feed several variables).
        optional: Start the pod even if the Secret is missing.

    """

    name: str
    env: dict[str, str] = Field(min_length=1)
    optional: bool = False

    @field_validator("name")
    @classmethod
    def _k8s_name(cls, value: str) -> str:
        if not _K8S_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid Kubernetes object name")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        _check_env_names(list(value))
        return value


class ConfigMapEnv(SecretEnv):
    """A Kubernetes ConfigMap whose keys become environment variables (same fields)."""


class Accelerator(_Model):
    """GPU (or other accelerator) request of a task.

    Attributes:
        type: Resource name, e.g. ``nvidia.com/gpu``.
        limit: Number of devices.

    """

    type: str = Field("nvidia.com/gpu", min_length=1)
    limit: int = Field(1, ge=1)


class Toleration(_Model):
    """A pod toleration (see the Kubernetes docs on taints and tolerations)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoExecute", "NoSchedule", "PreferNoSchedule"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)


class SharedMemory(_Model):
    """A memory-backed emptyDir mounted at ``/dev/shm``.

    Attributes:
        size_limit: Maximum size (counts against the pod's memory), e.g. ``8Gi``.
        mount_path: Where it is mounted.

    """

    size_limit: str | None = "2Gi"
    mount_path: str = "/dev/shm"

    @field_validator("size_limit")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes memory quantity (e.g. 8Gi)")
        return value


class DataCache(_Model):
    """A PersistentVolumeClaim holding the dataset cache (``SSLMEM_DATA_DIR``) of every task.

    Remote (``s3://``) datasets are downloaded and decoded once into ``SSLMEM_DATA_DIR``
    (:mod:`sslmem.data.s3`); without this volume that directory is in the pod's own filesystem
    and every pod starts cold. A claim on node-local storage (e.g. a ``local-path``
    StorageClass, ``ReadWriteOnce``) gives a cache per node; a ``ReadWriteMany`` claim (NFS,
    EFS, Filestore) one for the whole cluster. Concurrent loaders decode once (a file lock per
    dataset) where the filesystem honours ``flock``; where it does not, both may decode, and
    the atomic renames keep the result whole either way.

    Attributes:
        pvc_name: The existing claim to mount.
        mount_path: Where it is mounted; ``SSLMEM_DATA_DIR`` is set to it.

    """

    pvc_name: str
    mount_path: str = "/var/cache/sslmem/data"

    @field_validator("pvc_name")
    @classmethod
    def _claim_name(cls, value: str) -> str:
        if not _K8S_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid PersistentVolumeClaim name")
        return value

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"mount_path {value!r} must be an absolute path without '..'")
        return value


class Resources(_Model):
    """CPU and memory requests and limits.

    Values are Kubernetes quantities, e.g. ``"4"`` or ``"500m"`` CPUs, ``"16Gi"`` memory.
    """

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None

    @field_validator("cpu_request", "cpu_limit")
    @classmethod
    def _cpu(cls, value: str | None) -> str | None:
        if value is not None and not _CPU.match(value):
            raise ValueError(f"{value!r} is not a CPU quantity (e.g. '4' or '500m')")
        return value

    @field_validator("memory_request", "memory_limit")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY.match(value):
            raise ValueError(f"{value!r} is not a memory quantity (e.g. '16Gi')")
        return value


class TaskProfile(_Model):
    """How one kind of task is scheduled.

    Attributes:
        resources: CPU/memory requests and limits.
        accelerator: GPU request (``None``: no accelerator).
        node_selector: Node labels the pod must match.
        tolerations: Taints the pod tolerates (e.g. of a GPU node pool).
        shared_memory: Memory-backed ``/dev/shm`` (``None``: the container default).
        retries: Retries on failure (e.g. preempted spot nodes); 0 for none.
        processes_per_node: Training processes in the pod (train step only); ``None``: one per
            accelerator (the accelerator limit), 1 without one. More than 1 runs ``torchrun``
            (DDP) in the pod, see :mod:`sslmem.training.launch`.
        nodes: Nodes the train step runs on (train step only). More than 1 runs it as a
            Kubeflow Trainer ``TrainJob`` of ``nodes`` nodes with ``nproc()`` processes and this
            profile's resources each, which the step's pod submits and waits on (see
            :mod:`sslmem.pipelines.trainjob`; needs Trainer and RBAC, docs/training.md).

    """

    resources: Resources = Resources()
    accelerator: Accelerator | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    shared_memory: SharedMemory | None = None
    retries: int = Field(0, ge=0, le=10)
    processes_per_node: int | None = Field(None, ge=1, le=64)
    nodes: int = Field(1, ge=1, le=1024)

    def nproc(self) -> int:
        """Processes the task runs: ``processes_per_node``, else the accelerator limit, else 1."""
        if self.processes_per_node is not None:
            return self.processes_per_node
        return self.accelerator.limit if self.accelerator is not None else 1


def _default_secrets() -> list[SecretEnv]:
    return [
        SecretEnv(
            name="sslmem-mlflow",
            env={"MLFLOW_TRACKING_USERNAME": "username", "MLFLOW_TRACKING_PASSWORD": "password"},
            optional=True,
        ),
        SecretEnv(
            name="sslmem-s3",
            env={
                "SSLMEM_S3_ACCESS_KEY": "access-key",
                "SSLMEM_S3_SECRET_KEY": "secret-key",
                "AWS_ACCESS_KEY_ID": "access-key",
                "AWS_SECRET_ACCESS_KEY": "secret-key",
            },
            optional=True,
        ),
    ]


def _default_config_maps() -> list[ConfigMapEnv]:
    return [
        ConfigMapEnv(
            name="sslmem-config",
            env={
                "SSLMEM_MLFLOW_TRACKING_URI": "mlflow-tracking-uri",
                "SSLMEM_STORE_URI": "store-uri",
                "SSLMEM_S3_ENDPOINT": "s3-endpoint",
                "SSLMEM_S3_SECURE": "s3-secure",
                "MLFLOW_S3_ENDPOINT_URL": "mlflow-s3-endpoint-url",
            },
            optional=True,
        )
    ]


def _gpu_profile() -> TaskProfile:
    return TaskProfile(
        resources=Resources(cpu_request="4", memory_request="16Gi", memory_limit="32Gi"),
        accelerator=Accelerator(),
        tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        shared_memory=SharedMemory(size_limit="8Gi"),
        # A preempted or failed attempt is retried and resumes from the object store.
        retries=2,
    )


def _cpu_profile() -> TaskProfile:
    return TaskProfile(
        resources=Resources(cpu_request="2", memory_request="4Gi", memory_limit="8Gi"),
        shared_memory=SharedMemory(size_limit="1Gi"),
    )


def _light_profile() -> TaskProfile:
    return TaskProfile(resources=Resources(cpu_request="500m", memory_request="1Gi"))


class PlatformConfig(_Model):
    """Kubernetes settings of every task of the pipeline.

    Attributes:
        env: Plain environment variables of every task (non-secret settings, e.g.
            ``SSLMEM_STORE_URI``).
        secrets: Secrets mapped to environment variables in every task (default: optional
            ``sslmem-mlflow`` and ``sslmem-s3``; see :func:`_default_secrets`).
        config_maps: ConfigMaps mapped to environment variables in every task (default: the
            optional ``sslmem-config``).
        image_pull_policy: ``Always``, ``IfNotPresent`` or ``Never`` (``None``: cluster
            default).
        train: Profile of the training tasks (default: one NVIDIA GPU, GPU taint tolerated,
            8Gi shared memory, 2 retries -- a retry resumes from the resume state the step
            uploads, see ``training.resume_every_epochs``).
        evaluate: Profile of the evaluation tasks.
        score: Profile of the scoring task (give it an accelerator to score on a GPU).
        default: Profile of the light tasks (prepare, register, finalize).
        data_cache: Volume of the dataset cache, mounted in every task and in every node of a
            multi-node TrainJob (``None``: each pod caches in its own filesystem; for a
            TrainJob the claim must be ``ReadWriteMany``).

    """

    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[SecretEnv] = Field(default_factory=_default_secrets)
    config_maps: list[ConfigMapEnv] = Field(default_factory=_default_config_maps)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = "IfNotPresent"
    train: TaskProfile = Field(default_factory=_gpu_profile)
    evaluate: TaskProfile = Field(default_factory=_cpu_profile)
    score: TaskProfile = Field(default_factory=_cpu_profile)
    default: TaskProfile = Field(default_factory=_light_profile)
    data_cache: DataCache | None = None

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        _check_env_names(list(value))
        # Plain env values are written into the compiled spec: a credential there is public.
        by_name = sorted(name for name in value if _SECRET_NAME.search(name))
        in_uri = sorted(name for name, text in value.items() if redact(text) != text)
        if by_name or in_uri:
            raise ValueError(
                f"credentials in plain env variables {sorted({*by_name, *in_uri})} would be "
                "written into the pipeline spec; map them from a Kubernetes Secret (secrets:) "
                "and keep user:password out of URIs"
            )
        return value

    @model_validator(mode="after")
    def _one_data_dir(self) -> PlatformConfig:
        if self.data_cache is not None and DATA_DIR_ENV in self.env:
            raise ValueError(
                f"env sets {DATA_DIR_ENV} and data_cache mounts {self.data_cache.mount_path}: "
                f"remove {DATA_DIR_ENV} from env (data_cache sets it)"
            )
        return self

    def profile(self, step: Step) -> TaskProfile:
        """The profile of ``step``."""
        if step == "train":
            return self.train
        if step == "evaluate":
            return self.evaluate
        if step == "score":
            return self.score
        return self.default


def load_platform_config(path: Path | str | None) -> PlatformConfig:
    """Load a platform config from YAML (``None``: the defaults).

    Fields the file omits keep their defaults (a profile given in the file replaces the whole
    default profile).

    Raises:
        ConfigError: Missing file, invalid YAML, or an invalid field (named).

    """
    if path is None:
        return PlatformConfig()
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"platform file {file} does not exist", "pass an existing YAML file")
    try:
        raw: Any = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"platform file {file} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"platform file {file} must hold a mapping")
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, f"platform file {file}"),
            "correct the fields listed above",
        ) from exc


def _key_to_env_rounds(env: dict[str, str]) -> list[dict[str, str]]:
    """Split ``{ENV: key}`` into ``{key: ENV}`` maps with unique keys (one key, several ENVs)."""
    rounds: list[dict[str, str]] = []
    for name, key in sorted(env.items()):
        for mapping in rounds:
            if key not in mapping:
                mapping[key] = name
                break
        else:
            rounds.append({key: name})
    return rounds


def apply_platform(
    task: Any, step: Step, config: PlatformConfig, *, image: str | None = None
) -> Any:
    """Apply the profile of ``step`` and the shared env/secrets to a pipeline task.

    Args:
        task: A ``kfp.dsl.PipelineTask``.
        step: Which profile applies.
        config: The platform config.
        image: The task's image; a train step with ``nodes > 1`` passes it on to its TrainJob.

    Returns:
        The task (settings applied in a fixed order, so compiling is deterministic).

    """
    from kfp import kubernetes

    profile = config.profile(step)
    resources = profile.resources
    if resources.cpu_request is not None:
        task.set_cpu_request(resources.cpu_request)
    if resources.cpu_limit is not None:
        task.set_cpu_limit(resources.cpu_limit)
    if resources.memory_request is not None:
        task.set_memory_request(resources.memory_request)
    if resources.memory_limit is not None:
        task.set_memory_limit(resources.memory_limit)
    if profile.accelerator is not None:
        task.set_accelerator_type(profile.accelerator.type)
        task.set_accelerator_limit(profile.accelerator.limit)
    if profile.retries:
        task.set_retry(profile.retries, backoff_duration="60s", backoff_factor=2)
    for name, value in sorted(config.env.items()):
        task.set_env_variable(name, value)
    if step == "train" and profile.nproc() > 1:
        task.set_env_variable(NPROC_ENV, str(profile.nproc()))
    if step == "train" and profile.nodes > 1:
        if image is None:
            raise ConfigError(
                "a train step on several nodes needs the image its TrainJob runs",
                "pass image= to apply_platform",
            )
        task.set_env_variable(NODES_ENV, str(profile.nodes))
        task.set_env_variable(TRAIN_PROFILE_ENV, profile.model_dump_json())
        task.set_env_variable(TRAIN_IMAGE_ENV, image)
        # Only the Secrets' names and keys: the values stay in the cluster.
        secrets = [secret.model_dump(mode="json") for secret in config.secrets]
        task.set_env_variable(TRAIN_SECRETS_ENV, json.dumps(secrets, sort_keys=True))
        if config.data_cache is not None:
            task.set_env_variable(TRAIN_DATA_CACHE_ENV, config.data_cache.model_dump_json())
    for label, value in sorted(profile.node_selector.items()):
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for toleration in profile.tolerations:
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
            toleration_seconds=toleration.toleration_seconds,
        )
    if profile.shared_memory is not None:
        kubernetes.empty_dir_mount(
            task,
            volume_name="dshm",
            mount_path=profile.shared_memory.mount_path,
            medium="Memory",
            size_limit=profile.shared_memory.size_limit,
        )
    for secret in config.secrets:
        for key_to_env in _key_to_env_rounds(secret.env):
            kubernetes.use_secret_as_env(
                task,
                secret_name=secret.name,
                secret_key_to_env=key_to_env,
                optional=secret.optional,
            )
    for config_map in config.config_maps:
        for key_to_env in _key_to_env_rounds(config_map.env):
            kubernetes.use_config_map_as_env(
                task,
                config_map_name=config_map.name,
                config_map_key_to_env=key_to_env,
                optional=config_map.optional,
            )
    if config.data_cache is not None:
        kubernetes.mount_pvc(
            task, pvc_name=config.data_cache.pvc_name, mount_path=config.data_cache.mount_path
        )
        task.set_env_variable(DATA_DIR_ENV, config.data_cache.mount_path)
    if config.image_pull_policy is not None:
        kubernetes.set_image_pull_policy(task, config.image_pull_policy)
    return task
