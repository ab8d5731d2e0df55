"""Kubeflow Trainer ``TrainJob`` objects through the Kubernetes API: create one, wait for it.

The library's side of a multi-node train step's launch: :func:`submit_and_wait` takes a TrainJob
as a plain dict (``trainer.kubeflow.org/v1alpha1``, camelCase keys, ``metadata.name`` and
``metadata.namespace`` set: the pipeline adapter :mod:`sslmem.pipelines.trainjob` builds it from
the platform's profile), creates it as a namespaced custom object and polls it until its
``Complete`` or ``Failed`` condition (:func:`wait_for_train_job`, :func:`train_job_state`), or
until the timeout. The job is not deleted afterwards: a failed or timed-out job keeps its pods
for ``kubectl logs`` / ``kubectl describe``, which the errors name.

Kubernetes API failures become the project's typed errors (:func:`api_error`): a credential or
RBAC refusal, a missing CRD or namespace and a refused object are :class:`ConfigError`; the job
deleted while waiting, or a name taken, :class:`TrainingError`; an unreachable API server and
HTTP 5xx/429 :class:`TransientError` (the poll tolerates a few in a row). Nothing here reads the
environment, except the Kubernetes client's own configuration (in-cluster service account, else
the kubeconfig) in :func:`custom_objects_api`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

from sslmem.errors import ConfigError, SSLMemError, TrainingError, TransientError

TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
TRAINER_API_VERSION = f"{TRAINER_GROUP}/{TRAINER_VERSION}"
#: The namespace of the pod this process runs in (written by Kubernetes for its service account).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Transient read failures in a row the poll sits out before giving up.
MAX_TRANSIENT_READS = 5
_RBAC_DOCS = "docs/training.md, 'Several nodes'"


class CustomObjectsApi(Protocol):
    """The part of ``kubernetes.client.CustomObjectsApi`` used here (tests pass a fake)."""

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any
    ) -> Any:
        """Create ``body`` in ``namespace``."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        """Read the object ``name`` of ``namespace``."""


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
    max_transient_reads: int = MAX_TRANSIENT_READS,
) -> Mapping[str, Any]:
    """Poll a TrainJob (``read()`` returns it) until it completes.

    A :class:`TransientError` from ``read`` (API server unreachable, 5xx, 429) is sat out for
    up to ``max_transient_reads`` polls in a row, never past the deadline.

    Returns:
        The completed TrainJob.

    Raises:
        TrainingError: It failed, or did not finish within ``timeout_s``.
        TransientError: ``read`` kept failing transiently.
        SSLMemError: Any other error of ``read``.

    """
    deadline = clock() + timeout_s
    failures = 0
    while True:
        try:
            job = read()
        except TransientError:
            failures += 1
            if failures > max_transient_reads or clock() >= deadline:
                raise
            sleep(poll_s)
            continue
        failures = 0
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


def pod_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str | None:
    """The namespace of the pod this process runs in, or ``None`` outside a pod."""
    if path.is_file():
        return path.read_text(encoding="utf-8").strip() or None
    return None


def custom_objects_api() -> CustomObjectsApi:  # pragma: no cover - needs Kubernetes credentials
    """A ``CustomObjectsApi`` with the in-cluster credentials, else the kubeconfig's.

    Raises:
        ConfigError: Neither is there.

    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise ConfigError(
                f"no Kubernetes credentials to create the TrainJob with: not in a pod, and no "
                f"usable kubeconfig ({exc})",
                "run the step in the cluster (its service account's token), or point KUBECONFIG "
                "at a kubeconfig for the cluster that runs Kubeflow Trainer",
            ) from exc
    api: CustomObjectsApi = client.CustomObjectsApi()
    return api


def _api_message(exc: Any) -> str:
    """The Kubernetes ``Status`` message of an ``ApiException``, else its HTTP reason."""
    body = getattr(exc, "body", None)
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError, TypeError):
            message = None
        if isinstance(message, str) and message:
            return message
    return str(getattr(exc, "reason", None) or "no reason given")


