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
