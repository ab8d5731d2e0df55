"""The estimators of the alignment loss: one registry, one default, one validation.

SSLMem (Wang et al., ICLR 2024, Eq. 1-2) compares an encoder's alignment loss on a point — the
expected distance between the representations of two augmented views — between a candidate and
a reference encoder. The expectation is estimated from K views per point:

* ``pairs``: K independent view pairs (views ``2i, 2i+1``), 2K forwards: the paper's estimator.
  It also serves ``anchor`` mode (the authors' script: K views against the clean image, K + 1
  forwards), which has no view pairs.
* ``ustat``: the mean over all K(K-1)/2 pairs of K views (a U-statistic), K forwards: the same
  expectation, measured to match the per-point precision of ``pairs`` at half the forwards
  (benchmarks/README.md); pair mode only.

The config (``scoring.estimator``), the kernel (``AlignmentEstimator``) and the command line
(``sslmem score --estimator``) all validate through :func:`check_estimator` and default through
:func:`default_estimator`; a mode asked for over a config's estimator that cannot serve it gets
the mode's default through :func:`estimator_for_mode` (applied by
:func:`sslmem.config.load_raw_config` for every adapter). Light: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sslmem.errors import ConfigError

Mode = Literal["pair", "anchor"]
EstimatorName = Literal["pairs", "ustat"]


@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator of the alignment loss.

    Attributes:
        name: Its name in configs, reports and flags.
        modes: The alignment modes it serves (``pair``: view to view; ``anchor``: clean image to
            view), the first being the one it is the default of (if any).
        min_views: The fewest views K it can estimate from.
        all_pairs: Averages all K(K-1)/2 pairs of K views (else K distances: one per pair or
            per view against the anchor).

    """

    name: EstimatorName
    modes: tuple[Mode, ...]
    min_views: int
    all_pairs: bool

    def terms(self, views: int) -> int:
        """Distances averaged per point: K(K-1)/2 (all pairs) or K."""
        return views * (views - 1) // 2 if self.all_pairs else views

    def forwards(self, views: int, mode: Mode) -> int:
        """Encoder forwards per point and encoder: K (all pairs), K + 1 (anchor) or 2K."""
        if self.all_pairs:
            return views
        return views + 1 if mode == "anchor" else 2 * views


ESTIMATORS: dict[str, EstimatorSpec] = {
    "pairs": EstimatorSpec("pairs", ("anchor", "pair"), min_views=1, all_pairs=False),
    "ustat": EstimatorSpec("ustat", ("pair",), min_views=2, all_pairs=True),
}

#: What reports and judgements written before the estimator was recorded used (the paper's
#: estimator, the default then): reading them with today's default would mislabel their scores.
LEGACY_ESTIMATOR: EstimatorName = "pairs"

#: The estimator of each mode when nobody chose one.
DEFAULTS: dict[Mode, EstimatorName] = {"pair": "ustat", "anchor": "pairs"}


def default_estimator(mode: Mode) -> EstimatorName:
    """The estimator ``mode`` uses unless one is chosen (``pair``: ustat; ``anchor``: pairs)."""
    if mode not in DEFAULTS:
        raise ConfigError(f"unknown mode {mode!r}", f"use one of {', '.join(DEFAULTS)}")
    return DEFAULTS[mode]


def check_estimator(name: str, mode: str, views: int) -> EstimatorSpec:
    """The spec of estimator ``name`` once it fits ``mode`` and ``views``.

    Raises:
        ConfigError: Unknown estimator or mode, a mode the estimator does not serve, or fewer
            views than it needs (the message names the fix).

    """
    if mode not in DEFAULTS:
        raise ConfigError(f"unknown mode {mode!r}", f"use one of {', '.join(DEFAULTS)}")
    spec = ESTIMATORS.get(name)
    if spec is None:
        raise ConfigError(
            f"unknown estimator {name!r}", f"use one of {', '.join(sorted(ESTIMATORS))}"
        )
    if mode not in spec.modes:
        others = [s.name for s in ESTIMATORS.values() if mode in s.modes]
        raise ConfigError(
            f"estimator {name!r} compares views with each other and needs mode "
            f"{' or '.join(repr(m) for m in spec.modes)} (got mode {mode!r})",
            f"use estimator {' or '.join(repr(o) for o in others)} with mode {mode!r}",
        )
    if views < spec.min_views:
        raise ConfigError(
            f"estimator {name!r} needs views >= {spec.min_views} (got {views})",
            "set scoring.estimator=pairs for a single view pair, or more views",
        )
    return spec


def estimator_for_mode(mode: str, configured: str) -> EstimatorName | None:
    """The estimator that replaces ``configured`` when ``mode`` is asked for over it, if any.

    A mode chosen where no estimator was (``sslmem score --mode``, a ``--set scoring.mode=...``
    override, the service's ``CONFIG_OVERRIDES``) wins over a recipe's estimator that cannot
    serve it: the mode's default replaces it. ``None`` keeps ``configured``: it serves the mode,
    or a name is unknown (the config's validation names it).
    """
    spec = ESTIMATORS.get(configured)
    if spec is None or mode in spec.modes:
        return None
    return next((default for name, default in DEFAULTS.items() if name == mode), None)
