"""Small MLflow helpers the pipeline steps need beyond the core tracking API.

* :func:`step_run` -- a *new* run per execution of a cached step (training), so a re-executed
  step never appends to the metrics of an earlier execution.
* :func:`find_versions_by_tag` -- the model versions one pipeline run registered (the
  finaliser marks those that were never scored as failed).
* :func:`download_run_json` -- read a JSON artifact of a run (e.g. the score summary).
* :func:`set_tags_status_last` -- set version tags with ``sslmem.status`` written last, so a
  version never shows ``scored`` without its summary tags.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sslmem.errors import TrackingError
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client, tracking_errors
from sslmem.tracking.registry import set_version_tags
from sslmem.tracking.runs import get_or_create_experiment


@contextlib.contextmanager
def step_run(
    experiment: str, *, step: str, run_name: str, tags: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Create a new run in ``experiment`` and yield its id; end it FINISHED or FAILED.

    Unlike :func:`~sslmem.tracking.pipeline_run` the run is not looked up: every execution gets
    its own run. The run is not made the active run (log with explicit ``run_id``).

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    from sslmem import __version__

    experiment_id = get_or_create_experiment(experiment)
    run_tags = {T.STEP: step, T.CODE_VERSION: __version__, **(tags or {})}
    with tracking_errors(f"create a run for step {step!r}"):
        run = client().create_run(experiment_id, tags=run_tags, run_name=run_name)
    run_id = str(run.info.run_id)
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    finally:
        with tracking_errors(f"end run {run_id}"):
            client().set_terminated(run_id, status)


def find_versions_by_tag(name: str, key: str, value: str) -> list[tuple[str, dict[str, str]]]:
    """Versions of registered model ``name`` whose tag ``key`` equals ``value``.

    Returns:
        ``[(version number, tags)]`` sorted by version number; empty if the model does not
        exist.

    Raises:
        TrackingError: A quote in the arguments, or MLflow is unreachable.

    """
    for what, text in (("model name", name), ("tag key", key), ("tag value", value)):
        if any(c in text for c in "'\"`\\"):
            raise TrackingError(f"{what} must not contain quotes or backslashes, got {text!r}")
    query = f"name = '{name}' and tags.`{key}` = '{value}'"
    with tracking_errors(f"search versions of model {name!r} by tag {key}"):
        found = client().search_model_versions(query)
    versions = [(str(v.version), dict(v.tags)) for v in found]
    return sorted(versions, key=lambda item: int(item[0]))


def download_run_json(run_id: str, artifact_path: str) -> Any:
    """Download and parse a JSON artifact of a run.

    Raises:
        TrackingError: No such artifact, not JSON, or MLflow is unreachable.

    """
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory(prefix="sslmem-artifact-") as tmp:
        with tracking_errors(f"download {artifact_path} of run {run_id}"):
            local = download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=tmp)
        try:
            return json.loads(Path(local).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TrackingError(
                f"artifact {artifact_path} of run {run_id} is not JSON: {exc}"
            ) from exc


def set_tags_status_last(name: str, version: str | int, tags: Mapping[str, Any]) -> dict[str, str]:
    """Set version tags, writing ``sslmem.status`` after every other tag.

    A reader that sees the new status therefore sees all the tags that come with it; a failure
    midway leaves the previous status.

    Returns:
        The tags as set.

    Raises:
        TrackingError: Invalid tags, no such version, or MLflow is unreachable.

    """
    others = {k: v for k, v in tags.items() if k != T.STATUS}
    written = set_version_tags(name, version, others) if others else {}
    if T.STATUS in tags:
        written.update(set_version_tags(name, version, {T.STATUS: tags[T.STATUS]}))
    return written
