"""Resume checkpoints: everything needed to continue a run exactly where it stopped.

A resume file holds the method's full state (encoder, heads, teachers, decoders), the optimizer
and scheduler states, the number of completed epochs and optimizer steps, the RNG states, the
metrics history and a description of the run it belongs to. It is written with ``torch.save`` to
a temporary file and moved into place (``os.replace``), so the previous file survives a crash
mid-write, and read with ``torch.load(weights_only=True)``: only tensors and plain containers are
accepted, never arbitrary pickled objects. Any problem reading it is a :class:`CheckpointError`;
a run never silently restarts from scratch.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sslmem.atomic import atomic_writer
from sslmem.errors import CheckpointError

RESUME_FORMAT = "sslmem.resume"
RESUME_VERSION = 1
_FIX_CORRUPT = (
    "the file is truncated or corrupt; restore it from a backup, or delete it (and the run "
    "directory's encoder) and train again without --resume"
)


@dataclass(frozen=True)
class ResumeState:
    """The contents of a resume file.

    Attributes:
        epoch: Completed epochs.
        global_step: Completed optimizer steps.
        model: ``state_dict`` of the SSL method module (encoder included).
        optimizer: ``optimizer.state_dict()``.
        scheduler: ``scheduler.state_dict()``.
        rng: ``{"cpu": ByteTensor, "cuda": [ByteTensor, ...]}`` global RNG states.
        history: Per-epoch metrics so far.
        run: Canonical JSON identifying the run (recipe, data, split, role, seed); a file from
            another run is refused.

    """

    epoch: int
    global_step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    history: list[dict[str, float]]
    run: str


def capture_rng_state() -> dict[str, Any]:
    """The global CPU (and CUDA) RNG states."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`capture_rng_state` (CUDA only where it matches)."""
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_resume_state(path: Path, state: ResumeState) -> None:
    """Write ``state`` to ``path`` atomically.

    Raises:
        CheckpointError: The file cannot be written.

    """
    payload = {
        "format": RESUME_FORMAT,
        "format_version": RESUME_VERSION,
        "epoch": state.epoch,
        "global_step": state.global_step,
        "model": state.model,
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "rng": state.rng,
        "history": state.history,
        "run": state.run,
    }
    try:
        with atomic_writer(path) as handle:
            torch.save(payload, handle)
    except OSError as exc:
        raise CheckpointError(f"cannot write resume checkpoint {path}: {exc}") from exc


def _refused_global(exc: pickle.UnpicklingError) -> str | None:
    """The object torch's weights-only unpickler refused to import, if that was the error.

    Only the refused name is kept: torch's message goes on to advise loading with
    ``weights_only=False`` or allow-listing the class, which would run the file's code.
    """
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    return found.group(1) if found else None


def _require(payload: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    value = payload.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise CheckpointError(
            f"resume checkpoint {path}: field {key!r} is missing or invalid", _FIX_CORRUPT
        )
    return value


def load_resume_state(path: Path) -> ResumeState:
    """Read and validate a resume file (tensors and plain containers only).

    Raises:
        CheckpointError: Missing, unreadable, corrupt or foreign file.

    """
    if path.is_dir():
        raise CheckpointError(
            f"resume checkpoint {path} is a directory, not a resume file",
            f"remove or rename {path}; the resume file of a run is --out/{path.name}",
        )
    if not path.is_file():
        raise CheckpointError(
            f"resume checkpoint {path} does not exist",
            "drop --resume to start a new run, or point --out at the run to continue",
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(exc)
        if refused is None:
            raise CheckpointError(
                f"resume checkpoint {path} cannot be read: it is corrupt or not a resume file "
                "(not a tensor file torch can load safely)",
                _FIX_CORRUPT,
            ) from exc
        raise CheckpointError(
            f"resume checkpoint {path} is a pickle of objects other than tensors and plain "
            f"containers (it imports {refused}); it is refused because loading it could run "
            "arbitrary code",
            "resume files are written by `sslmem train` and hold only tensors; if this one was "
            "not, delete it and train again without --resume",
        ) from exc
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"resume checkpoint {path} cannot be read ({type(exc).__name__}): it is truncated, "
            "corrupt or not a resume file",
            _FIX_CORRUPT,
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{path} is not an sslmem resume checkpoint", _FIX_CORRUPT)
    version = payload.get("format_version")
    if version != RESUME_VERSION:
        raise CheckpointError(
            f"resume checkpoint {path} has format version {version!r}; this sslmem reads "
            f"version {RESUME_VERSION}",
            "resume with the sslmem version that wrote it",
        )
    model = _require(payload, "model", dict, path)
    if not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise CheckpointError(f"resume checkpoint {path}: model state is invalid", _FIX_CORRUPT)
    rng = _require(payload, "rng", dict, path)
    if not isinstance(rng.get("cpu"), torch.Tensor):
        raise CheckpointError(f"resume checkpoint {path}: RNG state is invalid", _FIX_CORRUPT)
    return ResumeState(
        epoch=_require(payload, "epoch", int, path),
        global_step=_require(payload, "global_step", int, path),
        model=model,
        optimizer=_require(payload, "optimizer", dict, path),
        scheduler=_require(payload, "scheduler", dict, path),
        rng=rng,
        history=_require(payload, "history", list, path),
        run=_require(payload, "run", str, path),
    )


def describe_run_mismatch(saved: str, current: str) -> str:
    """Name the top-level fields where two run descriptions (JSON objects) differ."""
    try:
        old, new = json.loads(saved), json.loads(current)
    except json.JSONDecodeError:
        return "the run description is unreadable"
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "the run description is unreadable"
    fields = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return "differs in " + ", ".join(fields) if fields else "is identical"
