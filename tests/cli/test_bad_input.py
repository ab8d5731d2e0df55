# ruff: noqa: E501 (one case per line reads as a table)
"""Bad input, typed as a new user would: every case must end in a clear error.

Each case runs the real CLI (``sslmem.cli.main`` in-process, in a scratch directory holding a
regular file ``afile``, a directory ``adir``, a non-UTF-8 ``latin1.yaml``, a split manifest
``split.json`` and more) and asserts: a non-zero exit, no traceback, a message naming the
problem (a specific pattern), and nothing written or left behind in the directory. A few cases
run as real subprocesses, where the exit status and stderr of the ``sslmem`` process matter.

Score-specific inputs (``--sets``, ``--layer``, ``--views``, its output directory) are tested
with the score command.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from sslmem.cli import main
from sslmem.config import SplitConfig
from sslmem.data import load_dataset, make_split
from sslmem.models import build_encoder, save_checkpoint
from tests.servers import silent_server

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HAS_PROC = Path("/proc/self").is_dir()


@dataclass(frozen=True)
class Case:
    """One bad command line.

    Attributes:
        id: Test id.
        argv: Arguments after ``sslmem`` (paths relative to the scratch directory).
        says: Regex the error output must match (names the problem).
        env: Environment variables set for the run.
        not_says: Regex the output must not match.

    """

    id: str
    argv: list[str]
    says: str
    env: dict[str, str] = field(default_factory=dict)
    not_says: str | None = None


TRAIN = ["train", "--split", "split.json", "--role", "candidate", "--device", "cpu"]

CASES = [
    # --- the environment: the message names the variable, not the settings field
    Case(
        "env-threads-not-int",
        ["split", "--out", "m.json"],
        r"SSLMEM_NUM_THREADS: Input should be a valid integer.*'abc'",
        env={"SSLMEM_NUM_THREADS": "abc"},
        not_says="num_threads",
    ),
    Case(
        "env-threads-zero",
        ["split", "--out", "m.json"],
        r"SSLMEM_NUM_THREADS: Input should be greater than or equal to 1",
        env={"SSLMEM_NUM_THREADS": "0"},
    ),
    Case(
        "env-keep-heap",
        ["split", "--out", "m.json"],
        r"SSLMEM_KEEP_HEAP: Input should be a valid boolean",
        env={"SSLMEM_KEEP_HEAP": "maybe"},
    ),
    Case(
        "env-log-level",
        ["split", "--out", "m.json"],
        r"SSLMEM_LOG_LEVEL: Input should be 'DEBUG'",
        env={"SSLMEM_LOG_LEVEL": "loud"},
    ),
    Case(
        "env-store-retries",
        ["split", "--out", "m.json"],
        r"SSLMEM_STORE_RETRIES: Input should be greater than or equal to 0",
        env={"SSLMEM_STORE_RETRIES": "-1"},
    ),
    Case(
        "env-s3-read-timeout",
        ["split", "--out", "m.json"],
        r"SSLMEM_S3_READ_TIMEOUT_S: Input should be greater than 0",
        env={"SSLMEM_S3_READ_TIMEOUT_S": "0"},
    ),
    Case(
        "env-device",
        [*TRAIN[:-2], "--epochs", "1", "--out", "run"],
        r"SSLMEM_DEVICE: unknown device 'gpu'.*\n.*fix: use 'auto', 'cpu'",
        env={"SSLMEM_DEVICE": "gpu"},
    ),
    # --- configuration: files and --set
    Case("set-bad-yaml", ["split", "--set", "scoring.views=[1,", "--out", "m.json"], r"not valid YAML"),
    Case("set-empty", ["split", "--set", "", "--out", "m.json"], r"override '' is not of the form"),
    Case("set-no-key", ["split", "--set", "=3", "--out", "m.json"], r"not of the form key=value"),
    Case("set-no-value", ["split", "--set", "split.seed", "--out", "m.json"], r"key=value"),
    Case(
        "set-unknown-field",
        ["split", "--set", "scoring.viewz=3", "--out", "m.json"],
        r"scoring\.viewz: Extra inputs are not permitted",
    ),
    Case(
        "set-section-scalar",
        ["split", "--set", "split=3", "--out", "m.json"],
        r"split: Input should be a valid dictionary",
    ),
    Case(
        "set-wrong-type",
        ["split", "--set", "split.seed=abc", "--out", "m.json"],
        r"split\.seed: Input should be a valid integer",
    ),
    Case(
        "config-not-utf8", ["split", "--config", "latin1.yaml", "--out", "m.json"], r"not UTF-8"
    ),
    Case("config-not-yaml", ["split", "--config", "broken.yaml", "--out", "m.json"], r"not valid YAML"),
    Case(
        "config-list", ["split", "--config", "list.yaml", "--out", "m.json"], r"must hold a mapping"
    ),
    Case("config-dir", ["split", "--config", "adir", "--out", "m.json"], r"adir is a directory"),
    Case(
        "config-empty-path",
        ["split", "--config", "", "--out", "m.json"],
        r"--config: expected a path, got an empty string",
    ),
    Case(
        "config-unknown-recipe",
        ["split", "--config", "fashion-mnits", "--out", "m.json"],
        r"not a shipped recipe.*\n.*bundled-cpu, fashion-mnist",
    ),
    # --- sslmem split
    Case("split-negative-seed", ["split", "--seed", "-1", "--out", "m.json"], r"split\.seed: Input should be greater than or equal to 0 \(got -1\)"),
    Case("split-seed-not-int", ["split", "--seed", "x", "--out", "m.json"], r"--seed: invalid int"),
    Case("split-pool-zero", ["split", "--pool-size", "0", "--out", "m.json"], r"split\.pool_size"),
    Case(
        "split-pool-too-big",
        ["split", "--pool-size", "100000000", "--out", "m.json"],
        r"pool_size=100000000 does not fit dataset 'bundled'",
    ),
    Case("split-unknown-data", ["split", "--data", "imagenet", "--out", "m.json"], r"data\.dataset"),
    Case(
        "split-folder-without-root",
        ["split", "--data", "folder", "--out", "m.json"],
        r"'folder' needs a directory",
    ),
    Case(
        "split-missing-data-root",
        ["split", "--data", "cifar10", "--data-root", "nowhere", "--out", "m.json"],
        r"dataset 'cifar10' not found",
    ),
    Case("split-out-empty", ["split", "--out", ""], r"--out: expected a path or URI"),
    Case("split-out-dir", ["split", "--out", "adir"], r"cannot write manifest adir: it is a directory"),
    Case(
        "split-out-under-file",
        ["split", "--out", "afile/m.json"],
        r"cannot write manifest afile/m\.json: afile is a file, not a directory",
    ),
    Case("split-out-scheme", ["split", "--out", "ftp://host/m.json"], r"unsupported store URI scheme 'ftp'"),
    Case("split-out-s3-unconfigured", ["split", "--out", "s3://bucket/m.json"], r"no S3 endpoint"),
    # --- sslmem train
    Case("train-split-missing", ["train", "--split", "nothere.json", "--role", "candidate", "--out", "run"], r"split manifest nothere\.json does not exist\n.*sslmem split --out nothere\.json"),
    Case("train-split-dir", ["train", "--split", "adir", "--role", "candidate", "--out", "run"], r"split manifest adir is a directory"),
    Case("train-split-empty", ["train", "--split", "", "--role", "candidate", "--out", "run"], r"--split: expected a path or URI"),
    Case("train-split-not-utf8", ["train", "--split", "latin1.yaml", "--role", "candidate", "--out", "run"], r"split manifest latin1\.yaml is not a split manifest: it is not UTF-8"),
    Case("train-split-not-json", ["train", "--split", "afile", "--role", "candidate", "--out", "run"], r"split manifest afile is not valid JSON.*\n.*sslmem split --out afile"),
    Case(
        "train-split-tampered",
        ["train", "--split", "tampered.json", "--role", "candidate", "--out", "run"],
        r"split manifest tampered\.json hash mismatch.*\n.*sslmem split --out tampered\.json",
        not_says=r"make_split",
    ),
    Case("train-role", ["train", "--split", "split.json", "--role", "teacher", "--out", "run"], r"--role: invalid choice: 'teacher'"),
    Case("train-method", [*TRAIN, "--method", "simclr2", "--out", "run"], r"unknown SSL method 'simclr2'.*\n.*byol"),
    Case("train-arch", [*TRAIN, "--arch", "resnet", "--out", "run"], r"unknown architecture 'resnet'.*\n.*resnet18"),
    Case("train-method-arch", [*TRAIN, "--method", "mae", "--arch", "small_cnn", "--out", "run"], r"'mae' does not support architecture 'small_cnn'"),
    Case("train-epochs-zero", [*TRAIN, "--epochs", "0", "--out", "run"], r"training\.epochs: Input should be greater than or equal to 1"),
    Case("train-epochs-float", [*TRAIN, "--epochs", "1.5", "--out", "run"], r"--epochs: invalid int value"),
    Case("train-batch-zero", [*TRAIN, "--batch-size", "0", "--out", "run"], r"training\.batch_size"),
    Case("train-batch-too-big", [*TRAIN, "--batch-size", "4096", "--epochs", "1", "--out", "run"], r"fewer than training\.batch_size 4096"),
    Case("train-lr-negative", [*TRAIN, "--lr", "-1", "--out", "run"], r"training\.lr: Input should be greater than 0"),
    Case("train-lr-inf", [*TRAIN, "--set", "training.lr=inf", "--out", "run"], r"training\.lr: Input should be a finite number"),
    Case("train-kwargs-no-space", [*TRAIN, "--set", "training.method_kwargs={momentum_start:0.9}", "--out", "run"], r"YAML reads 'momentum_start:0\.9' as a key without a value\n.*\{momentum_start: 0\.9\}"),
    Case("train-lr-text", [*TRAIN, "--lr", "fast", "--out", "run"], r"--lr: invalid float value"),
    Case("train-checkpoint-every-zero", [*TRAIN, "--checkpoint-every", "0", "--out", "run"], r"training\.checkpoint_every"),
    Case("train-device", [*TRAIN[:-2], "--device", "tpu", "--epochs", "1", "--out", "run"], r"--device: unknown device 'tpu'"),
    Case("evaluate-device", ["evaluate", "--encoder", "model.pt", "--device", "gpu0"], r"--device: unknown device 'gpu0'"),
    Case("train-out-empty", [*TRAIN, "--out", ""], r"--out: expected a path, got an empty string"),
    Case("train-out-file", [*TRAIN, "--out", "afile"], r"cannot write run directory afile: it is a regular file"),
    Case("train-out-under-file", [*TRAIN, "--out", "afile/run"], r"afile is a file, not a directory"),
    Case("train-resume-nothing", [*TRAIN, "--epochs", "1", "--batch-size", "8", "--resume", "--out", "adir"], r"resume checkpoint adir/resume\.pt does not exist"),
    Case("train-resume-dir", [*TRAIN, "--epochs", "1", "--batch-size", "8", "--resume", "--out", "oddrun"], r"resume checkpoint oddrun/resume\.pt is a directory"),
    *(
        []
        if torch.cuda.is_available()
        else [Case("train-no-cuda", [*TRAIN[:-2], "--device", "cuda", "--out", "run"], r"--device: device 'cuda' requested but CUDA is not available")]
    ),
    # --- sslmem evaluate
    Case("evaluate-missing", ["evaluate", "--encoder", "nothere.safetensors"], r"checkpoint nothere\.safetensors does not exist"),
    Case("evaluate-dir", ["evaluate", "--encoder", "adir"], r"checkpoint adir is a directory, not a checkpoint file"),
    Case(
        "evaluate-pickle",
        ["evaluate", "--encoder", "model.pt"],
        r"model\.pt is a PyTorch pickle.*refused because loading one can run arbitrary code\n.*fix: .*save_checkpoint",
        not_says=r"truncated or corrupt|weights_only=False",
    ),
    Case("evaluate-text", ["evaluate", "--encoder", "split.json"], r"split\.json is a text file", not_says="truncated"),
    Case("evaluate-empty", ["evaluate", "--encoder", ""], r"--encoder: expected a path"),
    Case("evaluate-data", ["evaluate", "--encoder", "model.pt", "--data", "mnist"], r"--data: unknown dataset 'mnist'"),
    # the output is checked before the (missing) encoder is even opened
    Case("evaluate-out-dir", ["evaluate", "--encoder", "nothere.safetensors", "--out", "adir"], r"cannot write result file adir: it is a directory"),
    Case("evaluate-out-under-file", ["evaluate", "--encoder", "nothere.safetensors", "--out", "afile/r.json"], r"afile is a file, not a directory"),
    # --- sslmem pipeline compile
    Case("compile-out-dir", ["pipeline", "compile", "-o", "adir"], r"cannot write compiled pipeline adir: it is a directory"),
    Case("compile-out-under-file", ["pipeline", "compile", "-o", "afile/p.yaml"], r"afile is a file, not a directory"),
    Case("compile-platform-missing", ["pipeline", "compile", "-o", "p.yaml", "--platform", "nothere.yaml"], r"platform file nothere\.yaml does not exist"),
    # --- sslmem run (and demo)
    Case("run-out-file", ["run", "--out", "afile"], r"cannot write output directory afile: it is a regular file"),
    Case("run-out-empty", ["run", "--out", ""], r"--out: expected a path"),
    Case("run-bad-param", ["run", "--set", "pipeline.alpha=2"], r"alpha"),
    # --- the command line itself
    Case("no-command", [], r"the following arguments are required: COMMAND"),
    Case("unknown-command", ["scroe"], r"invalid choice: 'scroe'"),
]  # fmt: skip

# Paths that exist in the scratch directory before every case.
_TAMPER_FROM, _TAMPER_TO = '"seed": 2', '"seed": 3'


@pytest.fixture(scope="module")
def manifest_bytes() -> bytes:
    split = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=40, seed=2))
    return split.to_json()


@pytest.fixture
def scratch(tmp_path: Path, manifest_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the things a new user might pass by mistake."""
    (tmp_path / "afile").write_text("just a file\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "oddrun" / "resume.pt").mkdir(parents=True)
    (tmp_path / "latin1.yaml").write_bytes("scoring:\n  layer: caf\xe9\n".encode("latin-1"))
    (tmp_path / "broken.yaml").write_text("scoring: [views: 3\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "split.json").write_bytes(manifest_bytes)
    tampered = manifest_bytes.decode().replace(_TAMPER_FROM, _TAMPER_TO, 1)
    assert tampered != manifest_bytes.decode()
    (tmp_path / "tampered.json").write_text(tampered)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "model.pt")
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("SSLMEM_"):
            monkeypatch.delenv(name)
    return tmp_path


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code) if isinstance(exc.code, int) else 1


