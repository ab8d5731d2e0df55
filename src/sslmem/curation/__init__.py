"""Curation studies: what removing the most memorised candidates costs, and what it buys.

Wang et al. (ICLR 2024, Sec. 5, "Memorization in Self-Supervised Learning Improves Downstream
Generalization") remove the k candidates with the highest SSLMem, retrain, and find downstream
accuracy drops more than when k random (or the k least memorised) candidates are removed. This
package runs that experiment on a scored split, with the privacy half of the answer (the "onion
effect" of Carlini et al., NeurIPS 2022: which remaining points become exposed) and the relation
of SSLMem to an independent atypicality score.

Modules: :mod:`.selection` (which points are removed), :mod:`.statistics` (tests, intervals,
power), :mod:`.atypicality` (kNN distance in the reference's embedding), :mod:`.plan` (the
retrains a study runs), :mod:`.study` (runs them), :mod:`.figures` (the report's pictures).
"""
