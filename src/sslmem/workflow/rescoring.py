"""Score a champion again under a candidate's protocol, so a judgement is always paired and valid.

Raw SSLMem is comparable only on one protocol (:class:`~sslmem.memorization.judgement.
ScoringProtocol`): when the champion's published scores were made with another reference
checkpoint, precision, sslmem version, K, layer, ..., the candidate cannot be judged against
them. Instead of refusing, :func:`rescore_champion` scores the champion's weights again exactly
as the candidate was scored -- the candidate's reference, split manifest (so the same S_C points),
augmentation, scoring config (K, layer, estimator, view seed: the same views) and precision --
through the same :func:`~sslmem.workflow.score.score_pair` (untracked: the champion's own
published run is not replaced). The result is cached in the object store
(:class:`RescoredChampions`), keyed by the champion's checkpoint sha256 and the candidate's
protocol and scoring config, so every later candidate of that protocol reuses it; the
reference's losses come from the reference cache
(:class:`~sslmem.memorization.reference_cache.ReferenceLossCache`), so a re-scoring costs only
the champion's own forwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from sslmem.config import RuntimeSettings
from sslmem.errors import StoreError
from sslmem.tracking import tags as T

if TYPE_CHECKING:
    from sslmem.data.store import ObjectStore
    from sslmem.memorization.judgement import ScoredVersion
    from sslmem.memorization.reference_cache import ReferenceLossCache
    from sslmem.memorization.scoring import ScoreSummary
    from sslmem.workflow.scoring_settings import VersionScoringSettings

__all__ = ["RESCORED_PREFIX", "RescoredChampions", "open_reference_cache", "rescore_champion"]

logger = logging.getLogger(__name__)

#: Where re-scored champions live in the object store.
RESCORED_PREFIX = "cache/rescored-champions"


def open_reference_cache(runtime: RuntimeSettings) -> ReferenceLossCache:
    """The reference losses cache on the runtime's object store (``SSLMEM_STORE_URI``)."""
    from sslmem.data.store import open_store
    from sslmem.memorization.reference_cache import ReferenceLossCache

    return ReferenceLossCache(open_store(runtime.store_uri, runtime))


def rescore_key(champion_sha256: str, summary: ScoreSummary) -> dict[str, Any]:
    """What a re-scored champion depends on: its weights and the candidate's whole protocol."""
    from sslmem.memorization.judgement import ScoringProtocol

    return {
        "champion_sha256": champion_sha256,
        "protocol": ScoringProtocol.from_summary(summary).model_dump(mode="json"),
        "scoring": summary.scoring.model_dump(mode="json"),
    }


@dataclass(frozen=True)
class RescoredChampions:
    """Re-scored champions' S_C scores and summaries, one JSON object per key."""

    store: ObjectStore
    prefix: str = RESCORED_PREFIX

    def object_key(self, key: dict[str, Any]) -> str:
        """The object of ``key`` (sha256 of its canonical JSON)."""
        text = json.dumps(key, sort_keys=True, separators=(",", ":"))
        return f"{self.prefix}/{hashlib.sha256(text.encode()).hexdigest()}.json"

    def load(self, key: dict[str, Any]) -> tuple[dict[str, Any], ScoreSummary] | None:
        """``(columns, summary)`` of ``key``; ``None`` when absent, unreadable or foreign."""
        from sslmem.memorization.scoring import ScoreSummary

        name = self.object_key(key)
        try:
            entry = json.loads(self.store.get_bytes(name))
            if entry["key"] != key:
                raise ValueError("foreign entry")
            summary = ScoreSummary.model_validate(entry["summary"])
            columns = {
                "sample_index": np.asarray(entry["sample_index"], dtype=np.int64),
                "set": ["candidate"] * len(entry["sample_index"]),
                "sslmem_raw": np.asarray(entry["sslmem_raw"], dtype=np.float64),
            }
        except StoreError:
            return None
        except (ValueError, KeyError, TypeError, ValidationError):
            logger.warning("ignoring a corrupt or foreign re-scored champion entry %s", name)
            return None
        return columns, summary

    def save(self, key: dict[str, Any], columns: dict[str, Any], summary: ScoreSummary) -> None:
        """Store the S_C rows of ``columns`` and ``summary`` (one atomic put; failures logged)."""
        mask = np.asarray(columns["set"]).astype(str) == "candidate"
        entry = {
            "key": key,
            "summary": summary.model_dump(mode="json"),
            # Python floats print round-trip exactly: a hit equals the miss bit for bit.
            "sample_index": np.asarray(columns["sample_index"])[mask].astype(int).tolist(),
            "sslmem_raw": np.asarray(columns["sslmem_raw"], dtype=np.float64)[mask].tolist(),
        }
        try:
            self.store.put_bytes(self.object_key(key), json.dumps(entry).encode())
        except StoreError as exc:
            logger.warning("could not cache the re-scored champion: %s", exc.problem)