def _assert_clear_error(case: Case, code: int, err: str, before: set[str], after: set[str]) -> None:
    assert code != 0, f"{case.id}: exit status 0\n{err}"
    assert "Traceback" not in err
    assert re.search(case.says, err), f"{case.id}: {case.says!r} not in:\n{err}"
    if case.not_says is not None:
        assert not re.search(case.not_says, err), f"{case.id}: {case.not_says!r} in:\n{err}"
    assert after == before, f"{case.id}: left behind {sorted(after - before)}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error_and_leaves_nothing(
    case: Case, scratch: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    before = _listing(scratch)
    code = _run(case.argv)
    _assert_clear_error(case, code, capsys.readouterr().err, before, _listing(scratch))


UNWRITABLE = [
    pytest.param(argv, id=name)
    for name, argv in [
        ("split", ["split", "--out", "{dir}/m.json"]),
        ("train", [*TRAIN, "--epochs", "1", "--out", "{dir}/run"]),
        ("evaluate", ["evaluate", "--encoder", "nothere.safetensors", "--out", "{dir}/r.json"]),
        ("compile", ["pipeline", "compile", "-o", "{dir}/p.yaml"]),
        ("run", ["run", "--out", "{dir}/out"]),
    ]
]


@pytest.mark.skipif(not HAS_PROC, reason="needs Linux /proc (a directory that takes no files)")
@pytest.mark.parametrize("argv", UNWRITABLE)
def test_an_unwritable_place_is_refused_before_the_work(
    argv: list[str], scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # /proc refuses new files even to root, for whom permission bits mean nothing.
    case = Case("unwritable", [a.replace("{dir}", "/proc") for a in argv], r"/proc is not writable")
    before = _listing(scratch)
    code = _run(case.argv)
    _assert_clear_error(case, code, capsys.readouterr().err, before, _listing(scratch))


@pytest.fixture
def read_only_dir(scratch: Path) -> Iterator[Path]:
    directory = scratch / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    yield directory
    directory.chmod(0o755)


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only directories (see the /proc test)")
@pytest.mark.parametrize("argv", UNWRITABLE)
def test_a_read_only_directory_is_refused_before_the_work(
    argv: list[str], scratch: Path, read_only_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = Case(
        "read-only",
        [a.replace("{dir}", "ro") for a in argv],
        r"ro is not writable \(permission denied\)",
    )
    before = _listing(scratch)
    code = _run(case.argv)
    _assert_clear_error(case, code, capsys.readouterr().err, before, _listing(scratch))


def test_running_out_of_memory_says_what_to_reduce(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 10^7-pixel views: any buffer of one view exceeds a 64-bit process's address space, so the
    # allocation fails at once, whatever the machine's memory or overcommit policy.
    argv = [
        *TRAIN, "--epochs", "1", "--batch-size", "8", "--no-progress",
        "--set", "model.arch_kwargs={widths: [4, 8]}",
        "--set", "augmentation.output_size=10000000",
        "--out", "run",
    ]  # fmt: skip
    case = Case(
        "oom", argv, r"error: out of CPU memory: an allocation of [\d.]+ GiB failed\n.*--batch-size"
    )
    before = _listing(scratch)
    code = _run(argv)
    _assert_clear_error(case, code, capsys.readouterr().err, before, _listing(scratch))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["split", "--out", "m.json"], {"SSLMEM_NUM_THREADS": "abc"}, "SSLMEM_NUM_THREADS"),
        (["split", "--set", "split.seed=[", "--out", "m.json"], {}, "not valid YAML"),
        (["split", "--config", "latin1.yaml", "--out", "m.json"], {}, "not UTF-8"),
    ],
    ids=["env", "yaml", "encoding"],
)
def test_the_sslmem_process_exits_non_zero_without_a_traceback(
    argv: list[str], env: dict[str, str], says: str, scratch: Path
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SSLMEM_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sslmem"), *argv],
        env={**clean, **env},
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and says in done.stderr
    assert not (scratch / "m.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU out-of-memory path)")
def test_running_out_of_gpu_memory_says_what_to_reduce(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        *TRAIN[:-2], "--device", "cuda", "--epochs", "1", "--batch-size", "8", "--no-progress",
        "--set", "model.arch_kwargs={widths: [4, 8]}",
        "--set", "augmentation.output_size=10000000",
        "--out", "run",
    ]  # fmt: skip
    case = Case("cuda-oom", argv, r"error: out of GPU memory: .*\n.*--batch-size")
    before = _listing(scratch)
    code = _run(argv)
    _assert_clear_error(case, code, capsys.readouterr().err, before, _listing(scratch))


@pytest.mark.parametrize(
    ("exc", "command", "problem", "fix"),
    [
        (MemoryError(), "evaluate", r"^out of CPU memory: MemoryError$", "feature_batch_size"),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 ..."),
            "score",
            r"^out of GPU memory: CUDA out of memory\. Tried to allocate 20\.00 GiB",
            "scoring.chunk_size",
        ),
        (
            RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried "
                         "to allocate 3221225472 bytes. Error code 12"),
            "train",
            r"^out of CPU memory: an allocation of 3\.0 GiB failed$",
            "--batch-size",
        ),
        (RuntimeError("shape mismatch"), "train", None, None),
        (ValueError("can't allocate memory"), "train", None, None),
    ],
)  # fmt: skip
def test_out_of_memory_errors_are_recognised_and_name_what_to_reduce(
    exc: BaseException, command: str, problem: str | None, fix: str | None
) -> None:
    from sslmem.errors import out_of_memory_error

    error = out_of_memory_error(exc, command)
    if problem is None:
        assert error is None
        return
    assert error is not None and re.search(problem, error.problem)
    assert error.fix is not None and fix is not None and fix in error.fix


