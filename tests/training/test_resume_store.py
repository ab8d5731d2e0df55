"""A retried or preempted pipeline train step resumes from the object store (issue 12).

Each test runs the train step's library function (:func:`sslmem.workflow.train_role`, what the
KFP component calls) on a small split of the bundled dataset, interrupts it after an epoch the
way a preemption would (an exception out of the epoch loop), and runs it again with the same
inputs against the same store: a real local directory and a real S3 server (SeaweedFS).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from sslmem.config import ExperimentConfig, RuntimeSettings, SplitConfig
from sslmem.data import make_split
from sslmem.data.datasets import load_dataset
from sslmem.data.splits import save_manifest
from sslmem.data.store import ObjectStore, open_store
from sslmem.errors import CheckpointError
from sslmem.models import load_checkpoint
from sslmem.training import EpochCallback
from sslmem.training.resume import load_resume_state
from sslmem.workflow import TrainedEncoder, train_role
from tests.servers import S3Server
from tests.training.helpers import tiny_config

pytestmark = pytest.mark.slow

PREFIX = "train-resume/"


class PreemptedError(Exception):
    """Stands in for the pod being preempted after an epoch."""


class PreemptAfter:
    """Raise after epoch ``epoch`` (0-based) has ended and its resume state was uploaded."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.epoch:
            raise PreemptedError


class EpochsSeen:
    """Records the epochs an attempt actually trained."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(epoch)


def _config(*overrides: str) -> ExperimentConfig:
    return tiny_config(
        "simclr",
        "small_cnn",
        "training.epochs=3",
        "training.deterministic=true",
        "training.warmup_epochs=1",
        *overrides,
    )


@pytest.fixture(scope="module")
def split_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48-image split of the bundled dataset (the candidate trains on 39 images)."""
    data = load_dataset("bundled", split="train")
    manifest = make_split(data, fractions=SplitConfig(pool_size=48))
    return save_manifest(manifest, tmp_path_factory.mktemp("split") / "split.json")


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuntimeSettings]:
    """Runtime settings whose store is a fresh local directory or a fresh S3 bucket."""
    if request.param == "local":
        yield RuntimeSettings(store_uri=str(tmp_path / "store"))
        return
    server: S3Server = request.getfixturevalue("s3_server")
    yield server.store_settings("resume")


def _runner(split: Path, settings: RuntimeSettings, out_dir: Path) -> Callable[..., TrainedEncoder]:
    def run(
        name: str,
        config: ExperimentConfig | None = None,
        *callbacks: EpochCallback,
        code_version: str = "v1",
    ) -> TrainedEncoder:
        return train_role(
            manifest_path=split,
            recipe=config or _config(),
            role="candidate",
            seed=3,
            out_path=out_dir / f"{name}.safetensors",
            device="cpu",
            settings=settings,
            code_version=code_version,
            callbacks=callbacks,
        )

    return run


def _weights(trained: TrainedEncoder) -> dict[str, torch.Tensor]:
    return load_checkpoint(trained.checkpoint).encoder.state_dict()


def _store(settings: RuntimeSettings) -> ObjectStore:
    return open_store(settings.store_uri, settings)


