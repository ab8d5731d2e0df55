"""The base of the settings classes read from ``SSLMEM_<PART>_*`` environment variables.

Every environment variable sslmem reads is a field of a settings class (docs/configuration.md
lists them): :class:`~sslmem.config.RuntimeSettings` (``SSLMEM_*``), the service's
``ServiceSettings`` (``SSLMEM_SERVICE_*``) and the subclasses of :class:`EnvSettings`: the lease
settings the pipeline shares with the service (``SSLMEM_SERVICE_LEASE_*``), the train step's
(``SSLMEM_TRAIN_*``) and its TrainJob's (``SSLMEM_TRAINJOB_*``). ``tests/test_env_reads.py``
fails on an ``SSLMEM_*`` variable read anywhere else.

An :class:`EnvSettings` subclass

* reads the variables ``<env_prefix><FIELD>`` (any case); a blank value is unset;
* turns a bad value into a :class:`~sslmem.errors.ConfigError` naming the variable, the value
  and the fix (never a traceback);
* read by :meth:`EnvSettings.from_environ`, refuses a variable under its prefix that names no
  field (a misspelt ``SSLMEM_TRAIN_NODE`` must not be ignored silently), as the service does for
  ``SSLMEM_SERVICE_*``; and reads a given mapping instead of the process environment, so a
  caller can pass the environment a step will see.

Light on purpose (pydantic only): the pipeline's steps and the coordination layer import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sslmem.errors import ConfigError

__all__ = ["EnvSettings", "settings_error_lines"]

_Settings = TypeVar("_Settings", bound="EnvSettings")

#: True while :meth:`EnvSettings.from_environ` validates a given mapping: the process
#: environment is then not read at all.
_mapping_only: ContextVar[bool] = ContextVar("sslmem_env_settings_mapping_only", default=False)


def settings_error_lines(
    error: ValidationError, settings_cls: type[BaseSettings], explicit: Mapping[str, Any]
) -> list[str]:
    """One line per bad setting, named as the environment variable that set it.

    A field given as a keyword (in ``explicit``) is named as the field; a secret's value is
    never shown.
    """
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        info = settings_cls.model_fields.get(field)
        if not field:
            name = f"{prefix}*"
        elif field in explicit:
            name = field
        else:
            name = f"{prefix}{field.upper()}"
        secret = info is not None and "SecretStr" in str(info.annotation)
        got = "" if secret or not field else f" (got {item.get('input')!r})"
        lines.append(f"  {name}: {item['msg']}{got}")
    return lines


class EnvSettings(BaseSettings):
    """Settings from ``<env_prefix><FIELD>`` variables; subclasses set ``env_prefix``.

    Class variables of a subclass:

    * ``what``: what the settings configure, for messages (e.g. ``"the train step"``);
    * ``fix``: what to do about a bad value;
    * ``refuse_unknown``: whether :meth:`from_environ` refuses variables under the prefix that
      name no field (off only where another class shares the prefix).
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    what: ClassVar[str] = "sslmem"
    fix: ClassVar[str] = (
        "correct or unset the environment variables listed above (docs/configuration.md lists them)"
    )
    refuse_unknown: ClassVar[bool] = True

    def __init__(self, **values: Any) -> None:
        """Read the environment (``values`` win over it).

        Raises:
            ConfigError: A variable holds an invalid value; the message names the variable.

        """
        try:
            super().__init__(**values)
        except ValidationError as exc:
            explicit = {} if _mapping_only.get() else values
            lines = settings_error_lines(exc, type(self), explicit)
            raise ConfigError(
                "\n".join([f"invalid settings of {self.what}:", *lines]), self.fix
            ) from None  # the cause would repeat the values

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        # SSLMEM_TRAINJOB_NAMESPACE="" or "  " means "not set", as it did before these classes.
        if isinstance(data, dict):
            return {
                key: value
                for key, value in data.items()
                if not (isinstance(value, str) and not value.strip())
            }
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment (not read for a given mapping)."""
        if _mapping_only.get():
            return (init_settings,)
        return (init_settings, env_settings)

    @classmethod
    def env_prefix(cls) -> str:
        """The prefix of the variables, e.g. ``SSLMEM_TRAIN_``."""
        return str(cls.model_config.get("env_prefix", "")).upper()

    @classmethod
    def env_names(cls) -> list[str]:
        """Every variable these settings read, one per field."""
        return [f"{cls.env_prefix()}{name.upper()}" for name in cls.model_fields]

    @classmethod
    def check_unknown(cls, environ: Mapping[str, str]) -> None:
        """Refuse variables under the prefix that name no field (a typo must not pass).

        Raises:
            ConfigError: Naming the unknown variables and the valid ones.

        """
        prefix, valid = cls.env_prefix(), set(cls.env_names())
        unknown = sorted(
            k for k in environ if k.upper().startswith(prefix) and k.upper() not in valid
        )
        if unknown:
            raise ConfigError(
                f"unknown environment variable(s) {', '.join(unknown)}: no such setting of "
                f"{cls.what}",
                f"correct or unset them; the variables of {cls.what} are "
                f"{', '.join(sorted(valid))} (docs/configuration.md)",
            )

    @classmethod
    def from_environ(cls: type[_Settings], environ: Mapping[str, str] | None = None) -> _Settings:
        """The settings from ``environ`` (default: the process environment).

        Raises:
            ConfigError: A variable under the prefix names no field (unless the class allows
                it), or a value is invalid.

        """
        source = os.environ if environ is None else environ
        if cls.refuse_unknown:
            cls.check_unknown(source)
        if environ is None:
            return cls()
        names = {
            name.upper(): field
            for name, field in zip(cls.env_names(), cls.model_fields, strict=True)
        }
        values = {
            names[key.upper()]: value for key, value in environ.items() if key.upper() in names
        }
        token = _mapping_only.set(True)
        try:
            return cls(**values)
        finally:
            _mapping_only.reset(token)
