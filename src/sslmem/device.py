"""Device selection and the precision/layout choices that go with it.

A step that asks for CUDA and cannot use it fails at once with the reason (never a silent run
on the CPU): no NVIDIA driver or device, a driver too old for the CUDA runtime of torch's wheels
(derived from ``torch.version.cuda``: the image's torch 2.14.1+cu130 needs driver >= 580, the
cu12 variant's 2.10.0+cu128 >= 525), a device index that does not exist, or a GPU whose compute
capability torch's wheels carry no kernels for (CUDA 13 wheels: sm_75, Turing, and newer).
``auto`` picks CUDA when usable and the CPU when the machine has no NVIDIA device, but fails like
``cuda`` when a device is present and unusable (a GPU pod on a bad node).
"""

from __future__ import annotations

import contextlib
import platform
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from sslmem.errors import ConfigError

DEV = Path("/dev")
"""Where the NVIDIA device nodes appear (the device plugin mounts them into GPU pods)."""

CUDA_DRIVER_MINIMUM = {"13": 580, "12": 525, "11": 450}
"""Oldest Linux NVIDIA driver branch per CUDA major version (CUDA minor-version compatibility;
NVIDIA's CUDA Toolkit release notes, table 3)."""


def nvidia_device_present(dev: Path = DEV) -> bool:
    """Whether the machine exposes an NVIDIA GPU device node (``/dev/nvidia0``, ...)."""
    return any(p.name[len("nvidia") :].isdigit() for p in dev.glob("nvidia[0-9]*"))


def _cuda_unavailable_reason() -> str:
    """Why torch cannot use CUDA: what its wheels need, and its own initialisation warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.is_available()
    said = " ".join(str(w.message).split(". ")[0] for w in caught if "CUDA" in str(w.message))
    built = torch.version.cuda
    if built is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    driver = CUDA_DRIVER_MINIMUM.get(built.split(".", 1)[0])
    need = f"; it needs an NVIDIA driver >= {driver}" if driver is not None else ""
    return (f"torch {torch.__version__} is built for CUDA {built}{need}") + (
        f"; torch says: {said}" if said else ""
    )


def unsupported_capability(capability: tuple[int, int], arch_list: list[str]) -> str | None:
    """Why a GPU of CAPABILITY cannot run torch's kernels, or None when it can.

    A device runs kernels built for its own major version at a lower or equal minor (sm_86 runs
    sm_80 code); PTX (``compute_XY``) is JIT-compiled for newer devices.

    Args:
        capability: (major, minor), as ``torch.cuda.get_device_capability`` gives it.
        arch_list: ``torch.cuda.get_arch_list()``, e.g. ["sm_75", ..., "sm_120"].
    """
    major, minor = capability

    def parse(arch: str, prefix: str) -> tuple[int, int] | None:
        digits = arch.removeprefix(prefix)  # "sm_120" -> 12.0, "sm_75" -> 7.5
        if arch == digits or not digits.isdigit() or len(digits) < 2:
            return None
        return int(digits[:-1]), int(digits[-1])

    sm = [v for v in (parse(a, "sm_") for a in arch_list) if v is not None]
    ptx = [v for v in (parse(a, "compute_") for a in arch_list) if v is not None]
    if any(m == major and n <= minor for m, n in sm) or any((m, n) <= capability for m, n in ptx):
        return None
    oldest = min(sm) if sm else None
    supported = f"sm_{oldest[0]}{oldest[1]} or newer" if oldest else ", ".join(arch_list)
    return (
        f"compute capability {major}.{minor} (sm_{major}{minor}) has no kernels in this torch "
        f"({torch.__version__}, built for {', '.join(arch_list)}): it needs {supported}"
    )


def _check_cuda_device(device: torch.device, asked: str) -> torch.device:
    count = torch.cuda.device_count()
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= count:
        raise ConfigError(
            f"device {asked!r} requested but only {count} CUDA device(s) are visible",
            f"use 'cuda' or 'cuda:0'..'cuda:{count - 1}'",
        )
    problem = unsupported_capability(
        torch.cuda.get_device_capability(index), torch.cuda.get_arch_list()
    )
    if problem is not None:
        raise ConfigError(
            f"device {asked!r} ({torch.cuda.get_device_name(index)}): {problem}",
            "schedule the step on a Turing (T4, RTX 20xx) or newer GPU, or use 'cpu'"
            " (docs/image.md#gpu-requirements)",
        )
    return device


def resolve_device(name: str = "auto", *, dev: Path = DEV) -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a device torch can run on.

    Args:
        name: The requested device. ``auto``: CUDA when usable, else the CPU when the machine
            has no NVIDIA device at all.
        dev: Where to look for NVIDIA device nodes (tests point it elsewhere).

    Raises:
        ConfigError: an unknown name; CUDA requested (or, with ``auto``, an NVIDIA device
            present) but unusable, with the reason (driver, index, compute capability).
    """
    if name == "auto":
        if torch.cuda.is_available():
            return _check_cuda_device(torch.device("cuda"), "auto")
        if nvidia_device_present(dev):
            raise ConfigError(
                "device 'auto': an NVIDIA GPU is present but CUDA is unusable ("
                + _cuda_unavailable_reason()
                + "); refusing to fall back to the CPU silently",
                "update the node's NVIDIA driver (docs/image.md#gpu-requirements), or set the"
                " device to 'cpu' explicitly",
            )
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"unknown device {name!r}", "use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            present = nvidia_device_present(dev)
            where = "an NVIDIA device is present" if present else "no NVIDIA device is visible"
            raise ConfigError(
                f"device {name!r} requested but CUDA is not available ({where}; "
                + _cuda_unavailable_reason()
                + ")",
                "run the step on a GPU node (nvidia.com/gpu limit, NVIDIA driver >= the one"
                " above; docs/image.md#gpu-requirements) or use 'cpu'",
            )
        return _check_cuda_device(device, name)
    return device


def describe_device(device: torch.device) -> dict[str, str]:
    """What a run actually computed on, for its record (MLflow params or tags).

    The device, its name (and compute capability on CUDA), torch's version and CUDA runtime.
    """
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda or "none",
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        info["device_name"] = torch.cuda.get_device_name(index)
        info["compute_capability"] = f"{major}.{minor}"
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


@contextlib.contextmanager
def autocast_for(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA (fast and range-safe); plain float32 elsewhere."""
    if device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def to_device_layout(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Use channels_last for 4-D batches on CUDA, where convolutions run faster in it."""
    if device.type == "cuda" and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
