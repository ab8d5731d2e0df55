"""Typed configuration: runtime settings from the environment and experiment configs from YAML.

Two kinds of configuration, each validated at one boundary:

* :class:`RuntimeSettings` -- where things run (device, stores, endpoints, secrets). Every
  environment variable the project reads is a field here, prefixed ``SSLMEM_`` (one field
  also falls back to MLflow's own ``MLFLOW_TRACKING_URI``).
* :class:`ExperimentConfig` -- what is computed (data, split, augmentation, encoder, training,
  scoring, evaluation). Loaded from a YAML file plus ``--set key=value`` overrides by
  :func:`load_experiment_config`; unknown keys and bad values are errors naming the field.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from sslmem.augment import AugmentationSpec
from sslmem.errors import ConfigError
from sslmem.estimators import DEFAULTS, check_estimator, default_estimator, estimator_for_mode
from sslmem.estimators import EstimatorName as PairEstimatorName

logger = logging.getLogger(__name__)

#: A runtime image's digest, as ``SSLMEM_IMAGE_DIGEST`` holds it.
IMAGE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

DistanceName = Literal["l2", "cosine"]
AlignmentMode = Literal["pair", "anchor"]


class RuntimeSettings(BaseSettings):
    """Where and how things run; read from ``SSLMEM_*`` environment variables.

    No secret has a default: credentials come from the environment (Kubernetes Secrets on a
    cluster) or are absent.
    """

    # validate_by_name: fields with an alias (the tracking URI) still take their field name as
    # a keyword, RuntimeSettings(mlflow_tracking_uri=...), like every other field.
    model_config = SettingsConfigDict(env_prefix="SSLMEM_", extra="ignore", validate_by_name=True)

    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads.")
    keep_heap: bool = Field(
        True, description="Keep freed tensor memory in the heap (faster CPU steps; see runtime)."
    )
    data_dir: Path = Field(
        Path.home() / ".cache" / "sslmem" / "data",
        description="Root for local datasets (CIFAR, image folders, unpacked Fashion-MNIST).",
    )
    store_uri: str = Field(
        "sslmem-store", description="Object store root: a local directory or s3://bucket/prefix."
    )
    s3_endpoint: str | None = Field(None, description="host:port of an S3/MinIO endpoint.")
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = Field(True, description="Use TLS for the S3 endpoint.")
    s3_region: str | None = None
    store_retries: int = Field(3, ge=0, le=10, description="Bounded retries on store errors.")
    # A server that accepts connections and never answers holds a request
    # (1 + store_retries) x s3_read_timeout_s: ~33 s with the defaults (it was 4 x 60 s).
    s3_connect_timeout_s: float = Field(
        2.0, gt=0, le=600, description="Seconds to wait for a TCP/TLS connection to S3."
    )
    s3_read_timeout_s: float = Field(
        8.0, gt=0, le=3600, description="Seconds to wait for S3 to send data on an open connection."
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        # Precedence: SSLMEM_MLFLOW_TRACKING_URI, then MLflow's own variable (what an MLflow
        # user already has set), then the local SQLite store (None).
        validation_alias=AliasChoices("SSLMEM_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI; falls back to MLFLOW_TRACKING_URI, then local SQLite.",
    )
    mlflow_timeout_s: int = Field(
        10, ge=1, le=3600, description="Seconds MLflow waits for an answer per HTTP request."
    )
    mlflow_max_retries: int = Field(
        2, ge=0, le=10, description="Retries per MLflow HTTP request (bounded: see tracking)."
    )
    kfp_token: SecretStr | None = Field(
        None, description="Bearer token for the Kubeflow Pipelines API (pipeline submit)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    image_digest: str | None = Field(
        None,
        description="Digest of the runtime image (sha256:<64 hex>): part of the code version "
        "that keys the pipeline cache (sslmem.provenance.code_version).",
    )

    @field_validator("image_digest", mode="before")
    @classmethod
    def _image_digest(cls, value: Any) -> Any:
        # Blank is unset; anything else must be exactly what `docker inspect` prints.
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None
        if not IMAGE_DIGEST.fullmatch(value):
            raise ValueError(
                "not an image digest; set it to sha256:<64 lower-case hex digits> (docker "
                "inspect --format '{{index .RepoDigests 0}}' IMAGE), or unset it"
            )
        return value

    def tracking_uri_from_mlflow(self) -> bool:
        """Whether the tracking URI is MLflow's own ``MLFLOW_TRACKING_URI`` (ours is unset)."""
        return (
            self.mlflow_tracking_uri is not None
            and "SSLMEM_MLFLOW_TRACKING_URI" not in os.environ
            and self.mlflow_tracking_uri == os.environ.get("MLFLOW_TRACKING_URI")
        )

    def __init__(self, **values: Any) -> None:
        """Read the environment (``values`` win over it).

        Raises:
            ConfigError: A variable holds an invalid value; the message names the variable
                (``SSLMEM_NUM_THREADS``), never echoing a secret's value.

        """
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(
                _format_settings_error(exc, values),
                "correct or unset the environment variables listed above "
                "(docs/configuration.md lists them)",
            ) from exc


