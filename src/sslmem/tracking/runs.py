"""MLflow runs of a pipeline: nesting, split input, config, epoch metrics, score reports.

The experiment is tagged ``mlflow.experimentKind = custom_model_development`` so the MLflow UI
opens it as a model-training experiment (runs, models), not as a GenAI one. Each pipeline run
has one *parent* run (step ``pipeline``, named after the pipeline run id); each step's run is
nested under it with MLflow's ``mlflow.parentRunId`` tag. :func:`find_or_create_run` finds or
creates the run of ``(pipeline run id, step)`` exactly once, even when several processes ask at
the same moment: the run is *claimed* by creating an MLflow experiment with a deterministic
name (experiment names are unique in the tracking store, so exactly one creation succeeds) that
records the winner's run id; losers delete the run they created and use the winner's. The claim
experiment is deleted right away (hidden from the UI; MLflow keeps deleted experiments' names
and tags until ``mlflow gc``; after a gc the oldest run with the step's tags is claimed).
A cached step that may execute again (training) takes a *new* run per execution instead
(:func:`step_run`), so a re-executed step never appends to an earlier execution's metrics.

The split is logged as each run's dataset input (:func:`log_split_input`): an MLflow dataset
named after the split's dataset with the manifest hash as digest and the manifest URI as source.

Every logging helper takes an explicit ``run_id`` (default: the active run) and talks to MLflow
through an ``MlflowClient`` -- no hidden global state beyond the active-run stack, which MLflow
keeps per thread.

Metric names (``/`` separates the statistic from the set, as MLflow's UI groups by prefix)::

    sslmem_mean/<set>  sslmem_std/<set>  sslmem_sem/<set>  sslmem_median/<set>  sslmem_n/<set>
    sslmem_ci95_low/<set>  sslmem_ci95_high/<set>
    welch_p/<control>  welch_t/<control>  welch_mean_diff/<control>
    verdict_passed (0/1)  scoring_seconds  scoring_points_per_second
    <prefix>/<metric> (epoch metrics, step = epoch)  <prefix>/knn_accuracy ...

Metrics of a registered version's *logged model* (:func:`version_metrics`, logged with
``model_id`` so MLflow links them to the model: the experiment's model table and the version
page show them as sortable columns)::

    knn_accuracy  linear_probe_accuracy  sslmem_mean/<set>  welch_p/<control>  verdict_passed

(CIs and the other statistics stay on the score run: a table of every version stays readable.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from sslmem import __version__
from sslmem.data.splits import SplitManifest
from sslmem.errors import ManifestMismatchError, TrackingError
from sslmem.evaluation.evaluate import EvaluationResult
from sslmem.memorization.scoring import ScoreReport, write_score_report
from sslmem.reporting.plots import write_score_figures
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client, current_target, tracking_errors

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "sslmem"
SCORING_ARTIFACT_DIR = "scoring"
#: The step name of a pipeline run's parent run.
PARENT_STEP = "pipeline"
#: The kind of sslmem experiments: model training (not GenAI).
EXPERIMENT_KIND = "custom_model_development"
#: Name prefix of the (deleted) experiments that claim a run (:func:`find_or_create_run`).
CLAIM_PREFIX = ".sslmem-claim/"
#: Characters of the manifest hash used as the MLflow dataset digest (MLflow allows 36).
DATASET_DIGEST_CHARS = 16
_BATCH = 100  # MLflow's limit of params/tags per log_batch call


# --------------------------------------------------------------------------------------------
# Experiments and runs


def _safe_dir_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("._")
    return cleaned or "experiment"


def _error_code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", ""))


def get_or_create_experiment(name: str = DEFAULT_EXPERIMENT) -> str:
    """The id of experiment ``name``, creating it if needed, tagged as model training.

    With a local SQLite store the experiment's artifacts go under the configured local artifact
    root (``<root>/<name>``); with a server, the server decides. An experiment without an
    ``mlflow.experimentKind`` tag gets ``custom_model_development`` (a kind chosen in the UI is
    kept).

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    target = current_target()
    mlflow_client = client()
    with tracking_errors(f"get or create experiment {name!r}"):
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            location = None
            if target.artifact_root is not None:
                location = (target.artifact_root / _safe_dir_name(name)).as_uri()
            try:
                experiment_id = str(
                    mlflow_client.create_experiment(
                        name,
                        artifact_location=location,
                        tags={T.MLFLOW_EXPERIMENT_KIND: EXPERIMENT_KIND},
                    )
                )
                return experiment_id
            except Exception:
                # Lost a creation race with another process: the experiment exists now.
                experiment = mlflow_client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if not experiment.tags.get(T.MLFLOW_EXPERIMENT_KIND):
            mlflow_client.set_experiment_tag(
                experiment.experiment_id, T.MLFLOW_EXPERIMENT_KIND, EXPERIMENT_KIND
            )
        return str(experiment.experiment_id)


