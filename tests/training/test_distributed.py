"""Two-process DDP on the CPU (gloo), launched the way torchrun does: through the environment."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from sslmem.models import load_checkpoint
from sslmem.training import ENCODER_FILE, RESUME_FILE, train_encoder
from sslmem.training.distributed import DistContext, shard
from tests.training.helpers import tiny_config, tiny_dataset, tiny_split

WORLD = 2
METHODS = ("simclr", "byol")  # negatives gathered across ranks; a momentum teacher


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    data = tiny_dataset()
    # One spawn for several methods: starting a process (imports) costs more than training.
    for method in METHODS:
        config = tiny_config(method, "small_cnn", "training.epochs=2", "training.batch_size=8")
        result = train_encoder(
            data,
            tiny_split(data),
            role="candidate",
            config=config,
            out_dir=Path(out) / method,
            device="cpu",
            progress=False,
        )
        torch.save(
            {"state": result.encoder.state_dict(), "history": list(result.history)},
            Path(out) / f"{method}-rank{rank}.pt",
        )


def test_shard_splits_a_global_batch_like_distributed_sampler() -> None:
    batch = torch.arange(8)
    parts = [shard(batch, DistContext(rank=r, world_size=2)) for r in range(2)]
    assert torch.equal(torch.cat(parts), batch)
    assert torch.equal(shard(batch, DistContext()), batch)


@pytest.mark.slow
def test_two_process_gloo_training_ends_with_identical_weights(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for method in METHODS:
        run = tmp_path / method
        ranks = [
            torch.load(tmp_path / f"{method}-rank{r}.pt", weights_only=True) for r in range(WORLD)
        ]
        saved = load_checkpoint(run / ENCODER_FILE)
        assert saved.metadata["world_size"] == WORLD
        # Only rank 0 writes: no stray temporary files from other ranks.
        assert sorted(p.name for p in run.iterdir()) == [ENCODER_FILE, RESUME_FILE]
        reference = saved.encoder.state_dict()
        for rank in ranks:
            # Losses are all-reduced, so every rank reports the same (throughput is per rank).
            losses = [(h["loss"], h["lr"]) for h in rank["history"]]
            assert losses == [(h["loss"], h["lr"]) for h in ranks[0]["history"]]
            for name, tensor in reference.items():
                assert torch.equal(rank["state"][name], tensor), f"{method}: {name}"


def _byol_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    data = tiny_dataset()
    result = train_encoder(
        data,
        tiny_split(data),
        role="candidate",
        config=tiny_config("byol", "small_cnn", "training.epochs=2", "training.batch_size=8"),
        out_dir=Path(out) / f"rank{rank}",
        device="cpu",
        progress=False,
    )
    torch.save(
        {"state": result.encoder.state_dict(), "history": list(result.history)},
        Path(out) / f"byol-rank{rank}.pt",
    )


@pytest.mark.slow
def test_two_processes_of_half_the_batch_equal_one_process_accumulating_two_halves(
    tmp_path: Path,
) -> None:
    """2 x B/2 under DDP is the same optimisation as 1 process with B in two micro-batches.

    Batch norm (every projection head has one) normalises over the images of one forward,
    so DDP with B/2 per process couples images like 1 process with two micro-batches of B/2
    (``grad_accum_steps=2``), not like one forward of B: the reference is therefore the
    accumulating run. Both see the same global batches (the shuffle does not depend on the
    world size), each half in the same forward, and average the same two gradients. BYOL is
    used because it has no cross-process coupling (SimCLR gathers negatives across ranks).
    Batch-norm *running* statistics differ (DDP keeps rank 0's, accumulation updates twice),
    so only parameters are compared; they do not affect training-mode forwards.
    """
    mp.spawn(_byol_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ddp = torch.load(tmp_path / "byol-rank0.pt", weights_only=True)
    data = tiny_dataset()
    runs = {}
    for accum in (2, 1):
        config = tiny_config(
            "byol",
            "small_cnn",
            "training.epochs=2",
            "training.batch_size=8",
            f"training.grad_accum_steps={accum}",
        )
        runs[accum] = train_encoder(
            data,
            tiny_split(data),
            role="candidate",
            config=config,
            out_dir=tmp_path / f"single-accum{accum}",
            device="cpu",
            progress=False,
        )
    single = runs[2]
    params = dict(single.encoder.named_parameters())
    assert params, "no parameters compared"
    for name, tensor in params.items():
        torch.testing.assert_close(ddp["state"][name], tensor.detach(), rtol=1e-4, atol=1e-5)
    for got, want in zip(ddp["history"], single.history, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
        assert got["lr"] == want["lr"]
    # One forward of B (no accumulation) normalises over 8 images, not 4: same steps and
    # data, different weights -- what is equal is the schedule, not the numbers.
    assert runs[1].steps == single.steps
    assert [h["lr"] for h in runs[1].history] == [h["lr"] for h in single.history]
