"""The scoring pods' start-up probe and termination grace period, from the rendered chart.

On SIGTERM ``sslmem serve`` first lets open HTTP requests finish (``--http-grace-s``, the
chart's ``settings.httpGraceS``), then gives running jobs ``SSLMEM_SERVICE_SHUTDOWN_GRACE_S``,
lets a job that is publishing finish (``PUBLISH_GRACE_S``), then releases their leases. A pod
killed before that holds its leases until their TTL runs out, so
``terminationGracePeriodSeconds`` must cover the graces plus the releases; these tests read
both graces from the rendered objects (the arguments and the ConfigMap the process really gets).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import pytest

from sslmem.cli.serve import add_arguments, uvicorn_options
from sslmem.service.reconcile import STOP_JOIN_S
from sslmem.service.settings import ServiceSettings
from sslmem.service.worker import PUBLISH_GRACE_S
from tests.helm.render import Helm, render, the
from tests.helm.test_chart_security import EXTERNAL

#: Seconds left for releasing leases after both graces (beyond the reconcile thread's join).
RELEASE_S = 5


def graces(objects: list[dict[str, Any]]) -> tuple[int, float, int]:
    """(uvicorn's grace as ``sslmem serve`` parses its arguments, the job grace, the pod's)."""
    spec = the(objects, "Deployment")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(container.get("args", []))
    settings = ServiceSettings.load(host="0.0.0.0")
    http = uvicorn_options(settings, args.http_grace_s)["timeout_graceful_shutdown"]
    jobs = float(the(objects, "ConfigMap", "sslmem")["data"]["SSLMEM_SERVICE_SHUTDOWN_GRACE_S"])
    return int(http), jobs, int(spec["terminationGracePeriodSeconds"])


@pytest.mark.parametrize(
    "settings",
    [{}, {"shutdownGraceS": 12.5}, {"httpGraceS": 0, "shutdownGraceS": 0}, {"httpGraceS": 90}],
    ids=["defaults", "fractional-job-grace", "no-grace", "long-http-grace"],
)
def test_termination_grace_covers_the_http_grace_then_the_job_grace(
    helm: Helm, settings: dict[str, Any]
) -> None:
    objects = render(helm, values={**EXTERNAL, "settings": settings})
    http, jobs, pod = graces(objects)
    assert http == settings.get("httpGraceS", 10)
    assert jobs == settings.get("shutdownGraceS", 30)
    # The two graces run one after the other, then a publication's grace, the reconcile join
    # and the releases.
    least = http + math.ceil(jobs) + math.ceil(PUBLISH_GRACE_S) + STOP_JOIN_S + RELEASE_S
    assert pod >= least, (http, jobs, pod)


def test_startup_probe_guards_liveness_on_healthz(helm: Helm) -> None:
    objects = render(helm, values={**EXTERNAL, "startupProbe": {"failureThreshold": 30}})
    container = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "http"}
    assert startup["failureThreshold"] == 30 and startup["periodSeconds"] == 5
    # Liveness starts only after the start-up probe passed: no delay of its own is needed.
    assert container["livenessProbe"]["initialDelaySeconds"] == 0
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_a_negative_http_grace_is_refused_by_the_schema(helm: Helm) -> None:
    from tests.helm.render import HelmError

    with pytest.raises(HelmError, match="httpGraceS"):
        render(helm, values={**EXTERNAL, "settings": {"httpGraceS": -1}})