def _check_ids(**values: str) -> None:
    for what, value in values.items():
        if not value.strip() or any(c in value for c in "'\"\\`"):
            raise TrackingError(
                f"{what} must be non-empty and free of quotes and backslashes, got {value!r}"
            )


def _claim_name(experiment_id: str, pipeline_run_id: str, step: str) -> str:
    return f"{CLAIM_PREFIX}{experiment_id}/{pipeline_run_id}/{step}"


def _claimed_run(mlflow_client: Any, claim: str) -> str | None:
    """The run id a claim records (``None``: not claimed)."""
    found = mlflow_client.get_experiment_by_name(claim)
    if found is None:
        return None
    run_id = found.tags.get(T.CLAIMED_RUN)
    if not run_id:
        raise TrackingError(f"the claim experiment {claim!r} records no run id")
    return str(run_id)


def _claim(mlflow_client: Any, claim: str, run_id: str, location: str | None) -> str:
    """Claim ``claim`` for ``run_id``; the winner's run id (``run_id`` if this call won)."""
    try:
        created = mlflow_client.create_experiment(
            claim, artifact_location=location, tags={T.CLAIMED_RUN: run_id}
        )
    except Exception as exc:
        if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise
        winner = _claimed_run(mlflow_client, claim)
        if winner is None:
            raise
        return winner
    with contextlib.suppress(Exception):
        # Only hides the claim from the UI: a claim that stays visible is still correct.
        mlflow_client.delete_experiment(created)
    return run_id


