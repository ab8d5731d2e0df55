"""Score a split: SSLMem of candidate vs reference checkpoints on the protocol's sets.

The one library function behind ``sslmem score``, the KFP scoring component and the scoring
service: load nothing, decide nothing about I/O -- take loaded checkpoints, the dataset and its
split manifest, check that they may be scored together (:func:`check_compatible`: roles, split,
recipe, augmentation, layer), return per-point scores, per-set statistics, the verdict and full
provenance. The report's schema is :mod:`~sslmem.memorization.report_schema`; its writer
(:func:`write_score_outputs`, replacing a report directory as a whole) is
:mod:`~sslmem.memorization.report_writer`.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from sslmem import __version__
from sslmem.augment import AugmentationSpec, BatchAugmenter
from sslmem.config import ScoringConfig
from sslmem.data.datasets import ImageDataset
from sslmem.data.splits import SplitManifest
from sslmem.errors import ScoringError
from sslmem.memorization.alignment import AlignmentEstimator, alignment_losses
from sslmem.memorization.normalize import minmax_normalize, range_normalize
from sslmem.memorization.reference_cache import ReferenceLossCache, ReferenceLossKey

# The report's schema and writer live in their own modules; re-exported here, where every caller
# has imported them from.
from sslmem.memorization.report_schema import SCORE_COLUMNS as SCORE_COLUMNS
from sslmem.memorization.report_schema import CheckpointRef as CheckpointRef
from sslmem.memorization.report_schema import PairProvenance as PairProvenance
from sslmem.memorization.report_schema import ScoreReport as ScoreReport
from sslmem.memorization.report_schema import ScoreSummary as ScoreSummary
from sslmem.memorization.report_writer import check_report_dir as check_report_dir
from sslmem.memorization.report_writer import write_score_outputs as write_score_outputs
from sslmem.memorization.report_writer import write_score_report as write_score_report
from sslmem.memorization.sslmem import compute_sslmem, sslmem_from_alignment
from sslmem.memorization.stats import summarize_scores
from sslmem.models.checkpoint import LoadedCheckpoint


def _ref(checkpoint: LoadedCheckpoint) -> CheckpointRef:
    prov = checkpoint.provenance
    return CheckpointRef(
        path=str(checkpoint.path),
        sha256=checkpoint.sha256,
        arch=checkpoint.header.arch,
        representation=dict(checkpoint.header.representation),
        role=prov.role,
        split_manifest_sha256=prov.split_manifest_sha256,
        method=prov.method,
        seed=prov.seed,
        missing_provenance=prov.missing,
    )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """``"key: a-value vs b-value"`` for every leaf that differs (at most 5 shown)."""
    fa, fb = _flatten(a), _flatten(b)
    keys = sorted(k for k in fa.keys() | fb.keys() if fa.get(k, "<unset>") != fb.get(k, "<unset>"))
    shown = [f"{k}: {fa.get(k, '<unset>')!r} vs {fb.get(k, '<unset>')!r}" for k in keys[:5]]
    return shown + ([f"... {len(keys) - 5} more"] if len(keys) > 5 else [])


_TRAINED_ON = {"candidate": "S_S ∪ S_C", "reference": "S_S ∪ S_I"}


def _trained_splits(manifest: SplitManifest, role: str) -> tuple[str, ...]:
    """Manifests an encoder of ``role`` may have been trained on to be scored on ``manifest``.

    A derived split (:func:`~sslmem.data.splits.derive_split`) only removes candidates, so the
    reference trained on its parent saw exactly S_S ∪ S_I of the derived split too.
    """
    if role == "reference" and manifest.derivation is not None:
        return (manifest.manifest_sha256, manifest.derivation.parent_manifest_sha256)
    return (manifest.manifest_sha256,)


def check_provenance(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    manifest: SplitManifest,
    *,
    allow_cross_split: bool = False,
    allow_missing_provenance: bool = False,
) -> None:
    """Refuse scores that would be mislabelled: roles, split, recipe and augmentation.

    Every candidate must have been trained as a ``candidate`` and every reference as a
    ``reference`` (swapped arguments are caught here); every checkpoint on ``manifest``; all on
    the same recipe (everything but seeds, :func:`~sslmem.models.checkpoint.training_recipe`)
    and augmentation. Checkpoints that do not record a field (trained outside sslmem, or by an
    older version) are refused unless ``allow_missing_provenance``; the fields they do record
    are still checked.

    Args:
        candidates: Loaded candidate checkpoints.
        references: Loaded reference checkpoints.
        manifest: The split being scored.
        allow_cross_split: Accept encoders trained on another split (a deliberate
            cross-split experiment; recorded in the summary).
        allow_missing_provenance: Accept checkpoints that do not record their provenance.

    Raises:
        ScoringError: A mismatch (the message names both values) or missing provenance.
    """
    labelled = [(c, "candidate") for c in candidates] + [(r, "reference") for r in references]
    for ckpt, expected in labelled:
        prov = ckpt.provenance
        if prov.missing and not allow_missing_provenance:
            raise ScoringError(
                f"{ckpt.path} does not record its {', '.join(prov.missing)} (trained outside "
                "sslmem or by an older version), so its scores could be mislabelled",
                "retrain it with `sslmem train`, or pass --allow-missing-provenance "
                "(allow_missing_provenance=True) to score it unchecked; the waiver is recorded "
                "in summary.json",
            )
        if prov.role is not None and prov.role != expected:
            if prov.role in _TRAINED_ON:
                problem = (
                    f"{ckpt.path} was trained as a {prov.role} (on {_TRAINED_ON[prov.role]}) "
                    f"but is passed as a {expected} (trained on {_TRAINED_ON[expected]})"
                )
                fix = f"pass it with --{prov.role} (were --candidate and --reference swapped?)"
            else:
                problem = f"{ckpt.path} has role {prov.role!r}, but is passed as a {expected}"
                fix = "score encoders trained by `sslmem train --role candidate|reference`"
            raise ScoringError(problem, fix)
        split = prov.split_manifest_sha256
        if (
            split is not None
            and split not in _trained_splits(manifest, expected)
            and (not allow_cross_split)
        ):
            raise ScoringError(
                f"{ckpt.path} was trained on split manifest {split}, but the split being "
                f"scored is {manifest.manifest_sha256}",
                "score with the manifest the encoders were trained on, or pass "
                "--allow-cross-split (allow_cross_split=True) for a deliberate cross-split "
                "experiment",
            )
    for field, fix in (
        ("recipe", "train candidate and reference with the same recipe (only seeds may differ)"),
        ("augmentation", "train candidate and reference with the same augmentation"),
    ):
        known = [(c, getattr(c.provenance, field)) for c, _ in labelled]
        known = [(c, value) for c, value in known if value is not None]
        if not known:
            continue
        base_ckpt, base = known[0]
        for ckpt, value in known[1:]:
            if value != base:
                raise ScoringError(
                    f"{ckpt.path} and {base_ckpt.path} were trained with different {field}s: "
                    + "; ".join(_differences(value, base)),
                    fix,
                )


def check_layers(checkpoints: Sequence[LoadedCheckpoint], layers: Sequence[str]) -> None:
    """Refuse layers that are not a representation of every encoder, or an untrained head.

    A valid layer fires exactly once per forward with one tensor
    (:meth:`~sslmem.models.Encoder.layer_names`). A layer in the projection head of an encoder
    whose head was not trained (``head_trained: false``, e.g. MAE) is refused: its output is a
    random projection, not what the encoder learned.

    Raises:
        ScoringError: Unknown or unusable layer (the message lists the valid names) or an
            untrained head.
    """
    if not layers:
        raise ScoringError("no layer to score", "pass a layer, e.g. --layer backbone")
    for ckpt in checkpoints:
        valid = ckpt.encoder.layer_names()
        for layer in layers:
            if layer not in valid:
                raise ScoringError(
                    f"layer {layer!r} is not a representation of {ckpt.path} "
                    "(unknown, never run, or run more than once per forward)",
                    f"choose one of: {', '.join(valid[:60])}{' ...' if len(valid) > 60 else ''}",
                )
            in_head = layer == "head" or layer.startswith("head.")
            if in_head and ckpt.provenance.head_trained is False:
                raise ScoringError(
                    f"layer {layer!r} is in the projection head of {ckpt.path}, which was not "
                    f"trained (method {ckpt.provenance.method or 'unknown'})",
                    "score a backbone layer, e.g. --layer backbone",
                )


def check_distinct(
    candidates: Sequence[LoadedCheckpoint], references: Sequence[LoadedCheckpoint]
) -> None:
    """Refuse a checkpoint passed more than once, on one side or on both.

    A repeated encoder would be scored as two: its losses counted twice in every statistic, or
    (on both sides) compared with itself. Checkpoints are the same when their bytes are
    (``sha256``): one file named twice, under two spellings or a link, or a copy of it.

    Raises:
        ScoringError: The message names both places the checkpoint was passed.
    """
    seen: dict[str, tuple[LoadedCheckpoint, str]] = {}
    labelled = [(c, "candidate") for c in candidates] + [(r, "reference") for r in references]
    for ckpt, role in labelled:
        if ckpt.sha256 not in seen:
            seen[ckpt.sha256] = (ckpt, role)
            continue
        first, first_role = seen[ckpt.sha256]
        if Path(first.path).resolve() == Path(ckpt.path).resolve():
            what = f"checkpoint {ckpt.path} is passed"
        else:  # a copy, or another spelling of the path that does not resolve alike
            what = f"checkpoints {first.path} and {ckpt.path} hold the same bytes and are passed"
        if role == first_role:
            problem = f"{what} twice as a {role}: it would be scored as two encoders"
        else:
            problem = f"{what} as a candidate and as a reference: it would be compared to itself"
        raise ScoringError(
            f"{problem} (sha256 {ckpt.sha256[:12]})",
            "pass each checkpoint once: distinct candidates (e.g. other seeds) and distinct "
            "references, trained with `sslmem train --role candidate|reference`",
        )


def check_compatible(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    dataset: ImageDataset,
    *,
    manifest: SplitManifest,
    layers: Sequence[str] | None = None,
    allow_cross_split: bool = False,
    allow_missing_provenance: bool = False,
) -> None:
    """Everything checked before encoders are scored together on a split.

    Representation specs must agree and fit the data; the manifest must be of ``dataset``;
    provenance must match (:func:`check_provenance`); each of ``layers`` must be a usable
    representation of every encoder (:func:`check_layers`). Every scorer (``score_split``, the
    CLI, the pipeline, LayerMem/UnitMem) calls this before any forward pass.

    Args:
        candidates: Loaded candidate checkpoints.
        references: Loaded reference checkpoints.
        dataset: The data to score.
        manifest: The split being scored.
        layers: Layers that will be scored (``None``: not checked here).
        allow_cross_split: See :func:`check_provenance`.
        allow_missing_provenance: See :func:`check_provenance`.

    Raises:
        ScoringError: Incompatible encoders, provenance or layers.
        ManifestMismatchError: The manifest was not made from ``dataset``.
    """
    if not candidates or not references:
        raise ScoringError(
            f"need at least one candidate and one reference checkpoint, got {len(candidates)} "
            f"and {len(references)}",
            "pass --candidate CKPT ... and --reference CKPT ...",
        )
    check_distinct(candidates, references)
    manifest.verify_against(dataset)
    first = candidates[0]
    expected = dict(first.header.representation)
    for ckpt in [*candidates, *references]:
        spec = dict(ckpt.header.representation)
        if spec != expected:
            raise ScoringError(
                f"representation spec of {ckpt.path} ({spec}) differs from {first.path} "
                f"({expected})",
                "score candidates and references trained with the same architecture and head",
            )
    channels = expected.get("in_channels")
    if channels is not None and channels != dataset.num_channels:
        raise ScoringError(
            f"encoders take {channels}-channel images but dataset {dataset.name!r} has "
            f"{dataset.num_channels}",
            "score the dataset the encoders were trained on",
        )
    check_provenance(
        candidates,
        references,
        manifest,
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
    )
    if layers is not None:
        check_layers([*candidates, *references], layers)


def select_points(
    manifest: SplitManifest, sets: Sequence[str], *, shared_sample: int, seed: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Dataset indices to score and the set name of each (S_S is subsampled, seeded).

    Returns:
        ``(indices [N] int64, set_names [N] str)``.
    """
    if not sets:
        raise ScoringError("no sets to score", "pass e.g. --sets candidate,independent,extra")
    repeated = sorted({name for name in sets if list(sets).count(name) > 1})
    if repeated:
        # Its points would be counted twice in every statistic.
        raise ScoringError(
            f"sets scored more than once: {', '.join(repeated)}", "name each set once"
        )
    index_parts, name_parts = [], []
    for name in sets:
        indices = manifest.set_indices(name)  # type: ignore[arg-type]
        if name == "shared" and len(indices) > shared_sample:
            rng = np.random.default_rng(seed)
            indices = np.sort(rng.choice(indices, size=shared_sample, replace=False))
        if len(indices) == 0:
            raise ScoringError(f"set {name!r} of the split is empty", "make a larger split")
        index_parts.append(indices.astype(np.int64))
        name_parts.append(np.full(len(indices), name, dtype=object))
    return np.concatenate(index_parts), np.concatenate(name_parts)


