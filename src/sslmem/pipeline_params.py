"""Parameters of the memorisation pipeline, validated before anything runs or is submitted.

(The config as canonical text -- the cache keys and the steps' config inputs -- is
:mod:`sslmem.config_text`.)

The Kubeflow pipeline (:mod:`sslmem.pipelines.memorization`) takes flat, typed parameters. This
module is their one typed definition, :class:`PipelineParams`, and the one place that turns them
into the :class:`~sslmem.config.ExperimentConfig` every step computes with. The CLI
(``sslmem run`` and ``sslmem pipeline submit``) calls :meth:`PipelineParams.resolve` before it
runs or submits anything, and the pipeline's first step calls the same method, so a value that
would fail in the cluster fails on the laptop first, with an error naming the field.

Precedence: ``config_yaml`` (a full or partial experiment config) is the base; a shortcut
parameter (``epochs``, ``arch``, ...) overrides its config field when it is set, i.e. differs
from its "unset" default (``""``, ``0``, ``0.0``, or ``-1`` for ``split_seed``). Parameters that
are not experiment-config fields (seeds, ``alpha``, names) have real defaults.

``sslmem run`` reads a *run config*: an experiment config YAML that may also hold a
``pipeline:`` section with the pipeline-only parameters (see :func:`load_run_config`), so
``--config``/``--set`` reach every pipeline parameter, e.g. ``--set training.epochs=1`` and
``--set pipeline.candidate_seeds=[0,1]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sslmem.config import (
    ExperimentConfig,
    format_validation_error,
    load_raw_config,
    set_dotted,
)
from sslmem.config_text import config_to_yaml
from sslmem.errors import ConfigError, SSLMemError

#: Shortcut pipeline parameter -> the experiment-config field it overrides.
CONFIG_ALIASES: dict[str, str] = {
    "dataset": "data.dataset",
    "data_root": "data.root",
    "split_shared": "split.shared",
    "split_candidate": "split.candidate",
    "split_independent": "split.independent",
    "split_extra": "split.extra",
    "split_seed": "split.seed",
    "pool_size": "split.pool_size",
    "method": "training.method",
    "arch": "model.arch",
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "lr": "training.lr",
    "views": "scoring.views",
    "layer": "scoring.layer",
}
#: The value that means "not set: take the field from config_yaml / the defaults".
_UNSET_OVERRIDES: dict[str, Any] = {"split_seed": -1}
PIPELINE_SECTION = "pipeline"
DEFAULT_MODEL_NAME = "sslmem-encoder"
DEFAULT_EXPERIMENT = "sslmem"


class PipelineParams(BaseModel):
    """Every parameter of the memorisation pipeline (names, types and defaults are the pipeline's).

    Attributes:
        config_yaml: An experiment config as YAML (sections ``data``, ``split``,
            ``augmentation``, ``model``, ``training``, ``scoring``, ``evaluation``); empty for
            the defaults. The shortcuts below override it.
        dataset: ``data.dataset`` (``bundled``, ``fashion-mnist``, ``cifar10``, ...).
        data_root: ``data.root``, a local directory inside the step's container.
        split_shared: ``split.shared``, fraction of the pool in S_S.
        split_candidate: ``split.candidate`` (S_C).
        split_independent: ``split.independent`` (S_I).
        split_extra: ``split.extra`` (S_E).
        split_seed: ``split.seed``.
        pool_size: ``split.pool_size`` (points drawn from the dataset before splitting).
        method: ``training.method`` (``simclr``, ``byol``, ...).
        arch: ``model.arch`` (``small_cnn``, ``resnet18``, ...).
        epochs: ``training.epochs``.
        batch_size: ``training.batch_size``.
        lr: ``training.lr``.
        views: ``scoring.views`` (K).
        layer: ``scoring.layer`` (representation layer SSLMem is computed on).
        candidate_seeds: One candidate encoder f is trained per seed; SSLMem averages over them.
        reference_seeds: One reference encoder g per seed.
        alpha: Significance level of the Welch t-tests in the verdict.
        shard_size: Points per scoring shard; ``0`` scores in one step, ``> 0`` fans scoring
            out over shards (``ParallelFor``) and merges them into the same report.
        mlflow_experiment: MLflow experiment of the pipeline's runs.
        model_name: Registered model of the candidate encoders.
        reference_model_name: Registered model of the reference encoders (default
            ``<model_name>-reference``).

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_yaml: str = ""
    dataset: str = ""
    data_root: str = ""
    split_shared: float = Field(0.0, ge=0, lt=1)
    split_candidate: float = Field(0.0, ge=0, lt=1)
    split_independent: float = Field(0.0, ge=0, lt=1)
    split_extra: float = Field(0.0, ge=0, lt=1)
    split_seed: int = Field(-1, ge=-1)
    pool_size: int = Field(0, ge=0)
    method: str = ""
    arch: str = ""
    epochs: int = Field(0, ge=0)
    batch_size: int = Field(0, ge=0)
    lr: float = Field(0.0, ge=0)
    views: int = Field(0, ge=0)
    layer: str = ""
    candidate_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    reference_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    alpha: float = Field(0.01, gt=0, lt=1)
    shard_size: int = Field(0, ge=0)
    mlflow_experiment: str = Field(DEFAULT_EXPERIMENT, min_length=1)
    model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1)
    reference_model_name: str = ""

    @field_validator("candidate_seeds", "reference_seeds")
    @classmethod
    def _unique_non_negative(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be unique, got {seeds}")
        if any(seed < 0 for seed in seeds):
            raise ValueError(f"seeds must be >= 0, got {seeds}")
        return seeds

    @field_validator("model_name", "reference_model_name", "mlflow_experiment")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if name != name.strip() or any(c in name for c in "/'\"\\`"):
            raise ValueError(f"must not contain quotes, slashes or outer spaces, got {name!r}")
        return name

    @property
    def resolved_reference_model_name(self) -> str:
        """``reference_model_name``, defaulting to ``<model_name>-reference``."""
        return reference_model_for(self.model_name, self.reference_model_name)

    def overrides(self) -> dict[str, Any]:
        """The shortcut parameters that are set, as ``{config field: value}``."""
        out: dict[str, Any] = {}
        for name, field in CONFIG_ALIASES.items():
            value = getattr(self, name)
            unset = _UNSET_OVERRIDES.get(name, type(value)())
            if value != unset:
                out[field] = value
        return out

    def resolve(self) -> ExperimentConfig:
        """The experiment config these parameters define: ``config_yaml`` plus the shortcuts.

        Also checks names the config model cannot (architecture, method and their options).

        Raises:
            ConfigError: ``config_yaml`` is not a YAML mapping, or a field is invalid (the
                message names the config field and the pipeline parameter that set it).

        """
        raw = parse_config_yaml(self.config_yaml)
        overrides = self.overrides()
        for field, value in overrides.items():
            set_dotted(raw, field, value)
        try:
            config = ExperimentConfig.model_validate(raw)
        except ValidationError as exc:
            by_field = {field: name for name, field in CONFIG_ALIASES.items()}
            set_by = sorted(
                f"{field} <- pipeline parameter {by_field[field]!r}" for field in overrides
            )
            hint = "correct the fields listed above"
            if set_by:
                hint += f" (set by: {', '.join(set_by)}; the rest come from config_yaml)"
            raise ConfigError(format_validation_error(exc, "pipeline parameters"), hint) from exc
        validate_names(config)
        return config

    def arguments(self) -> dict[str, Any]:
        """The pipeline arguments (JSON-compatible), every parameter included."""
        return self.model_dump(mode="json")


def parse_config_yaml(text: str) -> dict[str, Any]:
    """Parse the ``config_yaml`` parameter into a mapping (empty text: ``{}``).

    Raises:
        ConfigError: Not valid YAML, or not a mapping of sections.

    """
    try:
        loaded = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config_yaml: not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config_yaml: must be a mapping of config sections, got {type(loaded).__name__}",
            "pass e.g. 'training: {epochs: 5}'",
        )
    return loaded