def find_or_create_run(
    pipeline_run_id: str,
    *,
    step: str = "main",
    experiment: str = DEFAULT_EXPERIMENT,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The id of the MLflow run of ``(pipeline_run_id, step)``, created exactly once.

    Safe under concurrency: however many processes ask at once, all get the same run and at
    most one run with these tags stays (see the module docstring: a claim by a uniquely named
    experiment). Every step's run is nested under the pipeline run's parent run (step
    ``pipeline``, created the same way).

    Args:
        pipeline_run_id: The pipeline (KFP) run id, or any id grouping the steps of one job.
        step: The step within the pipeline (``"register"``, ``"score"``, ...).
        experiment: Experiment name (created if needed).
        tags: Extra run tags (set on creation only).

    Returns:
        The MLflow run id.

    Raises:
        TrackingError: An empty id or one with quotes, or MLflow is unreachable or refused.

    """
    _check_ids(pipeline_run_id=pipeline_run_id, step=step)
    experiment_id = get_or_create_experiment(experiment)
    parent = None
    if step != PARENT_STEP:
        parent = find_or_create_run(pipeline_run_id, step=PARENT_STEP, experiment=experiment)
    mlflow_client = client()
    claim = _claim_name(experiment_id, pipeline_run_id, step)
    query = f"tags.`{T.PIPELINE_RUN}` = '{pipeline_run_id}' AND tags.`{T.STEP}` = '{step}'"
    with tracking_errors(f"find the run of pipeline run {pipeline_run_id!r} step {step!r}"):
        claimed = _claimed_run(mlflow_client, claim)
        if claimed is not None:
            return claimed
        # Not claimed (new, or the claim was garbage-collected): claim the oldest existing run
        # with these tags, else a new one.
        found = mlflow_client.search_runs(
            [experiment_id],
            filter_string=query,
            max_results=1,
            order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
        )
        created = None
        if found:
            candidate = str(found[0].info.run_id)
        else:
            run_tags = {
                T.PIPELINE_RUN: pipeline_run_id,
                T.STEP: step,
                T.CODE_VERSION: __version__,
                **({T.MLFLOW_PARENT_RUN: parent} if parent else {}),
                **(tags or {}),
            }
            run_name = pipeline_run_id if step == PARENT_STEP else step
            run = mlflow_client.create_run(experiment_id, tags=run_tags, run_name=run_name)
            candidate = created = str(run.info.run_id)
        location = mlflow_client.get_experiment(experiment_id).artifact_location
        winner = _claim(mlflow_client, claim, candidate, location)
        if created is not None and winner != created:
            mlflow_client.delete_run(created)  # lost the race: nobody else ever saw this run
            logger.info(
                "run %s of %s/%s lost its claim to %s", created, pipeline_run_id, step, winner
            )
        return winner


def parent_run_id(pipeline_run_id: str, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """The parent run of a pipeline run (created once, like every step's run).

    Raises:
        TrackingError: A bad id, or MLflow is unreachable or refused.

    """
    return find_or_create_run(pipeline_run_id, step=PARENT_STEP, experiment=experiment)


def nest_run(run_id: str, parent: str) -> bool:
    """Nest ``run_id`` under ``parent`` in the UI unless it already has a parent.

    Used for runs created before the pipeline run id is known (training, whose cached runs
    stay under the pipeline run that trained them).

    Returns:
        Whether the run was nested now.

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    with tracking_errors(f"nest run {run_id} under {parent}"):
        mlflow_client = client()
        if mlflow_client.get_run(run_id).data.tags.get(T.MLFLOW_PARENT_RUN):
            return False
        mlflow_client.set_tag(run_id, T.MLFLOW_PARENT_RUN, parent)
    return True


def set_run_status(run_id: str, status: str) -> None:
    """End a run ``FINISHED``/``FAILED``/``KILLED`` (e.g. the parent, by the exit handler).

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    with tracking_errors(f"end run {run_id} as {status}"):
        client().set_terminated(run_id, status)


def abandon_run(run_id: str, why: str) -> None:
    """Mark a run whose result set was left incomplete: tag ``sslmem.abandoned``, end ``KILLED``.

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    with tracking_errors(f"mark run {run_id} abandoned"):
        mlflow_client = client()
        mlflow_client.set_tag(run_id, T.ABANDONED, why)
        mlflow_client.set_terminated(run_id, "KILLED")


@contextlib.contextmanager
def pipeline_run(
    pipeline_run_id: str,
    *,
    step: str = "main",
    experiment: str = DEFAULT_EXPERIMENT,
    tags: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Start (or resume) the run of ``(pipeline_run_id, step)`` as the active run.

    The run is nested under the pipeline run's parent run. It ends ``FINISHED`` when the block
    completes and ``FAILED`` when it raises. Nested use (inside another active run) is allowed.

    Yields:
        The MLflow run id.

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    import mlflow

    run_id = find_or_create_run(pipeline_run_id, step=step, experiment=experiment, tags=tags)
    with tracking_errors(f"start run {run_id}"):
        mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None)
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    finally:
        with tracking_errors(f"end run {run_id}"):
            mlflow.end_run(status)


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


def split_dataset(manifest: SplitManifest, manifest_uri: str) -> Any:
    """The split as an MLflow dataset entity: name, digest (manifest hash prefix), source URI.

    The full manifest hash and the set sizes are the dataset's profile.
    """
    from mlflow.entities import Dataset

    indices = manifest.indices
    profile = {
        "manifest_sha256": manifest.manifest_sha256,
        "dataset": manifest.dataset.name,
        "dataset_split": manifest.dataset.split,
        "split_seed": manifest.seed,
        "shared": len(indices.shared),
        "candidate": len(indices.candidate),
        "independent": len(indices.independent),
        "extra": len(indices.extra),
    }
    source_type, source = "http", json.dumps({"url": manifest_uri})
    with contextlib.suppress(Exception), warnings.catch_warnings():
        # MLflow's own source for the URI scheme (s3, local file, ...), rendered by the UI; a
        # file URI matches two equivalent local sources, which MLflow warns about.
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        warnings.simplefilter("ignore", UserWarning)
        resolved = resolve_dataset_source(manifest_uri)
        source_type, source = resolved._get_source_type(), resolved.to_json()
    return Dataset(
        name=f"{manifest.dataset.name}-split",
        digest=manifest.manifest_sha256[:DATASET_DIGEST_CHARS],
        source_type=source_type,
        source=source,
        profile=json.dumps(profile, sort_keys=True),
    )


def log_compute_device(description: Mapping[str, str], *, run_id: str | None = None) -> None:
    """Record the device a step actually computed on as run tags (``sslmem.compute.*``).

    Tags, not params: a resumed step may finish on another node, and the last device wins.

    Args:
        description: What :func:`sslmem.device.describe_device` returns (device, its name,
            compute capability on CUDA, torch and its CUDA runtime).
        run_id: The run (default: the active one).

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    from mlflow.entities import RunTag

    rid = active_run_id(run_id)
    tags = [RunTag(f"{T.COMPUTE_PREFIX}{key}", value) for key, value in sorted(description.items())]
    with tracking_errors(f"record the compute device of run {rid}"):
        client().log_batch(rid, tags=tags)


def log_split_input(
    manifest: SplitManifest, manifest_uri: str, *, run_id: str | None = None, context: str = "train"
) -> None:
    """Log the split as the run's dataset input (``mlflow.data.context`` = ``context``).

    Logging the same split again is a no-op (MLflow deduplicates inputs).

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    rid = active_run_id(run_id)
    dataset = split_dataset(manifest, manifest_uri)
    with tracking_errors(f"log the split as the input of run {rid}"):
        client().log_inputs(
            rid, datasets=[DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])]
        )