def api_error(exc: BaseException, *, action: str, name: str, namespace: str) -> SSLMemError:
    """The typed error for a Kubernetes API failure while ``action`` (``create``/``read``) a job.

    Chosen by exception type and HTTP status, never by message text: 401/403 and 404 on create
    are :class:`ConfigError` (credentials, RBAC, Trainer or the namespace missing), 400/422 a
    :class:`ConfigError` (the server refused the object), 404 on read and 409 a
    :class:`TrainingError`, 429/5xx and no answer a :class:`TransientError`.
    """
    what = f"TrainJob {name} in namespace {namespace}"
    status = getattr(exc, "status", None)
    if not isinstance(status, int) or status == 0:  # no HTTP answer: refused, timeout, TLS
        return TransientError(
            f"cannot {action} {what}: the Kubernetes API server did not answer ({exc})",
            "check the step pod reaches the API server, then run the step again",
        )
    problem = f"cannot {action} {what}: HTTP {status}: {_api_message(exc)}"
    if status in (401, 403):
        return ConfigError(
            problem,
            f"grant the step's service account create and get on trainjobs.trainer.kubeflow.org "
            f"in namespace {namespace} (the Role in {_RBAC_DOCS})",
        )
    if status == 404 and action == "create":
        return ConfigError(
            problem,
            f"install Kubeflow Trainer v2.3 ({TRAINER_API_VERSION} TrainJobs), and check the "
            f"namespace {namespace} exists ({_RBAC_DOCS})",
        )
    if status == 404:
        return TrainingError(
            f"{what} disappeared while the step waited for it (deleted?)",
            "run the step again",
        )
    if status == 409:
        return TrainingError(problem, "run the step again (each attempt gets a new job name)")
    if status in (400, 422):
        return ConfigError(
            problem, f"check the cluster runs Kubeflow Trainer v2.3 ({TRAINER_API_VERSION})"
        )
    if status == 429 or status >= 500:
        return TransientError(problem, "the API server is busy or failing: run the step again")
    return TrainingError(problem, "see the API server's message above")


@contextmanager
def _typed_api_errors(action: str, name: str, namespace: str) -> Iterator[None]:
    """Turn the Kubernetes client's exceptions (``ApiException``, urllib3's) into typed ones."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except (ApiException, HTTPError) as exc:
        raise api_error(exc, action=action, name=name, namespace=namespace) from exc


def submit_and_wait(
    job: Mapping[str, Any],
    *,
    timeout_s: float,
    poll_s: float = 30.0,
    api: CustomObjectsApi | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Mapping[str, Any]:
    """Create the TrainJob ``job`` and wait until it completes.

    Args:
        job: The TrainJob as a plain dict, ``metadata.name`` and ``metadata.namespace`` set.
        timeout_s: How long to wait for its ``Complete`` condition.
        poll_s: Seconds between reads.
        api: The API client; default :func:`custom_objects_api` (the in-cluster credentials,
            else the kubeconfig).
        sleep: Waits between reads.
        clock: Monotonic seconds (the deadline).

    Returns:
        The completed TrainJob as the API server returned it.

    Raises:
        ConfigError: No credentials, RBAC refused, Trainer or the namespace missing, or the
            object refused.
        TrainingError: The job failed (its condition's reason and message), timed out, was
            deleted, or its name is taken.
        TransientError: The API server did not answer, or kept answering 5xx/429.

    """
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    client = custom_objects_api() if api is None else api
    with _typed_api_errors("create", name, namespace):
        client.create_namespaced_custom_object(
            TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOB_PLURAL, dict(job)
        )

    def read() -> Mapping[str, Any]:
        with _typed_api_errors("read", name, namespace):
            got: Mapping[str, Any] = client.get_namespaced_custom_object(
                TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOB_PLURAL, name
            )
        return got

    return wait_for_train_job(read, timeout_s=timeout_s, poll_s=poll_s, sleep=sleep, clock=clock)