def _format_settings_error(error: ValidationError, explicit: dict[str, Any]) -> str:
    """One line per bad setting, named as the environment variable that set it."""
    from sslmem.env_settings import settings_error_lines

    return "\n".join(
        ["invalid runtime settings:", *settings_error_lines(error, RuntimeSettings, explicit)]
    )


class _Section(BaseModel):
    # inf passes "> 0" checks and then diverges training an hour later: refuse it here.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


LOCAL_DATASETS: tuple[str, ...] = ("bundled", "cifar10", "cifar100", "fashion-mnist", "folder")
"""Dataset names loaded from local files (sslmem.data.datasets registers their loaders)."""


class DataConfig(_Section):
    """Which dataset to use."""

    dataset: str = Field(
        "bundled",
        description="A dataset name (bundled, fashion-mnist, cifar10, cifar100, folder) or "
        "s3://bucket/prefix/ of class folders or WebDataset .tar shards.",
    )
    root: Path | None = Field(
        None, description="Local directory (defaults per dataset); for s3:// the local cache."
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value in LOCAL_DATASETS or (value.startswith("s3://") and len(value) > len("s3://")):
            return value
        raise ValueError(
            f"unknown dataset {value!r}: use one of {', '.join(LOCAL_DATASETS)} "
            "or s3://bucket/prefix/"
        )


class SplitConfig(_Section):
    """Fractions of the pool for S_S / S_C / S_I / S_E and the seed (SSLMem protocol)."""

    shared: float = Field(0.7, gt=0, lt=1)
    candidate: float = Field(0.1, gt=0, lt=1)
    independent: float = Field(0.1, gt=0, lt=1)
    extra: float = Field(0.1, gt=0, lt=1)
    pool_size: int | None = Field(None, ge=4, description="Use a seeded subset of this size.")
    seed: int = Field(0, ge=0, description="Seed of the split (numpy SeedSequence: >= 0).")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.shared + self.candidate + self.independent + self.extra
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.6f}")
        return self


class ModelConfig(_Section):
    """Encoder architecture and projection head."""

    arch: str = "small_cnn"
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    head_hidden_dim: int = Field(256, ge=1)
    head_output_dim: int = Field(64, ge=1)


