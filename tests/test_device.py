"""Device selection: a step asking for CUDA that cannot use it fails at once, with the reason.

These run on the project's CPU-only machines: the real torch (a CUDA 13 build) finds no CUDA
here, which is exactly the "GPU requested, none usable" case. A GPU node is stood in for only by
a directory holding an `nvidia0` device node name (what the NVIDIA device plugin mounts), and the
compute-capability check is fed real capabilities against the installed torch's own arch list.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sslmem.device import (
    CUDA_DRIVER_MINIMUM,
    describe_device,
    nvidia_device_present,
    resolve_device,
    unsupported_capability,
)
from sslmem.errors import ConfigError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a usable GPU")


@pytest.fixture
def gpu_node_dev(tmp_path: Path) -> Path:
    """A /dev as in a pod that was given a GPU: nvidiactl and nvidia0 device nodes."""
    for name in ("nvidiactl", "nvidia-uvm", "nvidia0"):
        (tmp_path / name).touch()
    return tmp_path


@pytest.fixture
def cpu_node_dev(tmp_path: Path) -> Path:
    (tmp_path / "null").touch()
    return tmp_path


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_requested_without_cuda_fails_with_the_reason(name: str, cpu_node_dev: Path) -> None:
    with pytest.raises(ConfigError) as failed:
        resolve_device(name, dev=cpu_node_dev)
    message = str(failed.value)
    assert f"device {name!r} requested but CUDA is not available" in message
    assert "no NVIDIA device is visible" in message
    if torch.version.cuda is not None:  # the image's wheels: say which driver they need
        major = torch.version.cuda.split(".")[0]
        assert f"built for CUDA {torch.version.cuda}" in message
        assert f"NVIDIA driver >= {CUDA_DRIVER_MINIMUM[major]}" in message
    assert failed.value.fix is not None and "'cpu'" in failed.value.fix


@no_cuda
@pytest.mark.parametrize(
    ("built", "driver"),
    [("13.0", ">= 580"), ("12.8", ">= 525"), ("11.8", ">= 450"), ("14.0", None)],
)
def test_the_driver_named_follows_torchs_cuda_build(
    built: str, driver: str | None, cpu_node_dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The image (cu130) and its cu12 variant (cu128) need different drivers: the message reads
    # torch.version.cuda, never a fixed number; an unknown CUDA major names no driver.
    monkeypatch.setattr(torch.version, "cuda", built)
    with pytest.raises(ConfigError) as failed:
        resolve_device("cuda", dev=cpu_node_dev)
    message = str(failed.value)
    assert f"is built for CUDA {built}" in message
    named = re.findall(r"NVIDIA driver >= \d+", message)
    assert named == ([] if driver is None else [f"NVIDIA driver {driver}"]), message


@no_cuda
def test_a_cpu_only_torch_names_no_driver(
    cpu_node_dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ConfigError, match=r"is a CPU-only build") as failed:
        resolve_device("cuda", dev=cpu_node_dev)
    assert not re.search(r"NVIDIA driver >= \d", str(failed.value))


@no_cuda
def test_auto_uses_the_cpu_where_there_is_no_gpu(cpu_node_dev: Path) -> None:
    assert resolve_device("auto", dev=cpu_node_dev) == torch.device("cpu")
    assert resolve_device("cpu", dev=cpu_node_dev) == torch.device("cpu")


@no_cuda
def test_auto_refuses_a_silent_cpu_run_on_a_gpu_node_without_cuda(gpu_node_dev: Path) -> None:
    # A GPU pod whose driver is too old: the device node is there, torch cannot use it.
    assert nvidia_device_present(gpu_node_dev)
    with pytest.raises(ConfigError) as failed:
        resolve_device("auto", dev=gpu_node_dev)
    assert "an NVIDIA GPU is present but CUDA is unusable" in str(failed.value)
    assert "refusing to fall back to the CPU silently" in str(failed.value)
    with pytest.raises(ConfigError, match="an NVIDIA device is present"):
        resolve_device("cuda", dev=gpu_node_dev)


def test_device_nodes_are_told_from_other_nvidia_files(tmp_path: Path) -> None:
    (tmp_path / "nvidiactl").touch()
    (tmp_path / "nvidia-uvm").touch()
    assert not nvidia_device_present(tmp_path)  # driver nodes without a GPU
    (tmp_path / "nvidia1").touch()
    assert nvidia_device_present(tmp_path)


def test_unknown_device_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")


@pytest.mark.parametrize(
    ("capability", "runs"),
    [
        ((6, 1), False),  # Pascal (P100/GTX 10xx): dropped by the CUDA 13 wheels
        ((7, 0), False),  # Volta (V100)
        ((7, 5), True),  # Turing (T4)
        ((8, 0), True),  # A100
        ((8, 9), True),  # Ada (L4): sm_86 kernels run on 8.9
        ((9, 0), True),  # H100
    ],
)
def test_compute_capability_against_the_installed_torch(
    capability: tuple[int, int], runs: bool
) -> None:
    arch_list = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    # What docs/image.md states for the image (CUDA 13.0) and its cu12 variant (CUDA 12.8, which
    # still carries Volta's sm_70). The compiled list, readable without a GPU.
    built = (torch._C._cuda_getArchFlags() or "").split()
    if torch.version.cuda == "13.0":
        assert built == arch_list
    elif torch.version.cuda == "12.8":
        assert built == ["sm_70", *arch_list]
    problem = unsupported_capability(capability, arch_list)
    assert (problem is None) is runs
    if not runs:
        assert problem is not None
        assert f"sm_{capability[0]}{capability[1]}" in problem and "sm_75 or newer" in problem


def test_ptx_is_jit_compiled_for_newer_devices() -> None:
    assert unsupported_capability((13, 0), ["sm_90"]) is not None
    assert unsupported_capability((13, 0), ["sm_90", "compute_90"]) is None


def test_describe_device_names_what_ran() -> None:
    info = describe_device(torch.device("cpu"))
    assert info["device"] == "cpu"
    assert info["torch"] == torch.__version__
    assert info["torch_cuda"] == (torch.version.cuda or "none")
    assert info["device_name"]