def active_run_id(run_id: str | None = None) -> str:
    """``run_id`` if given, else the active run's id.

    Raises:
        TrackingError: No run id was given and no run is active.

    """
    if run_id is not None:
        return run_id
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise TrackingError(
            "no MLflow run is active and no run_id was given",
            "wrap the call in sslmem.tracking.pipeline_run(...) or pass run_id",
        )
    return str(run.info.run_id)


# --------------------------------------------------------------------------------------------
# Params and metrics


def flatten_config(config: BaseModel | Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a (pydantic) config into dotted keys with string values.

    Nested mappings become dotted keys (``training.lr``); strings stay as they are; every
    other value is JSON (``0.001``, ``true``, ``null``, ``[0.2, 1.0]``, ``{}``).
    """
    tree = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    flat: dict[str, str] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, prefix=f"{dotted}."))
        elif isinstance(value, str):
            flat[dotted] = value
        else:
            flat[dotted] = json.dumps(value, sort_keys=True)
    return flat


def log_config(
    config: BaseModel | Mapping[str, Any],
    *,
    run_id: str | None = None,
    artifact_file: str = "config/experiment_config.json",
) -> dict[str, str]:
    """Log the full resolved config: dotted params plus the exact JSON as an artifact.

    MLflow params are immutable: re-logging the same values (a resumed run) is fine, logging a
    different value for a key is an error.

    Returns:
        The params logged.

    Raises:
        TrackingError: MLflow is unreachable, or a param already has a different value.

    """
    from mlflow.entities import Param

    rid = active_run_id(run_id)
    params = flatten_config(config)
    mlflow_client = client()
    items = sorted(params.items())
    with tracking_errors(f"log config params to run {rid}"):
        for start in range(0, len(items), _BATCH):
            batch = [Param(k, v) for k, v in items[start : start + _BATCH]]
            mlflow_client.log_batch(rid, params=batch)
        tree = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
        mlflow_client.log_dict(rid, tree, artifact_file)
    return params


def log_metrics(
    metrics: Mapping[str, float], *, step: int = 0, run_id: str | None = None
) -> dict[str, float]:
    """Log metrics at ``step`` in one batch; NaN and infinite values are skipped (and logged).

    Returns:
        The metrics actually logged.

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    from mlflow.entities import Metric

    rid = active_run_id(run_id)
    finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    skipped = sorted(set(metrics) - set(finite))
    if skipped:
        logger.info("not logging non-finite metrics %s to run %s", skipped, rid)
    if not finite:
        return finite
    stamp = int(time.time() * 1000)
    entities = [Metric(k, v, stamp, int(step)) for k, v in sorted(finite.items())]
    with tracking_errors(f"log metrics to run {rid}"):
        mlflow_client = client()
        for start in range(0, len(entities), 1000):
            mlflow_client.log_batch(rid, metrics=entities[start : start + 1000])
    return finite


class MlflowEpochLogger:
    """Per-epoch training callback: ``on_epoch_end(epoch, metrics)`` -> MLflow metrics.

    Each metric is logged as ``<prefix>/<name>`` with ``step = epoch``.

    Args:
        prefix: Metric-name prefix, e.g. ``"train"`` or ``"candidate"``; empty for none.
        run_id: Run to log to (default: the run active when the logger is created).
        strict: Raise :class:`TrackingError` when MLflow fails; with ``False`` a failure is
            logged as a warning and training goes on (the retries are still bounded).

    Raises:
        TrackingError: At construction, if no run id is given and no run is active.

    """

    def __init__(self, prefix: str = "train", *, run_id: str | None = None, strict: bool = True):
        self.prefix = prefix.strip("/")
        self.run_id = active_run_id(run_id)
        self.strict = strict

    def metric_name(self, name: str) -> str:
        """The MLflow name of metric ``name``."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log ``metrics`` of ``epoch`` (``step = epoch``)."""
        named = {self.metric_name(k): float(v) for k, v in metrics.items()}
        try:
            log_metrics(named, step=epoch, run_id=self.run_id)
        except TrackingError:
            if self.strict:
                raise
            logger.warning("could not log epoch %d metrics to MLflow", epoch, exc_info=True)


def log_evaluation(
    result: EvaluationResult, prefix: str = "eval", *, run_id: str | None = None
) -> dict[str, float]:
    """Log downstream accuracies as ``<prefix>/<metric>`` and the full record as JSON.

    The JSON (``evaluation/<prefix>.json``) holds :meth:`EvaluationResult.to_dict`: accuracies,
    set sizes and every hyper-parameter.

    Returns:
        The metrics logged.

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    rid = active_run_id(run_id)
    prefix = prefix.strip("/")
    record = result.to_dict()
    metrics = {f"{prefix}/{k}": v for k, v in result.metrics().items()}
    for key in ("num_train", "num_test", "num_classes", "feature_dim", "knn_k_used"):
        metrics[f"{prefix}/{key}"] = float(record[key])
    logged = log_metrics(metrics, run_id=rid)
    with tracking_errors(f"log evaluation record to run {rid}"):
        client().log_dict(rid, record, f"evaluation/{_safe_dir_name(prefix)}.json")
    return logged


def score_metrics(report: ScoreReport) -> dict[str, float]:
    """The summary metrics of a score report (names in the module docstring)."""
    summary = report.summary
    metrics: dict[str, float] = {}
    for name, stats in summary.sets.items():
        metrics[f"sslmem_mean/{name}"] = stats.mean
        metrics[f"sslmem_std/{name}"] = stats.std
        metrics[f"sslmem_sem/{name}"] = stats.sem
        metrics[f"sslmem_ci95_low/{name}"] = stats.ci95_low
        metrics[f"sslmem_ci95_high/{name}"] = stats.ci95_high
        metrics[f"sslmem_n/{name}"] = float(stats.n)
        if "q50" in stats.quantiles:
            metrics[f"sslmem_median/{name}"] = stats.quantiles["q50"]
    for control, test in summary.welch_tests.items():
        metrics[f"welch_p/{control}"] = test.p_value
        metrics[f"welch_t/{control}"] = test.t_statistic
        metrics[f"welch_mean_diff/{control}"] = test.mean_difference
    metrics["verdict_passed"] = 1.0 if summary.verdict.passed else 0.0
    metrics["scoring_seconds"] = summary.seconds
    metrics["scoring_points_per_second"] = summary.points_per_second
    return metrics


def version_metrics(
    report: ScoreReport | None = None, evaluation: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """The metrics of a registered version's logged model (names in the module docstring).

    Args:
        report: The version's score report (mean SSLMem per set, p-values, verdict).
        evaluation: Its downstream evaluation (:meth:`EvaluationResult.to_dict` or the
            metrics of one), for ``knn_accuracy`` and ``linear_probe_accuracy``.

    """
    metrics: dict[str, float] = {}
    for key in ("knn_accuracy", "linear_probe_accuracy"):
        if evaluation is not None and key in evaluation:
            metrics[key] = float(evaluation[key])
    if report is not None:
        summary = report.summary
        for name, stats in summary.sets.items():
            metrics[f"sslmem_mean/{name}"] = stats.mean
        for control, test in summary.welch_tests.items():
            metrics[f"welch_p/{control}"] = test.p_value
        metrics["verdict_passed"] = 1.0 if summary.verdict.passed else 0.0
    return metrics


def log_model_metrics(
    model_id: str,
    metrics: Mapping[str, float],
    *,
    run_id: str,
    manifest: SplitManifest | None = None,
    manifest_uri: str | None = None,
    skip_unchanged: bool = False,
) -> dict[str, float]:
    """Log metrics to ``run_id`` linked to the logged model ``model_id`` (MLflow 3).

    MLflow stores a metric logged with a ``model_id`` both in the run and in the logged model's
    metrics, so the experiment's model table and the model version page show it. With the
    split, the metrics are also linked to the split's dataset (the ``dataset`` column).
    Non-finite values are skipped. With ``skip_unchanged``, so are metrics the run already
    holds with the same value: a retried publication adds no second history entry.

    Returns:
        The metrics logged.

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    from mlflow.entities import Metric

    finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    if finite and skip_unchanged:
        with tracking_errors(f"read the metrics of run {run_id}"):
            held = dict(client().get_run(run_id).data.metrics)
        finite = {k: v for k, v in finite.items() if held.get(k) != v}
    if not finite:
        return finite
    dataset_name = dataset_digest = None
    if manifest is not None and manifest_uri is not None:
        dataset = split_dataset(manifest, manifest_uri)
        dataset_name, dataset_digest = dataset.name, dataset.digest
    stamp = int(time.time() * 1000)
    entities = [
        Metric(
            k,
            v,
            stamp,
            0,
            model_id=model_id,
            dataset_name=dataset_name,
            dataset_digest=dataset_digest,
        )
        for k, v in sorted(finite.items())
    ]
    with tracking_errors(f"log metrics of logged model {model_id} to run {run_id}"):
        mlflow_client = client()
        for start in range(0, len(entities), 1000):
            mlflow_client.log_batch(run_id, metrics=entities[start : start + 1000])
    return finite


def log_split_manifest(
    manifest: SplitManifest, *, run_id: str | None = None, artifact_path: str = "split"
) -> str:
    """Log the canonical manifest JSON as ``<artifact_path>/split_manifest.json``.

    Returns:
        The artifact's path within the run.

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    rid = active_run_id(run_id)
    with tempfile.TemporaryDirectory(prefix="sslmem-manifest-") as tmp:
        path = Path(tmp) / "split_manifest.json"
        path.write_bytes(manifest.to_json())
        with tracking_errors(f"log the split manifest to run {rid}"):
            client().log_artifact(rid, str(path), artifact_path)
    return f"{artifact_path}/split_manifest.json"


def log_score_report(
    report: ScoreReport,
    images_for_grid: torch.Tensor | None = None,
    *,
    manifest: SplitManifest | None = None,
    run_id: str | None = None,
    grid_k: int = 16,
    artifact_path: str = SCORING_ARTIFACT_DIR,
) -> dict[str, str]:
    """Log a scoring run: summary metrics, run tags and artifacts.

    Artifacts under ``artifact_path``: ``scores.parquet`` (raw per-point scores and their
    normalisations), ``summary.json`` (statistics, verdict, provenance), ``split_manifest.json``
    (when ``manifest`` is given), ``sslmem_histogram.png`` and ``memorised_grid.png`` (when
    ``images_for_grid`` is given and candidates were scored). Run tags record the manifest hash,
    the verdict and the checkpoints' hashes.

    Args:
        report: The report from :func:`~sslmem.memorization.scoring.score_split`.
        images_for_grid: The dataset's uint8 images ``[N, C, H, W]`` (indexed by the report's
            ``sample_index``), for the grid of most/least memorised candidates.
        manifest: The split that was scored (must match the report's manifest hash).
        run_id: Run to log to (default: the active run).
        grid_k: Images per block of the grid.
        artifact_path: Artifact folder within the run.

    Returns:
        ``{artifact name: path within the run}``.

    Raises:
        ManifestMismatchError: ``manifest`` is not the split the report was scored on.
        TrackingError: MLflow is unreachable or refused.

    """
    rid = active_run_id(run_id)
    summary = report.summary
    if manifest is not None and manifest.manifest_sha256 != summary.manifest_sha256:
        raise ManifestMismatchError(
            f"the split manifest {manifest.manifest_sha256} is not the one the report was "
            f"scored on ({summary.manifest_sha256})",
            "pass the manifest used for scoring",
        )
    tags = {
        T.SPLIT_MANIFEST_SHA256: summary.manifest_sha256,
        T.VERDICT: summary.verdict.outcome,
        T.CANDIDATE_SHA256: ",".join(c.sha256 for c in summary.candidates),
        T.REFERENCE_SHA256: ",".join(r.sha256 for r in summary.references),
    }
    written: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="sslmem-scoring-") as tmp:
        # Everything is written locally first: bad inputs fail before anything is logged.
        folder = Path(tmp) / "scoring"
        write_score_report(report, folder, fmt="parquet")
        written["scores"] = "scores.parquet"
        written["summary"] = "summary.json"
        if manifest is not None:
            (folder / "split_manifest.json").write_bytes(manifest.to_json())
            written["split_manifest"] = "split_manifest.json"
        figures = write_score_figures(report.columns, folder, images_for_grid, grid_k=grid_k)
        written.update({name: path.name for name, path in figures.items()})
        log_metrics(score_metrics(report), run_id=rid)
        with tracking_errors(f"log the score report to run {rid}"):
            mlflow_client = client()
            for key, value in tags.items():
                mlflow_client.set_tag(rid, key, value)
            mlflow_client.log_artifacts(rid, str(folder), artifact_path)
    return {name: f"{artifact_path}/{file}" for name, file in written.items()}
