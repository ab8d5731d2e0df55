"""Per-epoch metric callbacks: the hook tracking layers (MLflow, files) plug into."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from sslmem.atomic import atomic_write_bytes


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


@runtime_checkable
class TrainBeginCallback(Protocol):
    """Optionally also told, before the first epoch runs, the history of the run so far."""

    def on_train_begin(self, history: Sequence[Mapping[str, float]]) -> None:
        """``history[e]``: metrics of completed epoch ``e`` (empty for a new run)."""
        ...


def _line(epoch: int, metrics: Mapping[str, float]) -> str:
    return json.dumps({"epoch": epoch, **metrics}, sort_keys=True) + "\n"


class JsonlMetricsLogger:
    """Append one JSON line per epoch, ``{"epoch": e, **metrics}``, to a file.

    The file holds exactly the epochs of the current run, each once: when training begins it
    is rewritten with the resumed history (a new run starts it empty, discarding lines of an
    earlier run that was interrupted before its first resume file; a resumed run drops lines
    of epochs after its resume file, which are trained again).

    Args:
        path: The ``.jsonl`` file (parent directories are created).

    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_begin(self, history: Sequence[Mapping[str, float]]) -> None:
        """Replace the file with the lines of the completed epochs (atomically).

        A new run only removes a stale file: nothing is created before the first epoch ends,
        so a run that fails early leaves no output behind.
        """
        if not history:
            self.path.unlink(missing_ok=True)
            return
        text = "".join(_line(epoch, metrics) for epoch, metrics in enumerate(history))
        atomic_write_bytes(self.path, text.encode())

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Append the epoch's line and flush it to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(_line(epoch, metrics))
            handle.flush()
            os.fsync(handle.fileno())
