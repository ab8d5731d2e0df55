"""The train step's process count: ``SSLMEM_TRAIN_NPROC_PER_NODE``.

The pipeline sets it on the train task from the platform config's accelerator limit
(:mod:`sslmem.pipelines.platform`); the pipeline's own ``SSLMEM_TRAIN_*`` settings (node count,
profile, image, Secrets, data cache) extend this class in :mod:`sslmem.pipelines.settings`,
which also refuses a misspelt ``SSLMEM_TRAIN_*`` variable.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sslmem.env_settings import EnvSettings

__all__ = ["MAX_NPROC", "TrainProcessSettings"]

#: The most training processes one node runs.
MAX_NPROC = 64


class TrainProcessSettings(EnvSettings):
    """How many training processes a step runs on its node (``SSLMEM_TRAIN_NPROC_PER_NODE``)."""

    model_config = SettingsConfigDict(env_prefix="SSLMEM_TRAIN_")

    what: ClassVar[str] = "the train step (SSLMEM_TRAIN_*)"
    fix: ClassVar[str] = (
        "correct or unset the variables listed above: SSLMEM_TRAIN_NPROC_PER_NODE is the number "
        "of accelerators of the train step, e.g. 4 (docs/configuration.md lists them)"
    )
    # The pipeline's TrainStepSettings shares the prefix and knows every SSLMEM_TRAIN_* name.
    refuse_unknown: ClassVar[bool] = False

    nproc_per_node: int = Field(
        1, ge=1, le=MAX_NPROC, description="Training processes on this node (torchrun)."
    )
