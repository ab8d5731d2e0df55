"""Seeds derived from a run seed, and the deterministic-algorithms switch.

Every random choice of a training run (initial weights, shuffle order, augmentation parameters,
MAE masks) comes from a seed derived from ``(run seed, purpose, epoch, step, ...)`` by a hash,
never from RNG state carried from one step to the next. So a run killed after epoch ``k`` and
resumed draws exactly the numbers an uninterrupted run draws, and a point's augmented views depend
only on ``(seed, epoch, its dataset index)`` -- not on batch size, sharding or world size.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

_SEED_BITS = 63  # torch.Generator.manual_seed takes up to 2**64 - 1; stay positive in int64


def derive_seed(seed: int, purpose: str, *parts: int) -> int:
    """A 63-bit seed that is a pure function of its arguments.

    Args:
        seed: Run seed.
        purpose: What the seed is for (``"shuffle"``, ``"augment"``, ``"step"``, ...); distinct
            purposes give independent streams.
        *parts: Further integers (epoch, step, rank, ...).

    Returns:
        An integer in ``[0, 2**63)``.

    """
    text = "|".join([str(seed), purpose, *map(str, parts)]).encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - _SEED_BITS)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Enable ``torch.use_deterministic_algorithms`` (and disable cuDNN autotuning) inside.

    The previous global settings are restored on exit, so a library call does not change the
    caller's process. On CUDA, deterministic cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG``
    (e.g. ``:4096:8``) in the environment before CUDA starts.

    Args:
        enabled: When False this is a no-op.

    """
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.backends.cudnn.benchmark = previous_benchmark