class TrainingConfig(_Section):
    """SSL training recipe (shared by candidate and reference)."""

    method: str = Field("simclr", description="Registered SSL method (sslmem.training.methods).")
    method_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Method options, validated by the method (e.g. mae)."
    )
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(
        128, ge=2, description="Images per optimizer step, over all processes and micro-batches."
    )
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="Per-step schedule after the linear warm-up."
    )
    weight_decay: float = Field(1e-6, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    sgd_momentum: float = Field(0.9, ge=0, lt=1)
    warmup_epochs: int = Field(0, ge=0)
    temperature: float = Field(0.2, gt=0)
    grad_accum_steps: int = Field(1, ge=1)
    checkpoint_every: int = Field(1, ge=1, description="Write the resume file every N epochs.")
    resume_every_epochs: int = Field(
        1,
        ge=0,
        description="Pipeline train steps: upload the resume state to the object store every N "
        "epochs so a retried step continues from it (0: off).",
    )
    compile: bool = Field(False, description="torch.compile the training step's model.")
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms.")
    sync_batchnorm: bool = Field(True, description="SyncBatchNorm under multi-GPU DDP.")
    seed: int = 0


class ScoringConfig(_Section):
    """How SSLMem is computed: the paper's definition, estimated from K views per point.

    The default estimator is ``ustat`` (all pairs of K views): the same expectation as the
    paper's ``pairs`` estimator (K independent pairs, 2K forwards), and measured to match its
    per-point precision with half the forwards (benchmarks/README.md). ``mode: anchor`` (the
    authors' script) has no view pairs and defaults to ``pairs``.
    """

    views: int = Field(
        8,
        ge=1,
        description="K: view pairs (estimator pairs), views (estimator ustat) or views against "
        "the clean image (anchor mode).",
    )
    mode: AlignmentMode = "pair"
    estimator: PairEstimatorName = Field(
        DEFAULTS["pair"],
        description="Pair mode: 'ustat' (default: all K(K-1)/2 pairs of K views, K forwards) or "
        "'pairs' (K independent view pairs, 2K forwards: the paper's); same expectation. "
        "Recorded; scores of different estimators are never compared. Anchor mode: 'pairs'.",
    )
    distance: DistanceName = "l2"
    layer: str = Field(
        "backbone",
        min_length=1,
        description="Named layer whose output is the representation (Encoder.layer_names).",
    )
    chunk_size: int = Field(
        64, ge=1, description="Points per forward; peak memory ~ chunk_size x view_batch images."
    )
    view_batch: int = Field(
        32,
        ge=2,
        description="Views per point in one forward (pairs are never split); bounds memory "
        "for any K.",
    )
    autocast_bf16: bool = Field(
        False, description="bf16 autocast on CUDA (default: fp32, TF32 off); ignored on CPU."
    )
    seed: int = 0
    sets: tuple[Literal["candidate", "independent", "extra", "shared"], ...] = Field(
        ("candidate", "independent", "extra"), min_length=1
    )
    shared_sample: int = Field(500, ge=1, description="Points of S_S scored as a control.")

    @field_validator("sets")
    @classmethod
    def _sets_unique(cls, sets: tuple[str, ...]) -> tuple[str, ...]:
        # A set scored twice would count its points twice in every test.
        repeated = sorted({name for name in sets if sets.count(name) > 1})
        if repeated:
            raise ValueError(f"each set may be scored once; repeated: {', '.join(repeated)}")
        return sets

    @model_validator(mode="before")
    @classmethod
    def _mode_default_estimator(cls, data: Any) -> Any:
        # An estimator nobody chose is the mode's (anchor mode has no view pairs: pairs).
        if isinstance(data, dict) and "estimator" not in data:
            try:
                return {**data, "estimator": default_estimator(data.get("mode", "pair"))}
            except ConfigError:
                return data  # an unknown mode: the field's own validation names it
        return data

    @model_validator(mode="after")
    def _estimator_fits_mode(self) -> ScoringConfig:
        try:
            check_estimator(self.estimator, self.mode, self.views)
        except ConfigError as exc:
            raise ValueError(f"{exc.problem}; {exc.fix}") from None
        return self


class EvaluationConfig(_Section):
    """Downstream evaluation (kNN and linear probe on frozen features)."""

    layer: str = Field("backbone", description="Named layer whose output is the feature.")
    feature_batch_size: int = Field(512, ge=1, description="Images per feature-extraction batch.")
    autocast_bf16: bool = Field(False, description="bf16 autocast for extraction (CUDA only).")
    knn_k: int = Field(20, ge=1, description="Neighbours (capped at the train-set size).")
    knn_temperature: float = Field(0.1, gt=0, description="Vote weight exp(sim / temperature).")
    knn_batch_size: int = Field(256, ge=1, description="Test points per kNN batch.")
    probe_epochs: int = Field(100, ge=1)
    probe_lr: float = Field(1e-2, gt=0, description="Adam learning rate.")
    probe_weight_decay: float = Field(0.0, ge=0)
    probe_batch_size: int = Field(256, ge=1, description="Mini-batch size (>= N: full batch).")
    probe_seed: int = 0


class ExperimentConfig(_Section):
    """Everything that defines an experiment; logged with every run."""

    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    augmentation: AugmentationSpec = AugmentationSpec()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    scoring: ScoringConfig = ScoringConfig()
    evaluation: EvaluationConfig = EvaluationConfig()


def format_validation_error(error: ValidationError, source: str) -> str:
    """Render a pydantic error as one line per field, naming the field and what is allowed."""
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "<root>"
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {field}: {item['msg']}{got_text}")
    return "\n".join(lines)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``dotted = "a.b.c"``, creating sections."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["scoring.views=4", ...]`` into a nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override {item!r} is not of the form key=value",
                "write e.g. --set scoring.views=8",
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise ConfigError(
                f"override {item!r}: the value {raw!r} is not valid YAML ({problem})",
                "quote the value if it is a string (--set 'key=\"...\"'), or close its "
                "brackets, e.g. --set scoring.sets=[candidate,extra]",
            ) from exc
        _check_flow_keys(item, value)
        set_dotted(tree, key.strip(), value)
    return tree


def _check_flow_keys(item: str, value: Any) -> None:
    """Refuse ``{a:1}``: YAML reads it as the key ``"a:1"`` without a value (needs ``a: 1``)."""
    if not isinstance(value, dict):
        return
    for key, inner in value.items():
        if isinstance(key, str) and ":" in key and inner is None:
            name, _, rest = key.partition(":")
            raise ConfigError(
                f"override {item!r}: YAML reads {key!r} as a key without a value",
                f"put a space after the colon: {{{name}: {rest}}}",
            )
        _check_flow_keys(item, inner)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


#: Recipes shipped with the package; ``--config NAME`` finds ``NAME.yaml`` here.
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped in :data:`RECIPES_DIR` (without ``.yaml``), sorted."""
    return sorted(recipe.stem for recipe in RECIPES_DIR.glob("*.yaml"))


def resolve_config_path(path: Path | str) -> Path:
    """An existing YAML file, or the shipped recipe of that name (e.g. ``fashion-mnist``).

    A file path wins over a recipe of the same name, so a local ``fashion-mnist`` file is never
    silently replaced by the packaged recipe.

    Raises:
        ConfigError: Neither a file nor a shipped recipe (the message lists the recipes).
    """
    file = Path(path)
    if file.is_file():
        return file
    if not str(path).strip():
        raise ConfigError(
            "the config path is empty",
            f"pass a YAML file or one of the recipes: {', '.join(shipped_recipes())}",
        )
    if file.is_dir():
        raise ConfigError(
            f"config file {file} is a directory",
            "pass the YAML file inside it (e.g. --config DIR/recipe.yaml) or a shipped recipe: "
            f"{', '.join(shipped_recipes())}",
        )
    recipe = RECIPES_DIR / f"{file.name.removesuffix('.yaml')}.yaml"
    if file.parent == Path(".") and recipe.is_file():
        return recipe
    raise ConfigError(
        f"config file {file} does not exist and is not a shipped recipe",
        f"pass an existing YAML file or one of the recipes: {', '.join(shipped_recipes())}",
    )


def load_raw_config(
    path: Path | str | None = None, overrides: list[str] | None = None
) -> tuple[dict[str, Any], str]:
    """Read a YAML config file and apply ``--set`` overrides, without validating.

    Returns:
        ``(raw mapping, description of its source)`` for error messages.

    Raises:
        ConfigError: The file is missing, not YAML or not a mapping; an override is malformed.
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        file = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {file} is not UTF-8 text (byte {exc.start}: {exc.reason})",
                "save the file as UTF-8 (YAML files are UTF-8); is it the right file?",
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file} must hold a mapping of sections")
        raw, source = loaded, str(file)
    if overrides:
        tree = parse_overrides(overrides)
        raw = _mode_wins(_deep_merge(raw, tree), tree)
        source += " + --set overrides"
    return raw, source


