"""An atypicality score independent of SSLMem: distance to the nearest training neighbours.

Wang et al. (ICLR 2024, Sec. 5) find that the most memorised points are atypical. To test that
without circularity the atypicality must not come from the candidate encoder: here it is the
mean cosine distance of a candidate to its k nearest neighbours among the reference encoder's
training points (S_S ∪ S_I), in the reference's embedding. The reference never saw a candidate,
so a large distance means the point is unlike the data, not that it was learnt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from sslmem.errors import ConfigError

if TYPE_CHECKING:
    from sslmem.augment import AugmentationSpec
    from sslmem.models.encoder import Encoder


def knn_distance(query: torch.Tensor, bank: torch.Tensor, *, k: int = 10) -> torch.Tensor:
    """Mean cosine distance of each query to its ``k`` nearest bank points.

    Args:
        query: ``[n, D]`` float features of the points to score (e.g. candidates).
        bank: ``[m, D]`` float features of the typical data (e.g. the reference's training
            points); must not contain the queries.
        k: Neighbours averaged (``1 <= k <= m``).

    Returns:
        ``float64 [n]`` atypicality in ``[0, 2]``: 0 means the point has k identical-direction
        neighbours.

    Raises:
        ConfigError: Shapes disagree or ``k`` is out of range.

    """
    if query.dim() != 2 or bank.dim() != 2 or query.shape[1] != bank.shape[1]:
        raise ConfigError(
            f"features must be [n, D] and [m, D] with one D (got {tuple(query.shape)} and "
            f"{tuple(bank.shape)})",
            "extract both from the same layer of the same encoder",
        )
    if not 1 <= k <= bank.shape[0]:
        raise ConfigError(
            f"k={k} neighbours, but the bank holds {bank.shape[0]} points",
            f"choose k between 1 and {bank.shape[0]}",
        )
    q = F.normalize(query.double(), dim=1)
    b = F.normalize(bank.double(), dim=1)
    distance = 1.0 - q @ b.T  # [n, m]
    nearest = torch.topk(distance, k, dim=1, largest=False).values
    return nearest.mean(dim=1)


def reference_atypicality(
    reference: Encoder,
    images: torch.Tensor,
    query_indices: npt.NDArray[np.int64],
    bank_indices: npt.NDArray[np.int64],
    *,
    augment_spec: AugmentationSpec,
    k: int = 10,
    device: torch.device | str | None = None,
) -> npt.NDArray[np.float64]:
    """:func:`knn_distance` of the queries to the bank in the reference's backbone features.

    Args:
        reference: The reference encoder (it trained on the bank, never on the queries).
        images: uint8 ``[N, C, H, W]`` of the whole dataset.
        query_indices: ``[n]`` dataset indices to score (the candidates, S_C).
        bank_indices: ``[m]`` the reference's training points (S_S ∪ S_I).
        augment_spec: The reference's preprocessing.
        k: Neighbours.
        device: Compute device.

    Returns:
        ``float64 [n]`` atypicality, aligned with ``query_indices``.

    Raises:
        ConfigError: The bank and the queries overlap, or ``k`` does not fit the bank.

    """
    from sslmem.evaluation.features import extract_features

    if np.intersect1d(query_indices, bank_indices).size:
        raise ConfigError(
            "the atypicality bank contains query points",
            "use the reference's training points (S_S ∪ S_I) as the bank and S_C as queries",
        )

    def features(indices: npt.NDArray[np.int64]) -> torch.Tensor:
        return extract_features(
            reference,
            images[torch.from_numpy(indices)],
            augment_spec=augment_spec,
            layer="backbone",
            device=device,
        ).cpu()

    distances = knn_distance(features(query_indices), features(bank_indices), k=k)
    return distances.numpy().astype(np.float64)
