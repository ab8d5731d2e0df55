"""The all-pairs (U-statistic) estimate of the alignment loss, accumulated over view blocks.

Wang et al. (ICLR 2024), Eq. 1: ``L_align(h, x) = E_{x', x'' ~ Aug(x)} d(h(x'), h(x''))``. The
paper estimates it from K independent view pairs (2K forwards). K i.i.d. views give
K(K-1)/2 pairs; their mean distance

    U = (K choose 2)^-1 * sum_{i<j} d(h(x_i), h(x_j))

is an unbiased U-statistic of the same expectation (Hoeffding 1948) and, being the pair
estimator averaged over every way of pairing the same views, never has a larger variance
(Rao-Blackwell). The views arrive in blocks of at most ``view_batch``, so the sum over pairs is
accumulated block by block:

* ``cosine``: ``1 - cos(a, b) = ||u - v||^2 / 2`` for the l2-normalised ``u, v``, and
  ``sum_{i<j} ||u_i - u_j||^2 = K * sum_i ||u_i - mean(u)||^2``. The centred sum of squares is
  merged block by block with Chan, Golub and LeVeque's pairwise update (numerically stable,
  no cancellation of two large sums), so only the running mean ``[B, D]`` is kept: memory does
  not grow with K.
* ``l2`` (the paper's distance, not squared): no closed form in per-point sums exists, so the
  normalised representations of earlier blocks are kept (``[B, K, D]`` floats per encoder and
  layer -- representations, not images or activations) and each new block's distances to them
  and among themselves are added. The K x K distance matrix is never formed.
"""

from __future__ import annotations

import torch
from torch import nn

from sslmem.errors import ScoringError

__all__ = ["AllPairsAccumulator", "all_pairs_distance_sum"]

_EXACT = "donot_use_mm_for_euclid_dist"  # the mm shortcut cancels badly for close views


def all_pairs_distance_sum(reps: torch.Tensor, distance: str) -> torch.Tensor:
    """Sum over all unordered view pairs ``i < j`` of their distance: ``[B, V, D] -> [B]``.

    One block at a time; :class:`AllPairsAccumulator` adds blocks together.
    """
    acc = AllPairsAccumulator(distance)
    acc.add(reps)
    return acc.pair_sum()


class AllPairsAccumulator:
    """Sum of ``d`` over all unordered pairs of a point's views, fed block by block.

    Args:
        distance: ``"l2"`` (of l2-normalised vectors) or ``"cosine"`` (``1 - cos``), as in
            :data:`sslmem.memorization.alignment.DISTANCES`.
    """

    def __init__(self, distance: str) -> None:
        if distance not in ("l2", "cosine"):
            raise ScoringError(
                f"no all-pairs estimator for distance {distance!r}", "use 'l2' or 'cosine'"
            )
        self.distance = distance
        self.count = 0
        self._mean: torch.Tensor | None = None  # cosine: [B, D] running mean of unit vectors
        self._m2: torch.Tensor | None = None  # cosine: [B] centred sum of squares
        self._seen: list[torch.Tensor] = []  # l2: earlier blocks, each [B, V_b, D]
        self._sum: torch.Tensor | None = None  # l2: [B] pair-distance sum so far

    def add(self, reps: torch.Tensor) -> None:
        """Add a block of views: ``reps`` ``[B, V, D]`` (any scale; normalised here)."""
        if reps.dim() != 3 or reps.shape[1] == 0:
            raise ScoringError(f"expected [points, views, dim] with views >= 1, got {reps.shape}")
        unit = nn.functional.normalize(reps.float(), dim=-1)
        if self.distance == "cosine":
            self._merge_moments(unit)
        else:
            self._add_distances(unit)
        self.count += unit.shape[1]

    def pair_sum(self) -> torch.Tensor:
        """``sum_{i<j} d(z_i, z_j)`` per point over every view added: ``[B]``."""
        if self.count == 0:
            raise ScoringError("no views were added")
        if self.distance == "cosine":
            assert self._m2 is not None
            # sum_{i<j} ||u_i - u_j||^2 = K * M2, and 1 - cos = ||u - v||^2 / 2.
            return self.count * self._m2 / 2
        assert self._sum is not None
        return self._sum

    def _merge_moments(self, unit: torch.Tensor) -> None:
        nb = unit.shape[1]
        mean_b = unit.mean(dim=1)
        m2_b = (unit - mean_b.unsqueeze(1)).pow(2).sum(dim=(1, 2))
        if self._mean is None or self._m2 is None:
            self._mean, self._m2 = mean_b, m2_b
            return
        n = self.count
        delta = mean_b - self._mean
        total = n + nb
        self._mean = self._mean + delta * (nb / total)
        self._m2 = self._m2 + m2_b + delta.pow(2).sum(dim=-1) * (n * nb / total)

    def _add_distances(self, unit: torch.Tensor) -> None:
        within = torch.cdist(unit, unit, compute_mode=_EXACT).triu(diagonal=1).sum(dim=(1, 2))
        total = within if self._sum is None else self._sum + within
        for earlier in self._seen:
            total = total + torch.cdist(unit, earlier, compute_mode=_EXACT).sum(dim=(1, 2))
        self._sum = total
        self._seen.append(unit)
