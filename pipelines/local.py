"""Run the memorisation pipeline on this machine with KFP's local subprocess runner.

The embedded default of ``sslmem run``: the *same* compiled pipeline as on a cluster, executed
task by task in subprocesses of this Python environment, with everything under one output
directory::

    OUT/mlflow.db     MLflow tracking and registry store (SQLite)
    OUT/artifacts/    MLflow artifacts (models, score reports, plots)
    OUT/store/        object store (split manifests, content-addressed)
    OUT/kfp/RUN/      pipeline root of one run (every task's output artifacts)
    OUT/kfp-cache/    KFP local cache (prepare, train and evaluate are cacheable)
    OUT/logs/         one log file per run (all task output)

Re-running is safe: a new pipeline run registers new versions; cached encoders are reused when
the split and recipe match; nothing is overwritten in place.
"""

import builtins
import contextlib
import io
import json
import logging
import os
import re
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sslmem.errors import SSLMemError, TrackingError
from sslmem.pipeline_params import PipelineParams
from sslmem.redaction import RedactingFilter, redact
from sslmem.workflow import RunResult, read_run_result
from sslmem.workflow.champion import ChampionJudgement, LocalJudgeSettings, judge_run_version

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class LocalRun:
    """Where a local run wrote its results.

    Attributes:
        out_dir: The output directory.
        tracking_uri: ``sqlite:///OUT/mlflow.db``.
        log_file: All task output of this run.
        result: What the run registered and scored (``None`` if it failed before
            registering a version).
        error: Why the run failed (``None`` on success).
        seconds: Wall time.
        pipeline_run_id: The pipeline run id its versions and MLflow runs are tagged with
            (``None`` if it failed before registering a version).

    """

    out_dir: Path
    tracking_uri: str
    log_file: Path
    result: RunResult | None
    error: str | None
    seconds: float
    pipeline_run_id: str | None = None
    experiment_id: str | None = None
    champion: ChampionJudgement | None = None

    @property
    def ok(self) -> bool:
        """Whether every step succeeded."""
        return self.error is None

    def mlflow_ui_command(self) -> str:
        """The command that opens the MLflow UI on these results (works as printed).

        The ``mlflow`` of this Python environment by its path: a newcomer who ran ``make demo``
        has not activated ``.venv``, so a bare ``mlflow`` would not be found.
        """
        mlflow = Path(sys.executable).with_name("mlflow")
        return (
            f"MLFLOW_DISABLE_TELEMETRY=true {shlex.quote(str(mlflow))} ui --backend-store-uri "
            f"{shlex.quote(self.tracking_uri)} --host 127.0.0.1 --port 5000"
        )

    def mlflow_ui_url(self, base: str = "http://127.0.0.1:5000") -> str:
        """The experiment's runs in the UI that :meth:`mlflow_ui_command` starts.

        MLflow 3's UI opens in its GenAI view unless told otherwise (a browser-wide switch it
        keeps in local storage); ``workflowType=machine_learning`` selects *Model training*.
        """
        experiment = f"experiments/{self.experiment_id}/runs" if self.experiment_id else ""
        return f"{base}/#/{experiment}?workflowType=machine_learning"