def checked_points(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    dataset: ImageDataset,
    manifest: SplitManifest,
    *,
    scoring: ScoringConfig,
    allow_cross_split: bool = False,
    allow_missing_provenance: bool = False,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The encoders checked (:func:`check_compatible`), then the points to score.

    What every scorer of ``scoring.layer`` does first: one-pass scoring, sharded scoring's plan
    and each shard, so none of them can score encoders another would refuse.

    Returns:
        ``(indices [N] int64, set_names [N] str)`` as :func:`select_points`.

    Raises:
        ScoringError, ManifestMismatchError: See :func:`check_compatible` and
            :func:`select_points`.
    """
    check_compatible(
        candidates,
        references,
        dataset,
        manifest=manifest,
        layers=[scoring.layer],
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
    )
    return select_points(
        manifest, scoring.sets, shared_sample=scoring.shared_sample, seed=scoring.seed
    )


def score_split(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    dataset: ImageDataset,
    manifest: SplitManifest,
    *,
    scoring: ScoringConfig,
    augment_spec: AugmentationSpec,
    device: torch.device | None = None,
    alpha: float = 0.01,
    progress: Callable[[int], object] | None = None,
    allow_cross_split: bool = False,
    allow_missing_provenance: bool = False,
    reference_cache: ReferenceLossCache | None = None,
) -> ScoreReport:
    """SSLMem on the manifest's sets, with statistics, verdict and provenance.

    Nothing is computed before :func:`check_compatible` has accepted the encoders, their
    provenance, the layer and the manifest.

    Args:
        candidates: m loaded candidate checkpoints (trained on S_S ∪ S_C, role ``candidate``).
        references: n loaded reference checkpoints (trained on S_S ∪ S_I, role ``reference``).
        dataset: The data the manifest was made from (verified).
        manifest: The split; every checkpoint must have been trained on it.
        scoring: K, mode, distance, layer, chunk size, view batch, precision, seed, sets, S_S
            sample size.
        augment_spec: The augmentation distribution of the views.
        device: Compute device (default CPU). On CUDA scores are fp32 (TF32 off) unless
            ``scoring.autocast_bf16``.
        alpha: Significance level of the verdict.
        progress: Called with the number of points finished after each chunk.
        allow_cross_split: Score encoders trained on another split (recorded in the summary).
        allow_missing_provenance: Score checkpoints that do not record their provenance
            (recorded in the summary).
        reference_cache: Where the references' per-point losses are read from and written
            to (``None``: computed with the candidates' forwards, nothing cached). Scores are
            bit-identical either way.

    Returns:
        Per-point columns (sample index, set, raw and normalised SSLMem, mean alignment losses)
        and the summary.

    Raises:
        ScoringError: See :func:`check_compatible`; non-finite representations.
        ManifestMismatchError: The manifest was not made from ``dataset``.
    """
    indices, set_names = checked_points(
        candidates,
        references,
        dataset,
        manifest,
        scoring=scoring,
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
    )
    device = device or torch.device("cpu")
    points = score_points(
        candidates,
        references,
        dataset,
        indices,
        set_names,
        scoring=scoring,
        augment_spec=augment_spec,
        device=device,
        progress=progress,
        reference_cache=reference_cache,
        manifest_sha256=manifest.manifest_sha256,
    )
    return build_report(
        points,
        candidates,
        references,
        manifest,
        scoring=scoring,
        augment_spec=augment_spec,
        alpha=alpha,
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
    )


class PointScores(BaseModel):
    """Per-point results of one scoring pass over some points, before any set statistic.

    Everything here depends on each point alone (its views are keyed by its dataset index), so
    passes over disjoint ranges of the scored points concatenate to the pass over all of them
    (sharded scoring, :mod:`sslmem.memorization.sharding`).

    Attributes:
        sample_index: ``[N]`` int64 dataset indices.
        set: ``[N]`` set name of each point.
        sslmem_raw: ``[N]`` float64 raw SSLMem.
        candidate_alignment: ``[N]`` float64 mean alignment loss over the candidates.
        reference_alignment: ``[N]`` float64 mean alignment loss over the references.
        seconds: Wall time of the pass.
        device: Where it ran (device and processor).
        precision: ``"fp32"`` or ``"bf16 autocast"``.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    sample_index: Any
    set: Any
    sslmem_raw: Any
    candidate_alignment: Any
    reference_alignment: Any
    seconds: float
    device: str
    precision: str


def score_points(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    dataset: ImageDataset,
    indices: np.ndarray[Any, Any],
    set_names: np.ndarray[Any, Any],
    *,
    scoring: ScoringConfig,
    augment_spec: AugmentationSpec,
    device: torch.device,
    progress: Callable[[int], object] | None = None,
    reference_cache: ReferenceLossCache | None = None,
    manifest_sha256: str = "",
) -> PointScores:
    """Raw SSLMem and mean alignment losses of the points ``indices`` (no checks, no stats).

    Callers check the encoders first (:func:`check_compatible`). Each point's views depend only
    on ``(scoring.seed, its dataset index, view id)``, never on which other points share its
    forward, so any partition of the points gives the same per-point values.

    Args:
        candidates: m loaded candidate checkpoints.
        references: n loaded reference checkpoints.
        dataset: The data the indices refer to.
        indices: ``[N]`` int64 dataset indices.
        set_names: ``[N]`` set name of each point.
        scoring: K, mode, distance, layer, chunk size, view batch, precision, seed.
        augment_spec: The augmentation distribution of the views.
        device: Compute device.
        progress: Called with the number of points finished after each chunk.
        reference_cache: Cache of the references' losses
            (:mod:`sslmem.memorization.reference_cache`); ``None``: none.
        manifest_sha256: The split the points are from (part of the cache key).
    """
    bf16 = scoring.autocast_bf16 and device.type == "cuda"
    precision = "bf16 autocast" if bf16 else "fp32"
    started = time.perf_counter()
    if reference_cache is not None:
        cand, ref = _cached_alignment(
            candidates,
            references,
            dataset.images[torch.from_numpy(indices)],
            np.asarray(indices, dtype=np.int64),
            scoring=scoring,
            augment_spec=augment_spec,
            device=device,
            precision=precision,
            progress=progress,
            cache=reference_cache,
            manifest_sha256=manifest_sha256,
        )
        return PointScores(
            sample_index=np.asarray(indices, dtype=np.int64),
            set=np.asarray(set_names).astype(str),
            sslmem_raw=sslmem_from_alignment(cand, ref).numpy().astype(np.float64),
            candidate_alignment=cand.mean(0).numpy().astype(np.float64),
            reference_alignment=ref.mean(0).numpy().astype(np.float64),
            seconds=time.perf_counter() - started,
            device=f"{device} ({platform.processor() or platform.machine()})",
            precision=precision,
        )
    result = compute_sslmem(
        [c.encoder for c in candidates],
        [r.encoder for r in references],
        dataset.images[torch.from_numpy(indices)],
        torch.from_numpy(indices),
        augment_spec=augment_spec,
        estimator=AlignmentEstimator.from_config(scoring),
        layer=scoring.layer,
        device=device,
        chunk_size=scoring.chunk_size,
        view_batch=scoring.view_batch,
        autocast_bf16=bf16,
        progress=progress,
    )
    return PointScores(
        sample_index=np.asarray(indices, dtype=np.int64),
        set=np.asarray(set_names).astype(str),
        sslmem_raw=result.raw.numpy().astype(np.float64),
        candidate_alignment=result.candidate_alignment.mean(0).numpy().astype(np.float64),
        reference_alignment=result.reference_alignment.mean(0).numpy().astype(np.float64),
        seconds=time.perf_counter() - started,
        device=f"{device} ({platform.processor() or platform.machine()})",
        precision=precision,
    )


def _cached_alignment(
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    images: torch.Tensor,
    indices: np.ndarray[Any, Any],
    *,
    scoring: ScoringConfig,
    augment_spec: AugmentationSpec,
    device: torch.device,
    precision: str,
    progress: Callable[[int], object] | None,
    cache: ReferenceLossCache,
    manifest_sha256: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate and reference losses ``[m, N], [n, N]``, the references' through ``cache``.

    Each encoder's losses depend only on its own forwards of the shared seeded views, so the
    references computed alone equal the references computed beside the candidates.
    """
    keys = torch.from_numpy(indices)

    def losses(
        encoders: Sequence[LoadedCheckpoint], report: Callable[[int], object] | None
    ) -> torch.Tensor:
        return alignment_losses(
            [c.encoder for c in encoders],
            images,
            keys,
            augmenter=BatchAugmenter(augment_spec),
            estimator=AlignmentEstimator.from_config(scoring),
            layers=[scoring.layer],
            device=device,
            chunk_size=scoring.chunk_size,
            view_batch=scoring.view_batch,
            autocast_bf16=precision != "fp32",
            progress=report,
        )[:, 0]

    key = ReferenceLossKey.build(
        reference_sha256=[r.sha256 for r in references],
        manifest_sha256=manifest_sha256,
        indices=indices,
        images=images,
        scoring=scoring,
        augment_spec=augment_spec,
        precision=precision,
        device=device,
    )
    ref = cache.load(key)
    if ref is None:
        cache.misses += 1
        ref = losses(references, None)
        cache.save(key, ref)
    else:
        cache.hits += 1
    return losses(candidates, progress), ref


def build_report(
    points: PointScores,
    candidates: Sequence[LoadedCheckpoint],
    references: Sequence[LoadedCheckpoint],
    manifest: SplitManifest,
    *,
    scoring: ScoringConfig,
    augment_spec: AugmentationSpec,
    alpha: float = 0.01,
    allow_cross_split: bool = False,
    allow_missing_provenance: bool = False,
    shard_size: int | None = None,
) -> ScoreReport:
    """Per-set normalisation, statistics, verdict and provenance of all scored points.

    The one place a report is made from per-point scores: :func:`score_split` and the merge of
    sharded scoring (:func:`sslmem.memorization.sharding.merge_shards`) both end here.

    Args:
        points: Per-point scores of every scored point, in :func:`select_points` order.
        candidates: The candidate checkpoints (provenance).
        references: The reference checkpoints.
        manifest: The split scored.
        scoring: The scoring config.
        augment_spec: The augmentation of the views.
        alpha: Significance level of the verdict.
        allow_cross_split: Recorded waiver.
        allow_missing_provenance: Recorded waiver.
        shard_size: Points per shard of a sharded run (``None``: unsharded).
    """
    raw = points.sslmem_raw
    set_names = points.set
    # Normalised per scored set, as the authors normalise over the set they score.
    range_scores, minmax_scores = np.empty_like(raw), np.empty_like(raw)
    by_set: dict[str, np.ndarray[Any, Any]] = {}
    for name in scoring.sets:
        mask = set_names == name
        scores = torch.from_numpy(raw[mask])
        range_scores[mask] = range_normalize(scores).numpy()
        minmax_scores[mask] = minmax_normalize(scores).numpy()
        by_set[name] = raw[mask]
    summaries, tests, verdict = summarize_scores(by_set, alpha=alpha)
    columns = {
        "sample_index": points.sample_index,
        "set": set_names,
        "sslmem_raw": raw,
        "sslmem_range": range_scores,
        "sslmem_minmax": minmax_scores,
        "candidate_alignment": points.candidate_alignment,
        "reference_alignment": points.reference_alignment,
    }
    seconds = points.seconds
    summary = ScoreSummary(
        sets=summaries,
        welch_tests=tests,
        verdict=verdict,
        candidates=[_ref(c) for c in candidates],
        references=[_ref(r) for r in references],
        manifest_sha256=manifest.manifest_sha256,
        dataset=manifest.dataset.model_dump(),
        augmentation=augment_spec,
        scoring=scoring,
        normalization="raw kept; 'range' = raw/(max-min) and 'minmax' per scored set",
        sslmem_version=__version__,
        torch_version=torch.__version__,
        device=points.device,
        seconds=seconds,
        points_per_second=len(raw) / seconds if seconds > 0 else float("inf"),
        precision=points.precision,
        allow_cross_split=allow_cross_split,
        allow_missing_provenance=allow_missing_provenance,
        shard_size=shard_size,
    )
    return ScoreReport(columns=columns, summary=summary)
