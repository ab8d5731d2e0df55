"""Lease settings, free of the service: what a lease manager needs and nothing more.

The service builds them from its ``SSLMEM_SERVICE_LEASE_*`` variables
(``ServiceSettings.lease_settings()``); the workflow and the pipeline take them as they are, so
neither needs the service's settings.
"""

from __future__ import annotations

import os
import socket

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["LeaseSettings", "default_holder"]


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
