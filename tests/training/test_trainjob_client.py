"""Creating and waiting for a TrainJob through the Kubernetes API, with a fake API client.

No API server runs here (nor a cluster with Kubeflow Trainer): :class:`FakeApi` stands in for
``kubernetes.client.CustomObjectsApi``, answering reads from a script and raising the client's
own exceptions (``ApiException`` with an HTTP status and a ``Status`` body, urllib3's connection
errors). The statuses it returns are checked against the Trainer v2.3.0 CRD schema, as the
controller would write them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import NewConnectionError

from sslmem.errors import ConfigError, SSLMemError, TrainingError, TransientError
from sslmem.training.trainjob_client import (
    TRAINER_API_VERSION,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_PLURAL,
    pod_namespace,
    submit_and_wait,
    train_job_state,
    wait_for_train_job,
)
from tests.pipelines.crd import validate_train_job

#: A TrainJob as the library receives it: a plain dict (the pipeline adapter builds the rest).
JOB: dict[str, Any] = {
    "apiVersion": TRAINER_API_VERSION,
    "kind": "TrainJob",
    "metadata": {"name": "train-reference-2", "namespace": "ml"},
    "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": {"numNodes": 2}},
}


def _with_status(*conditions: tuple[str, str, str]) -> dict[str, Any]:
    job = copy.deepcopy(JOB)
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
    validate_train_job(job)  # the status the controller would write, per the CRD
    return job


COMPLETE = ("Complete", "True", "JobsCompleted")


def _api_error(status: int, message: str = "", reason: str = "Error") -> ApiException:
    exc = ApiException(status=status, reason=reason)
    if message:
        exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return exc


def _no_answer() -> NewConnectionError:
    return NewConnectionError(None, "Failed to establish a new connection: Connection refused")


class FakeApi:
    """``CustomObjectsApi`` of a cluster: records creates, answers reads from ``reads``."""

    def __init__(self, reads: Iterable[Any] = (), create_error: BaseException | None = None):
        self.reads = iter(reads)
        self.create_error = create_error
        self.created: list[tuple[str, str, str, str, dict[str, Any]]] = []
        self.got: list[tuple[str, str, str, str, str]] = []

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any
    ) -> Any:
        if self.create_error is not None:
            raise self.create_error
        self.created.append((group, version, namespace, plural, body))
        return body

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        self.got.append((group, version, namespace, plural, name))
        answer = next(self.reads)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _submit(api: FakeApi, **kwargs: Any) -> Any:
    sleeps: list[float] = []
    options: dict[str, Any] = {"timeout_s": 100, "poll_s": 5, "sleep": sleeps.append, **kwargs}
    done = submit_and_wait(JOB, api=api, **options)
    return done, sleeps


# ------------------------------------------------------------------ polling


def test_wait_returns_when_the_job_completes() -> None:
    states = [
        copy.deepcopy(JOB),
        _with_status(("Suspended", "True", "Suspended")),
        _with_status(("Suspended", "False", "Resumed"), COMPLETE),
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
    with pytest.raises(TrainingError, match="did not finish within 100 s") as info:
        wait_for_train_job(
            lambda: JOB, timeout_s=100, poll_s=40, sleep=lambda _: None, clock=lambda: next(now)
        )
    assert "kubectl describe trainjob train-reference-2" in (info.value.fix or "")


def test_a_failed_job_reports_the_conditions_message_and_a_fix() -> None:
    failed = _with_status(("Created", "True", "JobsCreated"), ("Failed", "True", "PodFailed"))
    with pytest.raises(TrainingError) as info:
        wait_for_train_job(lambda: failed, timeout_s=100, sleep=lambda _: None)
    # _with_status writes the message "<type> <reason>" (schema-valid, as the controller would).
    assert info.value.problem == "TrainJob train-reference-2 failed: PodFailed: Failed PodFailed"
    assert "kubectl logs -l jobset.sigs.k8s.io/jobset-name=train-reference-2" in (
        info.value.fix or ""
    )


def test_state_of_a_job_without_status_or_with_a_false_condition_is_running() -> None:
    assert train_job_state({}) == "running"
    assert train_job_state(_with_status(("Complete", "False", "JobsRunning"))) == "running"
    assert train_job_state(_with_status(("Failed", "False", "x"), COMPLETE)) == "complete"


# ------------------------------------------------------- through the (fake) API


def test_submit_creates_the_job_in_its_namespace_and_polls_it_until_complete() -> None:
    api = FakeApi([copy.deepcopy(JOB), _with_status(COMPLETE)])
    done, sleeps = _submit(api)
    assert api.created == [(TRAINER_GROUP, TRAINER_VERSION, "ml", TRAINJOB_PLURAL, JOB)]
    assert api.created[0][4] is not JOB  # a copy: the caller's dict is not handed on
    assert (
        api.got
        == [(TRAINER_GROUP, TRAINER_VERSION, "ml", TRAINJOB_PLURAL, "train-reference-2")] * 2
    )
    assert done["status"]["conditions"][0]["type"] == "Complete" and sleeps == [5]


def test_a_failed_job_through_the_api_is_the_same_training_error() -> None:
    api = FakeApi([_with_status(("Failed", "True", "PodFailed"))])
    with pytest.raises(TrainingError, match="train-reference-2 failed: PodFailed"):
        _submit(api)


@pytest.mark.parametrize(
    ("status", "error", "problem", "fix"),
    [
        (
            403,
            ConfigError,
            "HTTP 403: trainjobs.trainer.kubeflow.org is forbidden",
            "create and get",
        ),
        (401, ConfigError, "HTTP 401", "service account"),
        (404, ConfigError, "HTTP 404", "install Kubeflow Trainer v2.3"),
        (422, ConfigError, "HTTP 422", "Trainer v2.3"),
        (409, TrainingError, "HTTP 409", "new job name"),
        (500, TransientError, "HTTP 500", "run the step again"),
        (429, TransientError, "HTTP 429", "run the step again"),
    ],
)
def test_an_api_refusal_to_create_is_a_typed_error_with_a_fix(
    status: int, error: type[SSLMemError], problem: str, fix: str
) -> None:
    message = "trainjobs.trainer.kubeflow.org is forbidden" if status == 403 else ""
    api = FakeApi(create_error=_api_error(status, message))
    with pytest.raises(error) as info:
        _submit(api)
    assert type(info.value) is error
    assert info.value.problem.startswith("cannot create TrainJob train-reference-2 in namespace ml")
    assert problem in info.value.problem
    assert fix in (info.value.fix or "")
    assert api.got == []  # nothing polled


def test_an_api_server_that_does_not_answer_is_transient() -> None:
    api = FakeApi(create_error=_no_answer())
    with pytest.raises(TransientError, match="API server did not answer") as info:
        _submit(api)
    assert isinstance(info.value.__cause__, NewConnectionError)


def test_a_job_deleted_while_waiting_is_a_training_error() -> None:
    api = FakeApi([copy.deepcopy(JOB), _api_error(404, 'trainjobs "train-reference-2" not found')])
    with pytest.raises(TrainingError, match="disappeared while the step waited"):
        _submit(api)


def test_transient_read_failures_are_sat_out_a_few_times_in_a_row() -> None:
    flaky = [_api_error(503), _no_answer(), copy.deepcopy(JOB), _api_error(502)]
    api = FakeApi([*flaky, _with_status(COMPLETE)])
    done, sleeps = _submit(api)
    assert train_job_state(done) == "complete" and sleeps == [5] * 4

    down = FakeApi([_api_error(503)] * 10)
    with pytest.raises(TransientError, match=r"cannot read TrainJob train-reference-2.*HTTP 503"):
        _submit(down, poll_s=1)
    assert len(down.got) == 6  # the first read and 5 retries

    forbidden = FakeApi([_api_error(403)])
    with pytest.raises(ConfigError, match="cannot read"):
        _submit(forbidden)
    assert len(forbidden.got) == 1  # a permanent error is not retried


def test_transient_reads_stop_at_the_deadline() -> None:
    now = iter(range(0, 1000, 60))
    api = FakeApi([_api_error(503)] * 10)
    with pytest.raises(TransientError):
        _submit(api, clock=lambda: next(now))
    assert len(api.got) == 2


def test_the_pods_namespace_comes_from_its_service_account(tmp_path: Path) -> None:
    path = tmp_path / "namespace"
    assert pod_namespace(path) is None
    path.write_text("kubeflow-user\n")
    assert pod_namespace(path) == "kubeflow-user"
    path.write_text("")
    assert pod_namespace(path) is None
