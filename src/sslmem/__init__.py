"""sslmem: measure memorisation in self-supervised image encoders.

Implements SSLMem from Wang et al., "Memorization in Self-Supervised Learning Improves
Downstream Generalization", ICLR 2024 (arXiv 2401.12233), with the data splits, encoders,
training, evaluation and MLOps adapters around it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sslmem")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