# --- edge failures: the real `sslmem` process, its exit status, its message, what is on disk


def _sslmem(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``sslmem ARGV`` as a subprocess, with no ``SSLMEM_*`` variable but those of ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SSLMEM_")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "sslmem"), *argv],
        env={**clean, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _assert_exit_2(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert re.search(says, done.stderr), f"{says!r} not in:\n{done.stderr}"


def _idx(array: np.ndarray) -> bytes:
    """``array`` as an unsigned-byte IDX file (the MNIST format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.slow
def test_an_idx_file_cut_inside_its_header_is_refused(scratch: Path) -> None:
    data = scratch / "fmnist"
    data.mkdir()
    for prefix in ("train", "t10k"):
        (data / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(np.zeros((12, 28, 28))))
        (data / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(np.arange(12) % 10))
    cut = data / "train-images-idx3-ubyte"
    cut.write_bytes(cut.read_bytes()[:10])  # the header of 3 dimensions takes 16 bytes
    before = _listing(scratch)
    done = _sslmem(
        ["split", "--data", "fashion-mnist", "--data-root", "fmnist", "--out", "m.json"], scratch
    )
    _assert_exit_2(
        done,
        r"error: IDX file fmnist/train-images-idx3-ubyte is truncated inside its header: 10 "
        r"bytes.*\n  fix: re-download train-images-idx3-ubyte \(or restore it",
    )
    assert _listing(scratch) == before and len(cut.read_bytes()) == 10


def _encoder_file(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    encoder = build_encoder(
        "small_cnn",
        in_channels=1,
        image_size=28,
        arch_kwargs={"widths": [4, 4, 4]},
        head_hidden_dim=8,
        head_output_dim=8,
    )
    save_checkpoint(encoder, path, metadata={"seed": seed})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("candidates", "references", "says"),
    [
        (["a.st", "./a.st"], ["b.st"], r"checkpoint a\.st is passed twice as a candidate"),
        (["a.st"], ["b.st", "b.st"], r"checkpoint b\.st is passed twice as a reference"),
        (["a.st"], ["a.st"], r"checkpoint a\.st is passed as a candidate and as a reference"),
        (["a.st"], ["copy.st"], r"checkpoints a\.st and copy\.st hold the same bytes"),
    ],
    ids=["candidate-twice", "reference-twice", "both-sides", "a-copy"],
)
def test_a_checkpoint_passed_twice_is_refused_before_any_work(
    candidates: list[str], references: list[str], says: str, scratch: Path
) -> None:
    _encoder_file(scratch / "a.st", seed=1)
    _encoder_file(scratch / "b.st", seed=2)
    (scratch / "copy.st").write_bytes((scratch / "a.st").read_bytes())
    before = _listing(scratch)
    argv = ["score", "--candidate", *candidates, "--reference", *references, "--split",
            "split.json", "--views", "2", "--no-progress", "--out", "out"]  # fmt: skip
    done = _sslmem(argv, scratch)
    _assert_exit_2(done, says + r".*\(sha256 [0-9a-f]{12}\)\n  fix: pass each checkpoint once")
    assert _listing(scratch) == before  # no report directory, no staging directory


@pytest.mark.slow
def test_mlflows_own_tracking_uri_is_honoured_when_sslmems_is_unset(scratch: Path) -> None:
    # SSLMEM_MLFLOW_TRACKING_URI first, then MLFLOW_TRACKING_URI, then ./mlruns: a user who set
    # only MLflow's variable gets their store, not a local one they never look at.
    _encoder_file(scratch / "a.st", seed=1)
    database = scratch / "tracking" / "mlflow.db"
    database.parent.mkdir()
    argv = ["register", "--encoder", "a.st", "--model", "mine", "--split", "split.json",
            "--as-reference"]  # fmt: skip
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{database}"}
    done = _sslmem(argv, scratch, env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "registered models:/mine/1" in done.stdout
    assert "SSLMEM_MLFLOW_TRACKING_URI is not set: tracking to MLFLOW_TRACKING_URI" in done.stderr
    assert not (scratch / "mlruns").exists()
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT name FROM registered_models").fetchall() == [("mine",)]


@pytest.mark.slow
def test_an_s3_endpoint_that_never_answers_fails_within_the_configured_timeouts(
    scratch: Path,
) -> None:
    # With the old bounds (60 s read timeout, 4 attempts) this held the command 245 s.
    with silent_server() as port:
        env = {
            "SSLMEM_S3_ENDPOINT": f"127.0.0.1:{port}",
            "SSLMEM_S3_SECURE": "false",
            "SSLMEM_S3_READ_TIMEOUT_S": "1",
            "SSLMEM_STORE_RETRIES": "1",
        }
        before = _listing(scratch)
        started = time.monotonic()
        done = _sslmem(["split", "--out", "s3://bucket/m.json"], scratch, env)
        elapsed = time.monotonic() - started
    _assert_exit_2(
        done,
        rf"error: S3 endpoint http://127\.0\.0\.1:{port} did not answer within 1 s "
        r"\(SSLMEM_S3_READ_TIMEOUT_S\) in any of 2 attempts \(SSLMEM_STORE_RETRIES=1\) while "
        r"trying to write s3://bucket/m\.json\n  fix: .*raise SSLMEM_S3_READ_TIMEOUT_S",
    )
    assert elapsed < 60  # two 1 s reads, plus the start of a Python process on a busy machine
    assert _listing(scratch) == before


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_report_that_cannot_be_written_leaves_the_previous_one(scratch: Path) -> None:
    # A disk that fills, without root or a small file system: RLIMIT_FSIZE (as `prlimit
    # --fsize`) fails every write past the limit, as ENOSPC would, with EFBIG. CPython ignores
    # SIGXFSZ, so the process gets the error instead of being killed by the signal.
    _encoder_file(scratch / "a.st", seed=1)
    _encoder_file(scratch / "b.st", seed=2)
    previous = {"summary.json": b'{"previous": true}\n', "scores.parquet": b"previous table"}
    (scratch / "out").mkdir()
    for name, data in previous.items():
        (scratch / "out" / name).write_bytes(data)
    before = _listing(scratch)
    argv = ["score", "--candidate", "a.st", "--reference", "b.st", "--split", "split.json",
            "--views", "2", "--no-progress", "--allow-missing-provenance", "--out", "out"]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SSLMEM_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sslmem"), *argv],
        env=clean,
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=_file_size_limit(12_000),  # the table and summary fit, a figure does not
    )
    _assert_exit_2(
        done,
        r"error: cannot write output directory out: writing (sslmem_histogram|memorised_grid)"
        r"\.png failed \(file too large: the file-size limit \(ulimit -f\) was reached\); the "
        r"previous report in out is left as it was\n  fix: free space",
    )
    left = _listing(scratch) ^ before
    assert not left, f"left behind or removed: {sorted(left)}\n{done.stderr}"  # no staging dir
    assert {p.name: p.read_bytes() for p in (scratch / "out").iterdir()} == previous


def test_an_evaluation_that_cannot_be_written_leaves_the_previous_file(scratch: Path) -> None:
    # As above: the file-size limit fails the write of the JSON record past its first bytes.
    _encoder_file(scratch / "a.st", seed=1)
    previous = b'{"previous": true}\n'
    (scratch / "r.json").write_bytes(previous)
    before = _listing(scratch)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SSLMEM_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sslmem"), "evaluate", "--encoder", "a.st",
         "--out", "r.json"],
        env=clean, cwd=scratch, capture_output=True, text=True, timeout=300, check=False,
        preexec_fn=_file_size_limit(64),
    )  # fmt: skip
    _assert_exit_2(
        done,
        r"error: cannot write result file r\.json: file too large: the file-size limit "
        r"\(ulimit -f\) was reached; any previous file there is left as it was\n  fix: free space",
    )
    assert _listing(scratch) == before  # no temporary file left
    assert (scratch / "r.json").read_bytes() == previous


def _name_max(directory: Path) -> int:
    try:
        return max(os.pathconf(directory, "PC_NAME_MAX"), 1)
    except (OSError, ValueError):
        return 255


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["score", "--candidate", "a.st", "--reference", "b.st", "--split", "split.json", "--out"], "output directory"),
        (["unitmem", "--encoder", "a.st", "--split", "split.json", "--out"], "output directory"),
        (["evaluate", "--encoder", "a.st", "--out"], "result file"),
        (["split", "--out"], "manifest"),
        ([*TRAIN, "--epochs", "1", "--out"], "run directory"),
    ],
    ids=["score", "unitmem", "evaluate", "split", "train"],
)  # fmt: skip
def test_an_output_name_longer_than_name_max_is_refused_before_any_work(
    argv: list[str], what: str, scratch: Path
) -> None:
    # One byte over NAME_MAX: the write would fail with ENAMETOOLONG, after the work, having
    # made the parent directory. Refused first, and "new" is never made.
    _encoder_file(scratch / "a.st", seed=1)
    _encoder_file(scratch / "b.st", seed=2)
    limit = _name_max(scratch)
    before = _listing(scratch)
    done = _sslmem([*argv, "new/" + "y" * (limit + 1)], scratch)
    _assert_exit_2(
        done,
        rf"error: cannot write {what} new/y{{16}}\.\.\.y{{8}}: the name y{{16}}\.\.\.y{{8}} is "
        rf"{limit + 1} bytes long; this file system takes at most {limit} bytes per name "
        rf"\(NAME_MAX\)\n  fix: choose a shorter name \(at most {limit} bytes\)",
    )
    assert _listing(scratch) == before


@pytest.mark.slow
def test_a_report_named_with_name_max_bytes_is_written(scratch: Path) -> None:
    # The staging and old-run siblings (.<name>.staging-<token>) are cut to fit, so a name of
    # exactly NAME_MAX bytes, multi-byte characters included, is usable.
    _encoder_file(scratch / "a.st", seed=1)
    _encoder_file(scratch / "b.st", seed=2)
    limit = _name_max(scratch)
    name = "é" * ((limit - 1) // 2) + "x" * (limit - 2 * ((limit - 1) // 2))
    assert len(name.encode()) == limit
    (scratch / "new").mkdir()
    (scratch / "new" / name).mkdir()
    (scratch / "new" / name / "summary.json").write_text('{"previous": true}\n')  # replaced
    argv = ["score", "--candidate", "a.st", "--reference", "b.st", "--split", "split.json",
            "--views", "2", "--no-progress", "--allow-missing-provenance", "--out", f"new/{name}"]  # fmt: skip
    done = _sslmem(argv, scratch, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(scratch / "new")) == [name]  # no staging or old-run sibling left
    files = {p.name for p in (scratch / "new" / name).iterdir()}
    assert {"scores.parquet", "summary.json", "sslmem_histogram.png"} <= files
    assert "previous" not in (scratch / "new" / name / "summary.json").read_text()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["score", "--candidate", "a.st", "--reference", "b.st", "--split", "split.json", "--out", b"o\xff"], r"sslmem score: error: --out is not valid UTF-8: o\\xff"),
        (["evaluate", "--encoder", "a.st", b"--out=r\xfe.json"], r"sslmem evaluate: error: --out is not valid UTF-8: r\\xfe\.json"),
        (["split", "--out", b"m\xff.json"], r"sslmem split: error: --out is not valid UTF-8: m\\xff\.json"),
        (["score", "--candidate", "a.st", b"c\xff.st", "--out", "o"], r"sslmem score: error: --candidate is not valid UTF-8: c\\xff\.st"),
    ],
    ids=["score-out", "evaluate-out-equals", "split-out", "score-candidate"],
)  # fmt: skip
def test_a_path_that_is_not_utf8_is_refused_before_any_work(
    argv: list[str | bytes], says: str, scratch: Path
) -> None:
    # Linux passes any bytes; such a path used to fail after the work, in pyarrow or json.
    before = _listing(scratch)
    done = _sslmem([os.fsdecode(word) for word in argv], scratch)  # encoded back to the bytes
    _assert_exit_2(done, says + r"\n  fix: pass a UTF-8 path or value")
    assert _listing(scratch) == before


# Runs `sslmem ARGV` in-process and sends itself SIGINT right after the named point: a real
# signal at an exact moment, no sleep racing it. swap: the rename of the staging directory into
# place; cleanup: the removal of the previous report (after the swap); staging: a figure's
# rename into the staging directory (before the swap).
_INTERRUPTED_AT = """
import os, shutil, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if inherited ignored
from sslmem.cli import main
point, argv = sys.argv[1], sys.argv[2:]
module, name, marker = {
    "swap": (os, "rename", ".staging-"),
    "cleanup": (shutil, "rmtree", ".old-"),
    "staging": (os, "replace", ".staging-"),
}[point]
real = getattr(module, name)
def then_interrupt(path, *args, **kwargs):
    result = real(path, *args, **kwargs)
    if marker in os.fspath(path):
        signal.raise_signal(signal.SIGINT)
    return result
setattr(module, name, then_interrupt)
sys.exit(main(argv))
"""


def _interrupted_score(scratch: Path, point: str) -> subprocess.CompletedProcess[str]:
    _encoder_file(scratch / "a.st", seed=1)
    _encoder_file(scratch / "b.st", seed=2)
    argv = ["score", "--candidate", "a.st", "--reference", "b.st", "--split", "split.json",
            "--views", "2", "--no-progress", "--allow-missing-provenance", "--out", "out"]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SSLMEM_")}
    return subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_AT, point, *argv],
        env=clean, cwd=scratch, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


_PREVIOUS = {"summary.json": b'{"previous": true}\n', "scores.parquet": b"previous table"}


def _previous_report(scratch: Path) -> None:
    (scratch / "out").mkdir()
    for name, data in _PREVIOUS.items():
        (scratch / "out" / name).write_bytes(data)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["swap", "cleanup"])
def test_an_interrupt_once_the_report_is_swapped_in_does_not_fail_the_run(
    point: str, scratch: Path
) -> None:
    _previous_report(scratch)
    done = _interrupted_score(scratch, point)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "wrote out/scores.parquet" in done.stdout
    assert (
        "sslmem score: interrupt received after the output was complete; the command finished "
        "(exit status 0)" in done.stderr
    )
    report = {p.name for p in (scratch / "out").iterdir()}
    assert report == {
        "scores.parquet",
        "summary.json",
        "sslmem_histogram.png",
        "memorised_grid.png",
    }
    assert json.loads((scratch / "out" / "summary.json").read_text())["verdict"]
    hidden = [p.name for p in scratch.iterdir() if p.name.startswith(".out.")]
    assert not hidden, hidden  # neither the staging directory nor the previous report


@pytest.mark.slow
def test_an_interrupt_before_the_swap_exits_130_and_keeps_the_previous_report(
    scratch: Path,
) -> None:
    _previous_report(scratch)
    before = _listing(scratch)
    done = _interrupted_score(scratch, "staging")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.rstrip().endswith("sslmem score: interrupted")
    assert _listing(scratch) - {"a.st", "b.st"} == before  # no staging directory left
    assert {p.name: p.read_bytes() for p in (scratch / "out").iterdir()} == _PREVIOUS
