"""MLflow tracking for sslmem: runs, artifacts and the weights-only model registry.

The library functions every adapter (KFP components, CLI, scoring service) calls:

* :mod:`~sslmem.tracking.connection` -- :func:`configure_mlflow` (local SQLite default or a
  server), bounded HTTP retries, :class:`~sslmem.errors.TrackingError` on failures.
* :mod:`~sslmem.tracking.runs` -- one run per pipeline step (created exactly once, nested
  under the pipeline run's parent run), the split as dataset input, config as dotted params,
  epoch metrics, evaluation and score reports, metrics of a version's logged model.
* :mod:`~sslmem.tracking.registry` -- register encoders without pickling, load them weights-only,
  tags and explicit aliases.
* :mod:`~sslmem.tracking.tags` -- the version tag schema (short tags + provenance JSON).

MLflow's telemetry is disabled as soon as this package is imported.
"""

import os

from sslmem.tracking.connection import TELEMETRY_ENV

os.environ.update(TELEMETRY_ENV)  # before mlflow is first imported

from sslmem.tracking.connection import (
    RetryPolicy,
    TrackingTarget,
    check_tracking_server,
    configure_from_settings,
    configure_mlflow,
    current_target,
    tracking_errors,
)
from sslmem.tracking.registry import (
    ENCODER_PYFUNC_PATH,
    ModelVersionRef,
    encoder_signature,
    get_model_version,
    get_version_tags,
    load_registered_encoder,
    mark_version_failed,
    parse_model_uri,
    register_encoder,
    resolve_alias,
    set_alias,
    set_version_tags,
)
from sslmem.tracking.runs import (
    MlflowEpochLogger,
    active_run_id,
    find_or_create_run,
    flatten_config,
    get_or_create_experiment,
    log_compute_device,
    log_config,
    log_evaluation,
    log_metrics,
    log_model_metrics,
    log_score_report,
    log_split_input,
    log_split_manifest,
    nest_run,
    parent_run_id,
    pipeline_run,
    score_metrics,
    set_run_status,
    split_dataset,
    version_metrics,
)
from sslmem.tracking.tags import (
    dump_provenance,
    merge_provenance,
    missing_provenance,
    parse_provenance,
    provenance_tags,
    summarize_for_tags,
    validate_version_tags,
)

__all__ = [
    "ENCODER_PYFUNC_PATH",
    "MlflowEpochLogger",
    "ModelVersionRef",
    "RetryPolicy",
    "TrackingTarget",
    "active_run_id",
    "check_tracking_server",
    "configure_from_settings",
    "configure_mlflow",
    "current_target",
    "dump_provenance",
    "encoder_signature",
    "find_or_create_run",
    "flatten_config",
    "get_model_version",
    "get_or_create_experiment",
    "get_version_tags",
    "load_registered_encoder",
    "log_compute_device",
    "log_config",
    "log_evaluation",
    "log_metrics",
    "log_model_metrics",
    "log_score_report",
    "log_split_input",
    "log_split_manifest",
    "mark_version_failed",
    "merge_provenance",
    "missing_provenance",
    "nest_run",
    "parent_run_id",
    "parse_model_uri",
    "parse_provenance",
    "pipeline_run",
    "provenance_tags",
    "register_encoder",
    "resolve_alias",
    "score_metrics",
    "set_alias",
    "set_run_status",
    "set_version_tags",
    "split_dataset",
    "summarize_for_tags",
    "tracking_errors",
    "validate_version_tags",
    "version_metrics",
]