def validate_names(config: ExperimentConfig) -> None:
    """Check the registry names and options of a config: architecture, method, method options.

    Raises:
        ConfigError: The message names the config field (``model.arch``, ``training.method``,
            ``model.arch_kwargs`` or ``training.method_kwargs``).

    """
    from sslmem.models.registry import get_backbone_spec, resolve_arch_kwargs
    from sslmem.training.methods import check_compatible, validate_options

    checks = (
        ("model.arch", lambda: get_backbone_spec(config.model.arch)),
        (
            "model.arch_kwargs",
            lambda: resolve_arch_kwargs(config.model.arch, config.model.arch_kwargs),
        ),
        ("training.method", lambda: check_compatible(config.training.method, config.model.arch)),
        (
            "training.method_kwargs",
            lambda: validate_options(config.training.method, dict(config.training.method_kwargs)),
        ),
    )
    for field, check in checks:
        try:
            check()
        except SSLMemError as exc:
            raise ConfigError(f"invalid configuration: {field}: {exc.problem}", exc.fix) from exc


def parse_param_assignments(items: list[str]) -> dict[str, Any]:
    """Parse ``["epochs=5", "candidate_seeds=[0,1]"]`` (values are YAML scalars or lists).

    Raises:
        ConfigError: An item is not ``name=value``, or a name is given twice.

    """
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(
                f"--param {item!r} is not of the form name=value", "write e.g. --param epochs=5"
            )
        if name in out:
            raise ConfigError(f"pipeline parameter {name!r} is given twice")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--param {name}: value {raw!r} is not valid YAML: {exc}") from exc
        # Text parameters stay text even when they look like numbers (e.g. model_name=123).
        field = PipelineParams.model_fields.get(name)
        if field is not None and field.annotation is str and not isinstance(value, str):
            value = raw
        out[name] = value
    return out


