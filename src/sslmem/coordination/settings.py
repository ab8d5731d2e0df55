"""Lease settings, free of the service: what a lease manager needs and nothing more.

The service builds them from its ``SSLMEM_SERVICE_LEASE_*`` variables
(``ServiceSettings.lease_settings()``); the workflow and the pipeline take them as they are, so
neither needs the service's settings. Outside the service (the pipeline's score and judge steps)
the same variables are read by :class:`LeaseEnvSettings`.
"""

from __future__ import annotations

import os
import socket
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from sslmem.env_settings import EnvSettings

__all__ = ["LeaseEnvSettings", "LeaseSettings", "default_holder"]


def default_holder() -> str:
    """Host name and process id: on Kubernetes the pod name, unique per replica."""
    return f"{socket.gethostname()}-{os.getpid()}"


class LeaseSettings(BaseModel):
    """How leases are named, kept and identified.

    Attributes:
        prefix: Object-store key prefix of the lease objects (and of delivery markers).
        ttl_s: A lease whose object stays unchanged this long (by each reader's own monotonic
            clock) may be taken over; its holder counts it lost this long after its last
            successful renewal was sent.
        renew_s: Renew held leases this often; at most half the TTL, so one failed renewal
            does not lose the lease.
        holder: Who we are in the lease objects (a replica id or a pipeline run).

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = Field("leases", min_length=1)
    ttl_s: float = Field(120.0, gt=0)
    renew_s: float = Field(30.0, gt=0)
    holder: str = Field(default_factory=default_holder, min_length=1)

    @model_validator(mode="after")
    def _renew_within_ttl(self) -> LeaseSettings:
        if self.renew_s * 2 > self.ttl_s:
            raise ValueError(
                f"renew_s ({self.renew_s}) must be at most half of ttl_s ({self.ttl_s}), "
                "so one failed renewal does not lose the lease"
            )
        return self


class LeaseEnvSettings(EnvSettings):
    """The lease variables the service reads, for callers without the service's settings.

    ``SSLMEM_SERVICE_LEASE_PREFIX``, ``SSLMEM_SERVICE_LEASE_TTL_S`` and
    ``SSLMEM_SERVICE_LEASE_RENEW_S``, with the service's defaults: a pipeline step that scores
    or judges a registered version claims it with the same leases as the service. Read them
    with :meth:`~sslmem.env_settings.EnvSettings.from_environ` (refuses a misspelt
    ``SSLMEM_SERVICE_LEASE_*`` variable).
    """

    model_config = SettingsConfigDict(env_prefix="SSLMEM_SERVICE_LEASE_")

    what: ClassVar[str] = "the lease settings (SSLMEM_SERVICE_LEASE_*)"

    prefix: str = Field("leases", min_length=1, description="Key prefix of the lease objects.")
    ttl_s: float = Field(120.0, gt=0, description="A lease unchanged this long may be taken over.")
    renew_s: float = Field(30.0, gt=0, description="Renew held leases this often.")

    @model_validator(mode="after")
    def _renew_within_ttl(self) -> LeaseEnvSettings:
        if self.renew_s * 2 > self.ttl_s:
            raise ValueError(
                f"SSLMEM_SERVICE_LEASE_RENEW_S ({self.renew_s}) must be at most half of "
                f"SSLMEM_SERVICE_LEASE_TTL_S ({self.ttl_s}), so one failed renewal does not "
                "lose the lease"
            )
        return self

    def lease_settings(self, holder: str | None = None) -> LeaseSettings:
        """These settings with ``holder`` (default: :func:`default_holder`)."""
        values: dict[str, object] = {
            "prefix": self.prefix,
            "ttl_s": self.ttl_s,
            "renew_s": self.renew_s,
        }
        if holder is not None:
            values["holder"] = holder
        return LeaseSettings.model_validate(values)
