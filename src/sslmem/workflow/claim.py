"""The exactly-once claim on a model version: a lease, renewed while held, fenced before writes.

Below every workflow step that writes a version's results (scoring, judging), so that they can
share one claim without importing each other (see docs/service.md, "Leases and fencing").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from sslmem.config import RuntimeSettings
from sslmem.workflow._common import process_settings

if TYPE_CHECKING:
    from sslmem.coordination.lease import Lease, LeaseManager, LeaseRenewer
    from sslmem.coordination.settings import LeaseSettings
    from sslmem.workflow.scoring_settings import VersionScoringSettings

__all__ = ["VersionClaim", "open_lease_manager", "version_claim"]


def _lease_settings(settings: LeaseSettings | VersionScoringSettings) -> LeaseSettings:
    from sslmem.coordination.settings import LeaseSettings

    return settings if isinstance(settings, LeaseSettings) else settings.lease_settings()


def open_lease_manager(
    settings: LeaseSettings | VersionScoringSettings, runtime: RuntimeSettings
) -> LeaseManager:
    """The lease manager on the object store of ``runtime`` (``SSLMEM_STORE_URI``)."""
    from sslmem.coordination.lease import open_lease_manager as open_manager

    return open_manager(_lease_settings(settings), runtime)


class VersionClaim:
    """A held claim on a model version (see :func:`version_claim`).

    Attributes:
        renewer: Renews the lease while the claim is held.
        lease: The lease as acquired (its ``generation`` names this claim for good).
        still_ours: Set when the claim ends: whether the lease was still ours when released.

    """

    def __init__(self, renewer: LeaseRenewer, lease: Lease) -> None:
        self.renewer = renewer
        self.lease = lease
        self.still_ours: bool | None = None

    @property
    def generation(self) -> int:
        """The lease generation (fencing token) of this claim."""
        return self.lease.generation

    def fence(self, *, publishing: bool = False) -> Lease:
        """Renew the lease now and return it: call right before each publishing step.

        Args:
            publishing: The step is part of a result set of several writes, which shutdown
                lets finish (:meth:`~sslmem.coordination.lease.LeaseRenewer.fence`); end it with
                :meth:`published`.

        Raises:
            LeaseLostError: The lease is no longer ours (or no longer provably so): drop the
                results, publish nothing more.

        """
        return self.renewer.fence(publishing=publishing)

    def published(self) -> None:
        """The result set begun by a publishing :meth:`fence` is complete."""
        self.renewer.end_publishing()


@contextlib.contextmanager
def version_claim(
    name: str,
    version: str | int,
    *,
    settings: LeaseSettings | VersionScoringSettings,
    lease_manager: LeaseManager | None = None,
    runtime: RuntimeSettings | None = None,
    on_claim: Callable[[LeaseRenewer | None], None] | None = None,
) -> Iterator[VersionClaim | None]:
    """Hold the exactly-once claim on a version for the block; ``None`` if another holds it.

    The same claim for every scorer of registered versions (the service, the pipeline's
    scoring step): the lease :func:`~sslmem.coordination.lease.version_lease_key` in the object
    store, renewed every ``renew_s`` and released when the block ends.

    Example:
        >>> with version_claim("enc", "3", settings=lease_settings) as claim:  # doctest: +SKIP
        ...     if claim is not None:
        ...         score_pair(..., fence=lambda step: claim.fence())

    Raises:
        StoreError: The object store is unreachable.

    """
    from sslmem.coordination.lease import LeaseRenewer, version_lease_key

    lease_settings = _lease_settings(settings)
    manager = lease_manager or open_lease_manager(lease_settings, process_settings(runtime))
    lease = manager.acquire(version_lease_key(name, version, lease_settings.prefix))
    if lease is None:
        yield None
        return
    claim = VersionClaim(LeaseRenewer(manager, lease, lease_settings.renew_s).start(), lease)
    if on_claim is not None:
        on_claim(claim.renewer)
    try:
        yield claim
    finally:
        claim.still_ours = claim.renewer.stop(release=True)
        if on_claim is not None:
            on_claim(None)