def rescore_champion(
    name: str,
    champion: str,
    champion_tags: dict[str, str],
    candidate: str,
    candidate_tags: dict[str, str],
    candidate_summary: ScoreSummary,
    *,
    settings: VersionScoringSettings,
    runtime: RuntimeSettings,
    reference_cache: ReferenceLossCache | None = None,
) -> ScoredVersion:
    """The champion scored under the candidate's protocol (cached; see the module docstring).

    Args:
        name: Registered model name.
        champion: The champion's version number.
        champion_tags: Its tags (accuracies).
        candidate: The candidate's version number.
        candidate_tags: Its tags (reference, split manifest).
        candidate_summary: The candidate's score summary (the protocol to reproduce).
        settings: Device and weights cache.
        runtime: MLflow and the object store.
        reference_cache: The references' losses cache (default: on the runtime's store).

    Raises:
        ScoringError, CheckpointError, ManifestMismatchError: The champion cannot be scored on
            the candidate's split with its reference (e.g. trained on another split or recipe).
        TrackingError, StoreError: MLflow or the store is unavailable.
    """
    from sslmem.data.store import open_store
    from sslmem.memorization.judgement import ScoredVersion
    from sslmem.tracking import load_registered_encoder
    from sslmem.workflow.score import score_pair
    from sslmem.workflow.scoring_inputs import scoring_inputs_from_tags
    from sslmem.workflow.scoring_settings import service_config

    cache_dir = settings.model_cache_dir
    weights = load_registered_encoder(f"models:/{name}/{champion}", cache_dir=cache_dir)
    rescored = RescoredChampions(open_store(runtime.store_uri, runtime))
    key = rescore_key(weights.sha256, candidate_summary)
    cached = rescored.load(key)
    if cached is None:
        inputs = scoring_inputs_from_tags(name, candidate, candidate_tags)
        reference = load_registered_encoder(inputs.reference_uri, cache_dir=cache_dir)
        base = service_config(settings)
        config = base.model_copy(
            update={
                "augmentation": candidate_summary.augmentation,
                "scoring": candidate_summary.scoring,
            }
        )
        with tempfile.TemporaryDirectory(prefix="sslmem-rescore-") as tmp:
            report = score_pair(
                candidate_checkpoints=[weights],
                reference_checkpoints=[reference],
                manifest_path=inputs.split_manifest_uri,
                config=config,
                out_dir=Path(tmp),
                device=settings.device or runtime.device,
                settings=runtime,
                reference_cache=reference_cache or open_reference_cache(runtime),
            )
        logger.info("re-scored %s/%s under the protocol of version %s", name, champion, candidate)
        rescored.save(key, report.columns, report.summary)
        columns, summary = dict(report.columns), report.summary
    else:
        columns, summary = cached
    return ScoredVersion.from_scores(
        champion,
        columns,
        summary,
        knn_accuracy=T.parse_accuracy(champion_tags, T.KNN_ACCURACY),
        linear_probe_accuracy=T.parse_accuracy(champion_tags, T.LINEAR_PROBE_ACCURACY),
    )
