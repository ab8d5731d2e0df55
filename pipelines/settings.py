"""The pipeline's settings from the step's environment: ``SSLMEM_TRAIN_*``, ``SSLMEM_TRAINJOB_*``.

:func:`sslmem.pipelines.platform.apply_platform` sets ``SSLMEM_TRAIN_*`` on the compiled train
task (the process count always; the node count, train profile, image, Secret mappings and data
cache when the step runs on several nodes); ``SSLMEM_TRAINJOB_*`` are the operator's, set in the
platform config's ``env:``. :func:`sslmem.pipelines.trainjob.train_step` reads both classes with
:meth:`~sslmem.env_settings.EnvSettings.from_environ`: a bad value is a
:class:`~sslmem.errors.ConfigError` naming the variable, and a misspelt variable under either
prefix is refused (docs/configuration.md lists them all).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field, Json
from pydantic_settings import SettingsConfigDict

from sslmem.env_settings import EnvSettings
from sslmem.pipelines.platform import DataCache, SecretEnv, TaskProfile
from sslmem.training.settings import TrainProcessSettings

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "FORWARDED_ENV",
    "TrainJobSettings",
    "TrainStepSettings",
    "forwarded_environment",
]

#: How long a step waits for its TrainJob unless ``SSLMEM_TRAINJOB_TIMEOUT_S`` says otherwise.
DEFAULT_TIMEOUT_S = 7 * 24 * 3600.0

_COMPILE_AGAIN = (
    "the pipeline sets SSLMEM_TRAIN_NODES, _PROFILE, _IMAGE, _SECRETS and _DATA_CACHE itself: "
    "compile the pipeline again with the platform config (sslmem pipeline compile --platform "
    "...); correct or unset any other variable listed above (docs/configuration.md lists them)"
)


class TrainStepSettings(TrainProcessSettings):
    """The train step's ``SSLMEM_TRAIN_*`` variables (every one of them: misspelt ones fail)."""

    model_config = SettingsConfigDict(env_prefix="SSLMEM_TRAIN_")

    fix: ClassVar[str] = _COMPILE_AGAIN
    refuse_unknown: ClassVar[bool] = True

    nodes: int = Field(1, ge=1, description="Nodes of the train step (> 1: a TrainJob).")
    profile: Json[TaskProfile] | None = Field(
        None, description="The platform's train profile (JSON), for the TrainJob's nodes."
    )
    image: str | None = Field(None, description="The image every node of the TrainJob runs.")
    secrets: Json[list[SecretEnv]] | None = Field(
        None, description="The platform's Secret mappings (JSON), mounted on every node."
    )
    data_cache: Json[DataCache] | None = Field(
        None, description="The platform's dataset cache claim (JSON), mounted on every node."
    )


class TrainJobSettings(EnvSettings):
    """Where the TrainJob of a multi-node train step runs and how long the step waits for it."""

    model_config = SettingsConfigDict(env_prefix="SSLMEM_TRAINJOB_")

    what: ClassVar[str] = "the TrainJob (SSLMEM_TRAINJOB_*)"

    namespace: str | None = Field(
        None,
        description="The TrainJob's namespace (default: the step pod's own, from its service "
        "account).",
    )
    timeout_s: float = Field(
        DEFAULT_TIMEOUT_S, gt=0, description="Seconds the step waits for its TrainJob."
    )


#: Plain settings the training nodes need from the step's environment (never credentials:
#: those come from Secrets the runtime mounts, see docs/training.md).
FORWARDED_ENV = (
    "SSLMEM_STORE_URI",
    "SSLMEM_S3_ENDPOINT",
    "SSLMEM_S3_SECURE",
    "SSLMEM_S3_REGION",
    "SSLMEM_MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "SSLMEM_DEVICE",
)


def forwarded_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The step's :data:`FORWARDED_ENV` values, passed on unread to the TrainJob's nodes.

    Not read as settings here: each node reads them with its own ``RuntimeSettings``, so the
    nodes see exactly what the step was given (unset and blank ones are left out).
    """
    env = os.environ if environ is None else environ
    return {key: env[key] for key in FORWARDED_ENV if env.get(key)}
