"""Memorisation metrics, their statistics and normalisations.

SSLMem (Wang et al., ICLR 2024), LayerMem/ΔLayerMem and UnitMem (Wang et al., NeurIPS 2024).
"""

from sslmem.memorization.alignment import (
    DISTANCES,
    AlignmentEstimator,
    alignment_losses,
    cosine_distance,
    l2_distance,
)
from sslmem.memorization.layermem import LayerMemResult, compute_layermem, layermem_from_scores
from sslmem.memorization.normalize import (
    NORMALIZATIONS,
    minmax_normalize,
    normalize,
    range_normalize,
)
from sslmem.memorization.sslmem import SSLMemResult, compute_sslmem, sslmem_from_alignment
from sslmem.memorization.stats import (
    OUTCOMES,
    Outcome,
    SetSummary,
    Verdict,
    WelchTest,
    protocol_verdict,
    summarize_scores,
    summarize_set,
    welch_test,
)
from sslmem.memorization.unitmem import unit_activations, unitmem_from_activations

__all__ = [
    "DISTANCES",
    "NORMALIZATIONS",
    "OUTCOMES",
    "AlignmentEstimator",
    "LayerMemResult",
    "Outcome",
    "SSLMemResult",
    "SetSummary",
    "Verdict",
    "WelchTest",
    "alignment_losses",
    "compute_layermem",
    "compute_sslmem",
    "cosine_distance",
    "l2_distance",
    "layermem_from_scores",
    "minmax_normalize",
    "normalize",
    "protocol_verdict",
    "range_normalize",
    "sslmem_from_alignment",
    "summarize_scores",
    "summarize_set",
    "unit_activations",
    "unitmem_from_activations",
    "welch_test",
]
