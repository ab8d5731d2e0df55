"""What scoring and judging a registered version needs from its caller's settings.

A structural type, so the workflow never imports the service: the service's
``ServiceSettings`` satisfies it as it is, and any other caller (a test, the pipeline, a
script) can pass a small object of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sslmem.config import ExperimentConfig
    from sslmem.coordination.settings import LeaseSettings
    from sslmem.memorization.judgement import JudgementPolicy

__all__ = ["LEASE_ENV", "VersionScoringSettings", "lease_settings_from_env", "service_config"]

#: The environment variables of the lease settings shared by the service and the pipeline
#: (fields of :class:`~sslmem.coordination.settings.LeaseEnvSettings`, which reads them).
LEASE_ENV = {
    "prefix": "SSLMEM_SERVICE_LEASE_PREFIX",
    "ttl_s": "SSLMEM_SERVICE_LEASE_TTL_S",
    "renew_s": "SSLMEM_SERVICE_LEASE_RENEW_S",
}


class VersionScoringSettings(Protocol):
    """Settings of :func:`~sslmem.workflow.score_version.score_registered_version` and judging.

    The scoring service's ``ServiceSettings`` is one.
    """

    @property
    def experiment(self) -> str:
        """MLflow experiment of the score runs."""

    @property
    def recipe(self) -> Path | None:
        """Recipe scored with (``None``: the bundled default)."""

    @property
    def config_overrides(self) -> Sequence[str]:
        """Dotted overrides of the recipe."""

    @property
    def device(self) -> str | None:
        """Compute device (``None``: the runtime's)."""

    @property
    def model_cache_dir(self) -> Path | None:
        """Where downloaded weights are cached."""

    @property
    def champion_alias(self) -> str:
        """The alias naming the version a candidate is judged against."""

    @property
    def models(self) -> Sequence[str]:
        """Models in scope besides those tagged ``sslmem.managed=true`` (:mod:`.scope`)."""

    @property
    def allowed_uri_prefixes(self) -> Sequence[str]:
        """Readable locations besides the stores (:func:`.scoring_inputs.read_policy`)."""

    def judgement_policy(self) -> JudgementPolicy:
        """The default judgement policy (models' ``sslmem.policy.*`` tags override it)."""

    def lease_settings(self) -> LeaseSettings:
        """The claim's lease settings."""


def lease_settings_from_env() -> LeaseSettings:
    """Lease settings from ``SSLMEM_SERVICE_LEASE_*`` (what the service uses), else defaults.

    Raises:
        ConfigError: A bad value (the message names the variable) or a misspelt
            ``SSLMEM_SERVICE_LEASE_*`` variable.

    """
    from sslmem.coordination.settings import LeaseEnvSettings

    return LeaseEnvSettings.from_environ().lease_settings()


def service_config(settings: VersionScoringSettings) -> ExperimentConfig:
    """The experiment config the service scores with (recipe + overrides)."""
    from sslmem.config import load_experiment_config

    return load_experiment_config(settings.recipe, list(settings.config_overrides) or None)
