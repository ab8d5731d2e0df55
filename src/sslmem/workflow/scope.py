"""Which registered models the scoring service touches: those that opt in.

A registry is shared with other teams. The service (reconcile, webhooks, ``POST /v1/score``,
metrics) and :func:`~sslmem.workflow.score_version.score_registered_version` act only on a
model that

* carries the registered-model tag ``sslmem.managed=true`` (:data:`~sslmem.tracking.tags.MANAGED`),
  which ``sslmem register`` and the pipeline's register step set before the first version is
  created (:func:`opt_in_model`), or
* is listed in the service's configuration (``SSLMEM_SERVICE_MODELS``, a JSON list of names):
  the upgrade path for models registered before the tag existed, without touching the registry.

Every other model is ignored: no tags, no metric series, no failure counted, no log line above
debug level. ``sslmem models opt-in NAME`` tags an existing model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sslmem.errors import TrackingError, TrackingNotFoundError
from sslmem.tracking import tags as T

__all__ = ["ModelOutOfScopeError", "ModelScope", "opt_in_model", "read_model_tags"]

#: How to bring a model into scope (named in refusals).
OPT_IN_FIX = (
    f"tag the registered model {T.MANAGED}={T.MANAGED_VALUE} (`sslmem models opt-in NAME`; "
    "`sslmem register` and the pipeline do it) or list it in SSLMEM_SERVICE_MODELS"
)


class ModelOutOfScopeError(TrackingNotFoundError):
    """The model is not managed by sslmem (or does not exist): to the service, not found."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"model {name!r} is not managed by sslmem (it is not tagged "
            f"{T.MANAGED}={T.MANAGED_VALUE} and SSLMEM_SERVICE_MODELS does not list it)",
            OPT_IN_FIX,
        )


logger = logging.getLogger(__name__)


def read_model_tags(name: str) -> dict[str, str] | None:
    """A registered model's own tags; ``None`` when no such model exists.

    Raises:
        TrackingError: MLflow is unreachable (nothing decided).

    """
    from sslmem.tracking.connection import client, is_not_found, tracking_errors

    try:
        with tracking_errors(f"read registered model {name!r}"):
            model = client().get_registered_model(name)
    except TrackingError as exc:
        if is_not_found(exc):
            return None
        raise
    return {str(k): str(v) for k, v in (model.tags or {}).items()}


@dataclass(frozen=True)
class ModelScope:
    """The models the service acts on: opted in by tag, or configured by name.

    Attributes:
        models: Names configured to be in scope whatever their tags (``SSLMEM_SERVICE_MODELS``).

    """

    models: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, models: Iterable[str] = ()) -> ModelScope:
        """The scope of the configured ``models`` plus every tagged model."""
        return cls(frozenset(str(m) for m in models))

    def includes(self, name: str, model_tags: Mapping[str, str] | None) -> bool:
        """Whether model ``name`` with these registered-model tags is in scope (no I/O)."""
        return name in self.models or (model_tags is not None and T.is_managed(model_tags))

    def allows(self, name: str) -> bool:
        """Whether model ``name`` is in scope, reading its tags from MLflow if needed.

        A model that does not exist is out of scope (unless configured by name).

        Raises:
            TrackingError: MLflow is unreachable (nothing decided).

        """
        if name in self.models:
            return True
        inside = self.includes(name, read_model_tags(name))
        if not inside:
            logger.debug("model %r is not managed by sslmem; ignored", name)
        return inside


def opt_in_model(name: str) -> bool:
    """Create registered model ``name`` if needed and tag it ``sslmem.managed=true``.

    Called before a version is registered, so that the webhook of the new version already sees
    a model in scope.

    Returns:
        Whether the tag was added (``False``: it was already set).

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    from sslmem.tracking.connection import client, tracking_errors

    tags = read_model_tags(name)
    if tags is None:
        try:
            with tracking_errors(f"create registered model {name!r}"):
                client().create_registered_model(name, tags={T.MANAGED: T.MANAGED_VALUE})
            return True
        except TrackingError:
            # Another process may have created it meanwhile: tag it below, if it exists now.
            tags = read_model_tags(name)
            if tags is None:
                raise
    if T.is_managed(tags):
        return False
    with tracking_errors(f"tag registered model {name!r}"):
        client().set_registered_model_tag(name, T.MANAGED, T.MANAGED_VALUE)
    return True
