"""Per-epoch metric callbacks: the hook tracking layers (MLflow, files) plug into."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class EpochCallback(Protocol):
    """Receives metrics after every epoch (on rank 0 only).

    ``metrics`` holds at least ``loss`` (mean training loss of the epoch), ``lr`` (learning rate
    at the epoch's last step) and ``images_per_s`` (training throughput over all processes).
    ``epoch`` is 0-based. A callback that raises stops training after the epoch's resume
    checkpoint (if one was due) has been written.
    """

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Handle one epoch's metrics."""
        ...


class JsonlMetricsLogger:
    """Append one JSON line per epoch, ``{"epoch": e, **metrics}``, to a file.

    Args:
        path: The ``.jsonl`` file (parent directories are created).

    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Append the epoch's line and flush it to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps({"epoch": epoch, **metrics}, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
