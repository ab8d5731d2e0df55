"""Step 6 (exit handler): versions of a pipeline run left unscored are marked failed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sslmem.config import RuntimeSettings
from sslmem.tracking import tags as T
from sslmem.workflow._common import (
    configure_tracking,
    process_settings,
)
from sslmem.workflow.versions import VersionInfo

logger = logging.getLogger(__name__)


def finalize_pipeline_run(
    *,
    model_names: Sequence[str],
    pipeline_run_id: str,
    state: str,
    error: str = "",
    settings: RuntimeSettings | None = None,
) -> list[VersionInfo]:
    """Mark every version of this pipeline run that is still ``training`` as ``failed``.

    Called by the pipeline's exit handler with the final state of the pipeline body. On
    failure the reason names the state and the error; on success, a version that is still not
    scored (e.g. left behind by a retried registration) is failed as superseded.

    The pipeline run's parent MLflow run (named in its versions' provenance) is ended
    ``FINISHED`` (state ``SUCCEEDED``) or ``FAILED``.

    Returns:
        The versions marked failed.

    Raises:
        TrackingError: MLflow is unreachable (the versions then keep status ``training``, which
            never reads as scored).

    """
    from sslmem.tracking import mark_version_failed, set_run_status
    from sslmem.tracking.registry import find_versions_by_tag

    settings = process_settings(settings)
    configure_tracking(settings)
    if state.upper() == "SUCCEEDED":
        reason = f"pipeline run {pipeline_run_id} succeeded but this version was never scored"
    else:
        reason = f"pipeline run {pipeline_run_id} ended {state}" + (f": {error}" if error else "")
    marked: list[VersionInfo] = []
    parents: set[str] = set()
    for name in dict.fromkeys(model_names):
        for version, tags in find_versions_by_tag(name, T.PIPELINE_RUN, pipeline_run_id):
            if tags.get(T.PROVENANCE):
                parent = T.parse_provenance(tags).get(T.PARENT_RUN)
                if parent:
                    parents.add(str(parent))
            if tags.get(T.STATUS) in ("scored", "failed"):
                continue  # scored, or already failed with a more precise reason
            mark_version_failed(name, version, reason)
            marked.append(VersionInfo(name, version, tags))
            logger.warning("marked %s/%s failed: %s", name, version, reason)
    for parent in parents:
        set_run_status(parent, "FINISHED" if state.upper() == "SUCCEEDED" else "FAILED")
    return marked