def local_environment(out_dir: Path, device: str) -> dict[str, str]:
    """The environment the tasks run with: local MLflow store, local object store, device."""
    return {
        "SSLMEM_MLFLOW_TRACKING_URI": f"sqlite:///{out_dir / 'mlflow.db'}",
        "SSLMEM_STORE_URI": str(out_dir / "store"),
        "SSLMEM_DEVICE": device,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


@contextlib.contextmanager
def _patched_environ(values: dict[str, str]) -> Iterator[None]:
    # Saved to be put back, not read as settings: the tasks read them with RuntimeSettings
    # (tests/test_env_reads.py allows this read).
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_STATUS_LINE = re.compile(r"Task '([^']+)' finished with status (\w+)")
_CACHE_HIT = re.compile(r"Task (\S+) cache hit")


def _task_progress(line: str) -> str | None:
    """``"TASK: STATUS"`` or ``"TASK: cached"`` for a line of the runner's output; else ``None``."""
    clean = _ANSI.sub("", line)
    status = _STATUS_LINE.search(clean)
    if status:
        return f"{status.group(1)}: {status.group(2)}"
    cached = _CACHE_HIT.search(clean)
    return f"{cached.group(1)}: cached" if cached else None


class _ProgressTee(io.TextIOBase):
    """Write everything to ``stream``; report task status lines to ``report``."""

    def __init__(self, stream: TextIO, report: Callable[[str], None] | None) -> None:
        self._stream = stream
        self._report = report
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        if self._report is not None:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                progress = _task_progress(line)
                if progress is not None:
                    self._report(progress)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


class _TaskProgressHandler(logging.Handler):
    """Report the status lines that reach the root logger while KFP's own handler is away.

    KFP's runner swaps the root logger's handlers for its stdout handler around each message,
    without a lock; iterations of a ``ParallelFor`` run in threads, so some status lines meet
    our handlers instead of KFP's (and never reach the tee).
    """

    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        progress = _task_progress(record.getMessage())
        if progress is not None:
            self._report(progress)


@contextlib.contextmanager
def _task_output_to(log_file: Path, report: Callable[[str], None] | None) -> Iterator[None]:
    """Send the local runner's output (task logs, status lines, logging) to a file.

    The root logger's own handlers are detached meanwhile (the runner logs every task's full
    input and output); ``report`` gets one line per finished or cached task.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    file_handler = logging.FileHandler(log_file)
    file_handler.addFilter(RedactingFilter())
    file_handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    handlers: list[logging.Handler] = [file_handler]
    if report is not None:
        handlers.append(_TaskProgressHandler(report))
    with (
        log_file.open("a") as stream,
        contextlib.redirect_stdout(_ProgressTee(stream, report)),
        warnings.catch_warnings(),
    ):
        # Locally the image, resources and Kubernetes settings are not used at all.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        root.handlers[:] = handlers
        root.setLevel(logging.INFO)
        # KFP indents task output by swapping ``builtins.print`` in and out, unlocked, from the
        # ParallelFor threads: a lost race leaves every later print() indented (and the CLI's
        # own "study: DIR" line unrecognisable), so the original is put back here.
        saved_print = builtins.print
        try:
            yield
        finally:
            builtins.print = saved_print
            root.handlers[:] = saved
            root.setLevel(saved_level)
            file_handler.close()


#: The task whose output names the candidate version this run registered.
_REGISTER_TASK = "register-model"


def _run_on_local_runner(
    pipeline: Callable[..., object],
    arguments: Mapping[str, object],
    out: Path,
    pipeline_root: Path,
    cache: bool,
    log_file: Path,
    progress: Callable[[str], None] | None,
) -> str | None:
    """Run ``pipeline`` on KFP's local subprocess runner; return its error (``None``: none).

    Task output goes to ``log_file``; the cache lives in ``out/kfp-cache`` for every run.
    """
    from kfp import local

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
        enable_caching=cache,
        cache_root=str(out / "kfp-cache"),
    )
    with _task_output_to(log_file, progress):
        try:
            pipeline(**arguments)
        except RuntimeError as exc:
            return _ANSI.sub("", str(exc))
    return None


def registered_pipeline_run_id(pipeline_root: Path, model_name: str) -> str | None:
    """The pipeline run id of the one run under ``pipeline_root`` (``None``: nothing registered).

    KFP's local runner draws the run id at random and does not return it; the register task's
    executor output (under this run's own pipeline root) names the candidate version, whose
    ``sslmem.pipeline_run_id`` tag holds it.

    Raises:
        TrackingError: The version cannot be read from MLflow.

    """
    from sslmem.tracking import get_version_tags
    from sslmem.tracking import tags as T

    outputs = sorted(pipeline_root.glob(f"*/{_REGISTER_TASK}/executor_output.json"))
    if not outputs:
        return None
    values = json.loads(outputs[-1].read_text()).get("parameterValues", {})
    version = values.get("candidate_version")
    if version in (None, ""):
        return None
    return get_version_tags(model_name, str(version)).get(T.PIPELINE_RUN)


def run_locally(
    params: PipelineParams,
    out_dir: Path | str,
    *,
    device: str = "cpu",
    cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> LocalRun:
    """Run the pipeline with ``params`` through ``kfp.local`` and read back its results.

    Args:
        params: Validated pipeline parameters (they are resolved once more here, so an invalid
            config fails before any task runs).
        out_dir: Output directory (created; reused across runs).
        device: ``SSLMEM_DEVICE`` of the tasks (the embedded default is the CPU).
        cache: Reuse cached prepare/train/evaluate outputs (register and score never are).
        progress: Called with one line per finished (or cached) task.

    Returns:
        The run's locations, result and error.

    Raises:
        ConfigError: Invalid parameters (before anything runs).
        TrackingError: The local MLflow store cannot be created.

    """
    from sslmem.pipelines.memorization import build_pipeline
    from sslmem.tracking import check_tracking_server, configure_mlflow, get_or_create_experiment

    params.resolve()
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = local_environment(out, device)
    tracking_uri = env["SSLMEM_MLFLOW_TRACKING_URI"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_key = f"run-{stamp}-{os.getpid()}"
    log_file = out / "logs" / f"{run_key}.log"
    pipeline_root = out / "kfp" / run_key
    started = time.time()
    with _patched_environ(env):
        # Create the store's tables and the experiment once, before parallel tasks race for it.
        configure_mlflow(tracking_uri)
        check_tracking_server()
        experiment_id = get_or_create_experiment(params.mlflow_experiment)
        error = _run_on_local_runner(
            build_pipeline(), params.arguments(), out, pipeline_root, cache, log_file, progress
        )
        result: RunResult | None = None
        pipeline_run_id: str | None = None
        try:
            pipeline_run_id = registered_pipeline_run_id(pipeline_root, params.model_name)
            if pipeline_run_id is not None:
                result = read_run_result(params.model_name, pipeline_run_id=pipeline_run_id)
        except SSLMemError:
            if error is None:
                raise
        if result is None and error is None:
            raise TrackingError(
                f"the pipeline succeeded but registered no version of {params.model_name!r}",
                f"see the task logs in {log_file}",
            )
        champion = None
        if result is not None and pipeline_run_id is not None and error is None:
            # No scoring service here: this run judges its version against the champion (and
            # crowns it when the model has none), then reads the result back with the judgement.
            settings = LocalJudgeSettings(experiment=params.mlflow_experiment, device=device)
            try:
                champion = judge_run_version(
                    params.model_name, result.candidate.version, settings=settings
                )
                result = read_run_result(params.model_name, pipeline_run_id=pipeline_run_id)
            except SSLMemError as exc:
                error = f"the version was scored but not judged against the champion: {exc}"
    return LocalRun(
        out_dir=out,
        tracking_uri=tracking_uri,
        log_file=log_file,
        result=result,
        error=error,
        seconds=time.time() - started,
        pipeline_run_id=pipeline_run_id,
        experiment_id=experiment_id,
        champion=champion,
    )


@dataclass(frozen=True)
class LocalCurationRun:
    """Where a local run of the curation pipeline wrote its results.

    Attributes:
        out_dir: The output directory (shared with ``sslmem run``'s layout).
        tracking_uri: ``sqlite:///OUT/mlflow.db``.
        log_file: All task output of this run.
        study_dir: The study directory (report, results, figures, retrains); ``None`` if the
            study step did not finish.
        error: Why the run failed (``None`` on success).
        seconds: Wall time.

    """

    out_dir: Path
    tracking_uri: str
    log_file: Path
    study_dir: Path | None
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether every step succeeded."""
        return self.error is None


#: The study step's task and output artifact (its directory in the pipeline root).
_STUDY_TASK, _STUDY_OUTPUT = "curation-study", "study"


def run_curation_locally(
    arguments: dict[str, object],
    out_dir: Path | str,
    *,
    device: str = "cpu",
    cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> LocalCurationRun:
    """Run the curation pipeline (:mod:`sslmem.pipelines.curation`) through ``kfp.local``.

    Args:
        arguments: The pipeline's arguments (``scores_uri``, ``split_uri``, ``reference_uri``
            as absolute local paths, ``config_yaml``, the plan fields, ``mlflow_experiment``).
        out_dir: Output directory (created; reused across runs, like ``sslmem run``'s).
        device: ``SSLMEM_DEVICE`` of the tasks.
        cache: Reuse cached resolve/plan/retrain outputs (the study step never is).
        progress: Called with one line per finished (or cached) task.

    Raises:
        TrackingError: The local MLflow store cannot be created.

    """
    from sslmem.pipelines.curation import build_pipeline
    from sslmem.tracking import check_tracking_server, configure_mlflow, get_or_create_experiment

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = local_environment(out, device)
    tracking_uri = env["SSLMEM_MLFLOW_TRACKING_URI"]
    run_key = f"curation-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    log_file = out / "logs" / f"{run_key}.log"
    pipeline_root = out / "kfp" / run_key
    started = time.time()
    with _patched_environ(env):
        experiment = str(arguments.get("mlflow_experiment") or "")
        configure_mlflow(tracking_uri)
        check_tracking_server()
        if experiment:
            get_or_create_experiment(experiment)
        error = _run_on_local_runner(
            build_pipeline(), arguments, out, pipeline_root, cache, log_file, progress
        )
    found = sorted(pipeline_root.glob(f"*/{_STUDY_TASK}/{_STUDY_OUTPUT}"))
    study_dir = found[-1] if found and error is None else None
    if study_dir is None and error is None:
        error = f"the pipeline finished without a study directory (see {log_file})"
    return LocalCurationRun(
        out_dir=out,
        tracking_uri=tracking_uri,
        log_file=log_file,
        study_dir=study_dir,
        error=error,
        seconds=time.time() - started,
    )