@pytest.mark.s3
def test_preempted_step_run_again_ends_with_the_weights_of_an_uninterrupted_run(
    split_path: Path,
    settings: RuntimeSettings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = _runner(split_path, settings, tmp_path)
    store = _store(settings)
    full = run("full")
    assert store.list(PREFIX) == []  # a finished step leaves nothing to resume

    with pytest.raises(PreemptedError):
        run("attempt", None, PreemptAfter(1))  # preempted after the 2nd of 3 epochs
    assert not (tmp_path / "attempt.safetensors").exists()
    [key] = store.list(PREFIX)
    store.get_file(key, tmp_path / "stored.pt")
    assert load_resume_state(tmp_path / "stored.pt").epoch == 2

    seen = EpochsSeen()
    with caplog.at_level(logging.INFO, logger="sslmem"):
        retried = run("attempt", None, seen)
    assert seen.epochs == [2]  # only the epoch the preempted attempt had not finished
    assert retried.resumed_from_epoch == 2 and full.resumed_from_epoch is None
    assert f"resuming from {store.uri(key)} after epoch 2" in caplog.text
    assert store.list(PREFIX) == []

    expected, got = _weights(full), _weights(retried)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert retried.final_loss == full.final_loss


def test_resume_state_of_another_code_version_or_recipe_is_not_picked_up(
    split_path: Path, tmp_path: Path
) -> None:
    settings = RuntimeSettings(store_uri=str(tmp_path / "store"))
    run = _runner(split_path, settings, tmp_path)
    store = _store(settings)
    with pytest.raises(PreemptedError):
        run("attempt", None, PreemptAfter(1), code_version="v1")
    left = store.list(PREFIX)
    assert len(left) == 1

    for config, code_version in ((None, "v2"), (_config("training.lr=0.002"), "v1")):
        seen = EpochsSeen()
        run("other", config, seen, code_version=code_version)
        assert seen.epochs == [0, 1, 2]  # trained from scratch
        assert store.list(PREFIX) == left  # and the v1 state is left for its own retry

    # Settings that do not change the weights keep the step's identity: it resumes.
    seen = EpochsSeen()
    run("attempt", _config("training.checkpoint_every=3"), seen, code_version="v1")
    assert seen.epochs == [2]


def test_resume_every_epochs_zero_uploads_nothing(split_path: Path, tmp_path: Path) -> None:
    settings = RuntimeSettings(store_uri=str(tmp_path / "store"))
    run = _runner(split_path, settings, tmp_path)
    with pytest.raises(PreemptedError):
        run("attempt", _config("training.resume_every_epochs=0"), PreemptAfter(1))
    assert _store(settings).list(PREFIX) == []


def test_resume_every_two_epochs_keeps_the_last_multiple(split_path: Path, tmp_path: Path) -> None:
    settings = RuntimeSettings(store_uri=str(tmp_path / "store"))
    run = _runner(split_path, settings, tmp_path)
    store = _store(settings)
    config = _config("training.epochs=4", "training.resume_every_epochs=2")
    with pytest.raises(PreemptedError):
        run("attempt", config, PreemptAfter(2))  # 3 epochs done, the last upload after 2
    [key] = store.list(PREFIX)
    store.get_file(key, tmp_path / "stored.pt")
    assert load_resume_state(tmp_path / "stored.pt").epoch == 2
    seen = EpochsSeen()
    run("attempt", config, seen)
    assert seen.epochs == [2, 3]


def test_unusable_stored_state_fails_the_step_naming_the_object(
    split_path: Path, tmp_path: Path
) -> None:
    settings = RuntimeSettings(store_uri=str(tmp_path / "store"))
    run = _runner(split_path, settings, tmp_path)
    store = _store(settings)
    with pytest.raises(PreemptedError):
        run("attempt", None, PreemptAfter(0))
    [key] = store.list(PREFIX)
    store.put_bytes(key, b"not a resume file")
    with pytest.raises(CheckpointError) as caught:
        run("attempt")
    assert caught.value.fix == f"delete {store.uri(key)} to train this step from epoch 0"
    assert not (tmp_path / "attempt.safetensors").exists()


def test_failed_uploads_do_not_stop_training(
    split_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "store"
    blocked.write_text("a file where the store directory should be")  # every write fails
    run = _runner(split_path, RuntimeSettings(store_uri=str(blocked)), tmp_path)
    reference = _runner(split_path, RuntimeSettings(store_uri=str(tmp_path / "ok")), tmp_path)
    with caplog.at_level(logging.WARNING, logger="sslmem"):
        trained = run("blocked")
    assert "could not upload the resume state after epoch 1" in caplog.text
    assert "could not upload the resume state after epoch 2" in caplog.text
    assert trained.resumed_from_epoch is None
    expected, got = _weights(reference("reference")), _weights(trained)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


_KILLED_STEP = """
import os, signal, sys
from pathlib import Path

import torch

from sslmem.config import RuntimeSettings
from sslmem.workflow import train_role
from tests.training.test_resume_store import _config


class KillAfter:  # SIGKILL: no exception handler, finally block or cleanup runs
    def on_epoch_end(self, epoch, metrics):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)


torch.set_num_threads(1)
split, store, out = sys.argv[1:]
train_role(
    manifest_path=Path(split), recipe=_config(), role="candidate", seed=3,
    out_path=Path(out), device="cpu", settings=RuntimeSettings(store_uri=store),
    code_version="v1", callbacks=[KillAfter()],
)
"""


def test_step_killed_by_sigkill_resumes_in_a_new_process(split_path: Path, tmp_path: Path) -> None:
    settings = RuntimeSettings(store_uri=str(tmp_path / "store"))
    out = tmp_path / "attempt.safetensors"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_KILLED_STEP),
            str(split_path),
            settings.store_uri,
            str(out),
        ],
        capture_output=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],  # the repository root: `tests` importable
        env={**os.environ, "TMPDIR": str(scratch)},  # the killed step's temp dir stays here
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not out.exists()
    assert len(_store(settings).list(PREFIX)) == 1

    seen = EpochsSeen()
    retried = _runner(split_path, settings, tmp_path)("attempt", None, seen)
    assert seen.epochs == [2] and retried.resumed_from_epoch == 2
    full = _runner(split_path, RuntimeSettings(store_uri=str(tmp_path / "other")), tmp_path)("full")
    expected, got = _weights(full), _weights(retried)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