def _mode_wins(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """An overridden ``scoring.mode`` wins over the file's estimator that cannot serve it.

    The override (``sslmem score --mode``, ``--set scoring.mode=...``, a pipeline's or the
    service's overrides) gets :func:`~sslmem.estimators.estimator_for_mode`'s estimator, logged
    here and recorded in every report's ``scoring``; an estimator overridden too is kept (and
    refused by validation if it does not fit the mode).
    """
    chosen = overrides.get("scoring")
    scoring = raw.get("scoring")
    if not isinstance(chosen, dict) or "mode" not in chosen or "estimator" in chosen:
        return raw
    if not isinstance(scoring, dict) or "estimator" not in scoring:
        return raw  # no estimator configured: validation defaults it by mode
    mode, configured = str(scoring["mode"]), str(scoring["estimator"])
    estimator = estimator_for_mode(mode, configured)
    if estimator is None:
        return raw
    logger.warning(
        "mode %r: the config's estimator %r does not serve it; scoring with %r (recorded in "
        "the report; choose with --estimator or --set scoring.estimator=...)",
        mode,
        configured,
        estimator,
    )
    return {**raw, "scoring": {**scoring, "estimator": estimator}}


def load_experiment_config(
    path: Path | str | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Load and validate an experiment config.

    Args:
        path: YAML file (optional; defaults apply to everything it omits).
        overrides: ``key=value`` strings with dotted keys, applied after the file.

    Returns:
        The validated, frozen config.

    Raises:
        ConfigError: The file is missing or not a mapping, or a field is invalid (the message
            names each field and the allowed values).
    """
    raw, source = load_raw_config(path, overrides)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, source), "correct the fields listed above"
        ) from exc