def build_params(values: dict[str, Any]) -> PipelineParams:
    """Validate pipeline parameters given by name (unknown names are errors).

    Raises:
        ConfigError: Unknown or invalid parameters, named; the known names are listed.

    """
    unknown = sorted(set(values) - set(PipelineParams.model_fields))
    if unknown:
        raise ConfigError(
            f"unknown pipeline parameter(s): {', '.join(unknown)}",
            f"known parameters: {', '.join(PipelineParams.model_fields)}",
        )
    try:
        return PipelineParams.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, "pipeline parameters"), "correct the parameters above"
        ) from exc


def params_from_config(config: ExperimentConfig, pipeline: dict[str, Any]) -> PipelineParams:
    """Pipeline parameters that reproduce ``config`` exactly, plus pipeline-only settings.

    ``config_yaml`` carries the full config and every shortcut parameter is set to the config's
    value (so a run's parameters show the real values). Seeds default to
    ``[config.training.seed]`` for candidates and to the candidate seeds for references (same
    seed, same initial weights: less noise in f - g).

    Args:
        config: The validated experiment config.
        pipeline: Pipeline-only parameters (``candidate_seeds``, ``alpha``, ``model_name``, ...).

    Raises:
        ConfigError: An unknown or invalid pipeline parameter, or a shortcut given in
            ``pipeline`` (set it in its config section instead).

    """
    shortcuts = sorted(set(pipeline) & (set(CONFIG_ALIASES) | {"config_yaml"}))
    if shortcuts:
        fields = [CONFIG_ALIASES.get(name, "the config file") for name in shortcuts]
        raise ConfigError(
            f"pipeline.{shortcuts[0]} is an experiment-config field in a run config",
            f"set {fields[0]} instead (e.g. --set {fields[0]}=...)",
        )
    values: dict[str, Any] = {"config_yaml": config_to_yaml(config)}
    dump = config.model_dump(mode="json")
    for name, field in CONFIG_ALIASES.items():
        section, key = field.split(".")
        value = dump[section][key]
        if value is not None:
            values[name] = value
    seeds = pipeline.get("candidate_seeds", [config.training.seed])
    values["candidate_seeds"] = seeds
    values["reference_seeds"] = pipeline.get("reference_seeds", seeds)
    values.update({k: v for k, v in pipeline.items() if k not in values})
    unknown = sorted(set(values) - set(PipelineParams.model_fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in the pipeline section: {', '.join(unknown)}",
            "known: "
            + ", ".join(
                name
                for name in PipelineParams.model_fields
                if name not in CONFIG_ALIASES and name != "config_yaml"
            ),
        )
    try:
        return PipelineParams.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, f"{PIPELINE_SECTION} section").replace(
                "\n  ", f"\n  {PIPELINE_SECTION}."
            ),
            "correct the fields listed above",
        ) from exc


def load_run_config(path: Path | str | None, overrides: list[str] | None = None) -> PipelineParams:
    """Load a run config (experiment sections + optional ``pipeline:``) into pipeline parameters.

    Args:
        path: YAML file (optional).
        overrides: ``key=value`` with dotted keys, e.g. ``training.epochs=1`` or
            ``pipeline.alpha=0.05``, applied after the file.

    Returns:
        Validated parameters; :meth:`PipelineParams.resolve` gives back the same config.

    Raises:
        ConfigError: Unreadable file, unknown key or invalid value, named.

    """
    raw, source = load_raw_config(path, overrides)
    pipeline = raw.pop(PIPELINE_SECTION, None) or {}
    if not isinstance(pipeline, dict):
        raise ConfigError(f"{PIPELINE_SECTION}: must be a mapping ({source})")
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, source), "correct the fields listed above"
        ) from exc
    validate_names(config)
    return params_from_config(config, pipeline)


def reference_model_for(model_name: str, reference_model_name: str = "") -> str:
    """The registered model of the references: ``reference_model_name`` or ``<model>-reference``."""
    return reference_model_name or f"{model_name}-reference"
