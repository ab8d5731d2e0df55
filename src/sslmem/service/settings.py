"""Configuration of the scoring service: ``SSLMEM_SERVICE_*`` variables and an optional file.

Only what is specific to the service lives here. Where MLflow and the object store are (and
their credentials) stays in :class:`~sslmem.config.RuntimeSettings` (``SSLMEM_MLFLOW_TRACKING_URI``,
``SSLMEM_STORE_URI``, ``SSLMEM_S3_*``), shared with ``sslmem run`` and the pipeline, so one
deployment configures them once.

Precedence: explicit keyword arguments, then environment variables, then the config file (YAML
or a ``.env`` file, given to :meth:`ServiceSettings.load` or by ``SSLMEM_SERVICE_CONFIG_FILE``),
then the defaults. Secrets have no default: the webhook secret and the API token come from the
environment or from a file (a mounted Kubernetes Secret); without them the service refuses
every webhook delivery and every mutating request. Secrets are :class:`~pydantic.SecretStr`, so
``repr``, ``str`` and logs show ``**********``. During a rotation a previous webhook secret is
accepted too (``WEBHOOK_SECRET_PREVIOUS``); secrets given as files are re-read when the files
change (:mod:`sslmem.service.secrets`).

Every ``SSLMEM_SERVICE_*`` variable must name a field (or be ``SSLMEM_SERVICE_CONFIG_FILE``):
a misspelt one is refused at start-up instead of silently ignored.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from sslmem.coordination.settings import LeaseSettings
from sslmem.errors import ConfigError

__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_PREFIX",
    "ServiceSettings",
    "read_secret_file",
    "valid_env_names",
]

ENV_PREFIX = "SSLMEM_SERVICE_"
#: Environment variable naming the optional config file (YAML, or ``.env`` by suffix).
CONFIG_FILE_ENV = f"{ENV_PREFIX}CONFIG_FILE"

# The file read by the source list of the current ServiceSettings.load() call (thread-safe).
_config_file: ContextVar[Path | None] = ContextVar("sslmem_service_config_file", default=None)


def _default_replica_id() -> str:
    # On Kubernetes the host name is the pod name: unique per replica and readable in leases.
    return f"{socket.gethostname()}-{os.getpid()}"


def read_secret_file(path: Path, what: str) -> SecretStr:
    """Read a secret from a file (a mounted Secret), without its trailing newline.

    Args:
        path: File holding the secret.
        what: What the secret is, for the error message (e.g. ``"webhook secret"``).

    Returns:
        The secret.

    Raises:
        ConfigError: The file cannot be read or holds only whitespace (the message names the
            file, never its content).

    """
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"cannot read the {what} file {path}: {reason}",
            "point the setting at a readable UTF-8 file holding the secret",
        ) from None
    if not text.strip():
        raise ConfigError(f"the {what} file {path} is empty", "write the secret into the file")
    return SecretStr(text)


class ServiceSettings(BaseSettings):
    """How the scoring service runs; read from ``SSLMEM_SERVICE_*`` variables.

    Use :meth:`load` (clear errors, config file) rather than the constructor in adapters.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    host: str = Field("127.0.0.1", description="Address to bind (loopback unless told).")
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC secret shared with the MLflow webhook (no default)."
    )
    webhook_secret_file: Path | None = Field(
        None, description="File holding the webhook secret (instead of webhook_secret)."
    )
    api_token: SecretStr | None = Field(
        None, description="Bearer token required by mutating endpoints (no default)."
    )
    api_token_file: Path | None = Field(
        None, description="File holding the API token (instead of api_token)."
    )
    webhook_secret_previous: SecretStr | None = Field(
        None,
        description="The previous webhook secret, also accepted while a rotation is under way.",
    )
    webhook_secret_previous_file: Path | None = Field(
        None,
        description="File holding the previous webhook secret; missing or empty: none.",
    )
    webhook_max_age_s: float = Field(
        300.0, gt=0, description="Deliveries whose timestamp is further from now are refused."
    )
    webhook_dedup_size: int = Field(
        10_000,
        ge=1,
        description=(
            "Delivery ids remembered in memory (LRU, kept 2 x max age + 60 s); a cheap filter "
            "in front of the shared ledger in the object store."
        ),
    )
    webhook_max_body_bytes: int = Field(
        256 * 1024, ge=1024, description="Larger webhook bodies are refused (413)."
    )
    lease_prefix: str = Field(
        "leases", min_length=1, description="Object-store key prefix of the lease objects."
    )
    lease_ttl_s: float = Field(
        120.0, gt=0, description="A lease not renewed for this long may be taken over."
    )
    lease_renew_s: float = Field(
        30.0, gt=0, description="Renew held leases this often (well below the TTL)."
    )
    reconcile_interval_s: float = Field(
        60.0, gt=0, description="Seconds between reconcile passes over the registry."
    )
    retry_max_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Longest wait before retrying a job that met an unreachable MLflow or object store "
            "(backoff from 1 s, doubling, with jitter)."
        ),
    )
    max_concurrent_jobs: int = Field(1, ge=1, description="Scoring jobs run at once per replica.")
    champion_alias: str = Field(
        "champion", min_length=1, description="Alias of the version new versions are judged by."
    )
    experiment: str = Field(
        "sslmem", min_length=1, description="MLflow experiment of the service's score runs."
    )
    recipe: Path | None = Field(
        None,
        description="Experiment config (YAML) whose data/scoring sections apply.",
    )
    config_overrides: list[str] = Field(
        default_factory=list, description="key=value overrides of the recipe, e.g. scoring.views=4."
    )
    device: str | None = Field(
        None, description="Scoring device ('cpu', 'cuda', 'cuda:N'); default SSLMEM_DEVICE."
    )
    policy: dict[str, float | None] = Field(
        default_factory=dict,
        description=(
            'Service-wide judgement policy overrides as JSON, e.g. {"alpha": 0.05}; '
            "sslmem.policy.* registered-model tags override it per model."
        ),
    )
    model_cache_dir: Path | None = Field(
        None, description="Download cache of registered checkpoints (default ~/.cache/sslmem)."
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM, wait this long for running jobs before releasing."
    )
    log_format: Literal["json", "text"] = Field(
        "text",
        description="Log lines: 'json' (one object per line, the chart's default) or 'text'.",
    )
    replica_id: str = Field(
        default_factory=_default_replica_id,
        min_length=1,
        description="Names this replica in leases (default: host name and process id).",
    )
    models: list[str] = Field(
        default_factory=list,
        description=(
            "Registered models the service acts on besides those tagged sslmem.managed=true, "
            'as JSON, e.g. ["enc", "enc-ref"] (the upgrade path for models registered earlier).'
        ),
    )
    allowed_uri_prefixes: list[str] = Field(
        default_factory=list,
        description=(
            "Locations the service may read besides SSLMEM_STORE_URI and MLflow's artifact "
            'store, as JSON, e.g. ["s3://datasets/imagenet"]; checked by scheme, bucket, prefix.'
        ),
    )

    @field_validator("allowed_uri_prefixes")
    @classmethod
    def _plain_locations(cls, value: list[str]) -> list[str]:
        from sslmem.data.uri_policy import UriNotAllowedError, UriPolicy

        try:
            UriPolicy.of(value)  # a typo fails at start-up, not every version
        except UriNotAllowedError as exc:
            raise ValueError(exc.problem) from None
        return value

    @model_validator(mode="after")
    def _resolve(self) -> ServiceSettings:
        for name, what in (("webhook_secret", "webhook secret"), ("api_token", "API token")):
            value: SecretStr | None = getattr(self, name)
            file: Path | None = getattr(self, f"{name}_file")
            if value is not None and file is not None:
                raise ValueError(f"set {name} or {name}_file, not both")
            if value is not None and not value.get_secret_value().strip():
                raise ValueError(f"{name} is empty; unset it or give a value")
            if file is not None:
                setattr(self, name, read_secret_file(file, what))
        if self.webhook_secret_previous is not None and self.webhook_secret_previous_file:
            raise ValueError(
                "set webhook_secret_previous or webhook_secret_previous_file, not both"
            )
        previous = self.webhook_secret_previous_file
        if previous is not None and previous.is_file() and previous.read_bytes().strip():
            # Optional: the key is absent from the mounted Secret when no rotation is under way.
            self.webhook_secret_previous = read_secret_file(previous, "previous webhook secret")
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError(
                f"lease_renew_s ({self.lease_renew_s}) must be at most half of lease_ttl_s "
                f"({self.lease_ttl_s}), so one failed renewal does not lose the lease"
            )
        return self

    def lease_settings(self) -> LeaseSettings:
        """The lease settings (``LEASE_PREFIX``, ``LEASE_TTL_S``, ``LEASE_RENEW_S``, replica id)."""
        return LeaseSettings(
            prefix=self.lease_prefix,
            ttl_s=self.lease_ttl_s,
            renew_s=self.lease_renew_s,
            holder=self.replica_id,
        )

    def judgement_policy(self) -> Any:
        """The service-wide :class:`~sslmem.memorization.judgement.JudgementPolicy`.

        Raises:
            ConfigError: An unknown policy field or an invalid value.

        """
        from sslmem.memorization.judgement import JudgementPolicy  # imports torch: only here

        try:
            return JudgementPolicy.model_validate(self.policy)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(
                f"{ENV_PREFIX}POLICY field {first['loc'][0] if first['loc'] else '?'}: "
                f"{first['msg']}",
                f"use the fields {', '.join(JudgementPolicy.model_fields)} with numbers",
            ) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the config file, then defaults."""
        sources = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None and path.suffix in (".yaml", ".yml"):
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        elif path is not None:
            sources.append(DotEnvSettingsSource(settings_cls, env_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | str | None = None, **overrides: Any) -> ServiceSettings:
        """Read the settings: keyword overrides, environment, config file, defaults.

        Args:
            config_file: YAML (``.yaml``/``.yml``, a mapping of field names) or ``.env`` file
                (``SSLMEM_SERVICE_*`` lines); default ``$SSLMEM_SERVICE_CONFIG_FILE`` if set.
            **overrides: Field values that win over everything (e.g. ``--port`` of the CLI).

        Returns:
            The validated settings; ``*_file`` secrets are already read.

        Raises:
            ConfigError: An ``SSLMEM_SERVICE_*`` variable or a key of the file names no
                setting, the file is missing or malformed, or a value is invalid (the message
                names each field; never a secret's value).

        """
        _check_environment(os.environ)
        raw = config_file if config_file is not None else os.environ.get(CONFIG_FILE_ENV)
        path = Path(raw) if raw else None
        if path is not None:
            _check_config_file(path)
        token = _config_file.set(path)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            from sslmem.config import format_validation_error  # imports torch: only here

            source = f"{ENV_PREFIX}* environment" + (f" and {path}" if path else "")
            raise ConfigError(
                format_validation_error(exc, source),
                f"correct the fields listed above ({ENV_PREFIX}<FIELD> in upper case)",
            ) from None  # the cause would repeat input values, which may be secrets
        finally:
            _config_file.reset(token)


def valid_env_names() -> list[str]:
    """Every ``SSLMEM_SERVICE_*`` variable the service reads (fields and the config file)."""
    return [
        CONFIG_FILE_ENV,
        *(f"{ENV_PREFIX}{name.upper()}" for name in ServiceSettings.model_fields),
    ]


def _check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``SSLMEM_SERVICE_*`` variables that name no setting (a typo must not pass)."""
    valid = set(valid_env_names())
    unknown = sorted(
        key for key in environ if key.upper().startswith(ENV_PREFIX) and key.upper() not in valid
    )
    if unknown:
        raise ConfigError(
            f"unknown environment variable(s) {', '.join(unknown)}: no such service setting",
            f"correct or unset them; the service reads {', '.join(sorted(valid))}",
        )


def _check_config_file(path: Path) -> None:
    """Refuse a missing file, and unknown keys in a YAML file (a typo must not pass silently)."""
    if not path.is_file():
        raise ConfigError(
            f"service config file {path} does not exist",
            f"pass an existing YAML or .env file, or unset {CONFIG_FILE_ENV}",
        )
    if path.suffix not in (".yaml", ".yml"):
        return
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"service config file {path} is not valid YAML ({type(exc).__name__})"
        ) from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"service config file {path} must hold a mapping of settings")
    unknown = sorted(str(key) for key in loaded if key not in ServiceSettings.model_fields)
    if unknown:
        raise ConfigError(
            f"unknown settings in {path}: {', '.join(unknown)}",
            f"use the field names: {', '.join(ServiceSettings.model_fields)}",
        )
