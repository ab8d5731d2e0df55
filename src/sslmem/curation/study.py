"""Run a curation study: retrain without the chosen candidates, evaluate, re-score, analyse.

The library step behind ``sslmem curate`` and the curation pipeline (Wang et al., ICLR 2024,
Sec. 5). Inputs are a scored split: its manifest, the score report of its candidate encoder and
the reference encoder the report was scored against. For every :class:`~.plan.Retrain` the
candidate encoder is retrained with the same recipe on the derived split
(:func:`~sslmem.data.splits.derive_split`), evaluated downstream (kNN, linear probe), and all
of the parent's candidates are re-scored against the same reference, whose losses are computed
once and cached. Each retrain's result is written as soon as it exists, so an interrupted study
continues where it stopped; the analysis (:mod:`.analysis`) runs on the collected rows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from sslmem.atomic import atomic_write_bytes
from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.curation.analysis import StudyAnalysis, analyse
from sslmem.curation.plan import FULL, Retrain, StudyPlan, budget_epochs, plan_retrains
from sslmem.curation.report import Atypicality, write_report
from sslmem.curation.selection import (
    CandidateScores,
    Strategy,
    read_candidate_scores,
    select_removal,
)
from sslmem.data.splits import SplitManifest, derive_split, save_manifest
from sslmem.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from sslmem.data.images import ImageDataset
    from sslmem.memorization.reference_cache import ReferenceLossCache
    from sslmem.models.checkpoint import LoadedCheckpoint

logger = logging.getLogger(__name__)

#: Files of a study directory.
INPUTS_FILE = "study-inputs.json"
ROW_FILE = "result.json"
POINTS_FILE = "scores.npz"
RETRAINS_DIR = "retrains"
SPLIT_FILE = "split.json"
ENCODER_FILE = "encoder.safetensors"
CACHE_DIR = "reference-cache"


@dataclass(frozen=True)
class RetrainResult:
    """One retrain's measurements (a row of the study's results table).

    Attributes:
        name: :attr:`Retrain.name`.
        strategy: ``full``, ``top``, ``bottom`` or ``random``.
        k: Candidates removed.
        fraction: Removal fraction.
        draw: Random draw.
        seed: Training seed.
        manifest_sha256: The split trained on (the parent's for ``full``).
        encoder_sha256: The retrained checkpoint.
        num_train: Training images.
        epochs: Epochs trained.
        steps: Optimiser steps.
        final_loss: Mean loss of the last epoch.
        knn_accuracy: Downstream kNN accuracy.
        linear_probe_accuracy: Linear-probe accuracy.
        mean_sslmem_remaining: Mean SSLMem of the candidates still trained on.
        mean_sslmem_removed: Mean SSLMem of the removed candidates (NaN for ``full``): they are
            no longer trained on, so it should fall to the level of unseen points.
        seconds: Wall time of training, evaluation and scoring.

    """

    name: str
    strategy: str
    k: int
    fraction: float
    draw: int
    seed: int
    manifest_sha256: str
    encoder_sha256: str
    num_train: int
    epochs: int
    steps: int
    final_loss: float
    knn_accuracy: float
    linear_probe_accuracy: float
    mean_sslmem_remaining: float
    mean_sslmem_removed: float
    seconds: float


@dataclass(frozen=True)
class StudyInputs:
    """What a study is computed from; a study directory is resumed only with equal inputs."""

    manifest_sha256: str
    scores_sha256: str
    reference_sha256: str
    recipe: dict[str, Any]
    plan: dict[str, Any]

    def to_json(self) -> bytes:
        """Canonical JSON."""
        return (json.dumps(asdict(self), sort_keys=True, indent=2) + "\n").encode()


def check_study_inputs(
    scores: CandidateScores,
    manifest: SplitManifest,
    reference_sha256: str,
    reference_role: str | None,
    reference_split: str | None,
) -> None:
    """Refuse a study whose inputs do not belong together.

    Raises:
        ConfigError: The score report is of another split, or was scored against another
            reference; the reference is not a reference of this split; the manifest is derived.

    """
    if manifest.derivation is not None:
        raise ConfigError(
            "the split manifest is itself derived from a curation study",
            f"pass its parent split {manifest.derivation.parent_manifest_sha256}",
        )
    if scores.manifest_sha256 != manifest.manifest_sha256:
        raise ConfigError(
            f"the score report {scores.source} is of split {scores.manifest_sha256}, not of "
            f"the split given ({manifest.manifest_sha256})",
            "pass the split manifest the candidate was scored on",
        )
    if reference_sha256 not in scores.reference_sha256s:
        raise ConfigError(
            f"the reference encoder (sha256 {reference_sha256}) is not the one the score report "
            f"was scored against ({', '.join(scores.reference_sha256s)})",
            "pass the reference checkpoint of the score report, so that before and after "
            "removal are scored against the same reference",
        )
    if reference_role not in (None, "reference"):
        raise ConfigError(
            f"the reference checkpoint was trained as a {reference_role}",
            "pass the reference encoder (trained on S_S ∪ S_I)",
        )
    if reference_split not in (None, manifest.manifest_sha256):
        raise ConfigError(
            f"the reference was trained on split {reference_split}, not on "
            f"{manifest.manifest_sha256}",
            "pass the reference trained on the scored split",
        )


def _checked_reference(
    scores: CandidateScores, manifest: SplitManifest, reference_path: Path
) -> LoadedCheckpoint:
    """The reference checkpoint, loaded and checked against the scores and the split."""
    from sslmem.models.checkpoint import load_checkpoint

    reference = load_checkpoint(reference_path)
    check_study_inputs(
        scores,
        manifest,
        reference.sha256,
        reference.provenance.role,
        reference.provenance.split_manifest_sha256,
    )
    return reference


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _open_study_dir(out_dir: Path, inputs: StudyInputs) -> None:
    """Create ``out_dir`` or resume it; refuse one holding another study or other files."""
    from sslmem.outputs import check_output_dir

    marker = out_dir / INPUTS_FILE
    if marker.exists():
        if _read_json(marker) != json.loads(inputs.to_json()):
            raise ConfigError(
                f"{out_dir} holds a curation study of other inputs (split, scores, reference, "
                "recipe or plan differ)",
                "choose another --out, or delete that directory to start over",
            )
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(
            f"{out_dir} exists and is not a curation study directory",
            "choose a new or empty --out directory",
        )
    check_output_dir(out_dir, what="study directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(marker, inputs.to_json())


@dataclass(frozen=True)
class StudyRun:
    """The collected results of a study directory.

    Attributes:
        out_dir: The study directory.
        rows: One result per retrain, in plan order.
        points: Per retrain name, ``(sample_index int64 [n], sslmem float64 [n], removed bool
            [n])`` over all the parent's candidates.
        trained: Retrains run by this call (the others were found done).

    """

    out_dir: Path
    rows: list[RetrainResult]
    points: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]]
    trained: int


def run_retrains(
    *,
    scores: CandidateScores,
    manifest: SplitManifest,
    reference_path: Path,
    config: ExperimentConfig,
    plan: StudyPlan,
    out_dir: Path,
    device: str = "cpu",
    on_retrain: Callable[[int, int, Retrain], None] | None = None,
    done_dirs: Sequence[Path] = (),
) -> StudyRun:
    """Run (or resume) every retrain of ``plan`` and return their results.

    Args:
        scores: The candidate scores the removals are chosen from.
        manifest: Their split (the parent of every derived split).
        reference_path: The reference checkpoint the scores were computed against.
        config: The recipe the candidate was trained with.
        plan: What the study varies.
        out_dir: The study directory (created, or resumed when its inputs are equal).
        device: Compute device.
        on_retrain: Called before each retrain with ``(position, total, retrain)``.
        done_dirs: Retrain directories computed elsewhere (:func:`run_one_retrain`, e.g. by the
            pipeline's parallel steps), adopted into the study directory before any training.

    Raises:
        ConfigError: Inputs that do not belong together (:func:`check_study_inputs`), a plan
            that does not fit the scored candidates, a reduced set too small to train, a
            directory holding another study, or a done directory of another study.

    """
    from sslmem.data.splits import manifest_dataset
    from sslmem.data.store import open_store
    from sslmem.device import resolve_device
    from sslmem.memorization.reference_cache import ReferenceLossCache

    reference = _checked_reference(scores, manifest, reference_path)
    retrains = plan_retrains(plan, scores.sample_index.size)
    full_images = manifest.training_indices("candidate").size
    for retrain in retrains:  # every reduced set must train before the first hour is spent
        budget_epochs(config.training, full_images, full_images - retrain.k, plan.budget)
    inputs = StudyInputs(
        manifest_sha256=manifest.manifest_sha256,
        scores_sha256=scores.scores_sha256,
        reference_sha256=reference.sha256,
        recipe=config.model_dump(mode="json"),
        plan=plan.model_dump(mode="json"),
    )
    out_dir = Path(out_dir)
    _open_study_dir(out_dir, inputs)
    by_name = {r.name: r for r in retrains}
    for done_dir in done_dirs:
        _adopt(
            Path(done_dir),
            out_dir,
            by_name,
            parent=manifest,
            scores=scores,
            config=config,
            plan=plan,
        )
    dataset = manifest_dataset(manifest, config.data.root)
    manifest.verify_against(dataset)
    labelled = _Labelled.load(manifest, config)
    compute = resolve_device(device)
    cache = ReferenceLossCache(open_store(out_dir / CACHE_DIR))
    rows: list[RetrainResult] = []
    points: dict[str, Any] = {}
    trained = 0
    for position, retrain in enumerate(retrains):
        row_dir = out_dir / RETRAINS_DIR / retrain.name
        done = _read_json(row_dir / ROW_FILE)
        if done is None or not (row_dir / POINTS_FILE).is_file():
            if on_retrain is not None:
                on_retrain(position, len(retrains), retrain)
            _run_one(
                retrain,
                scores=scores,
                manifest=manifest,
                reference=reference,
                dataset=dataset,
                labelled=labelled,
                config=config,
                plan=plan,
                row_dir=row_dir,
                device=compute,
                cache=cache,
            )
            trained += 1
            done = _read_json(row_dir / ROW_FILE)
        assert done is not None
        rows.append(RetrainResult(**done))
        with np.load(row_dir / POINTS_FILE) as arrays:
            points[retrain.name] = (
                arrays["sample_index"].astype(np.int64),
                arrays["sslmem"].astype(np.float64),
                arrays["removed"].astype(bool),
            )
    return StudyRun(out_dir=out_dir, rows=rows, points=points, trained=trained)


def _adopt(
    done_dir: Path,
    out_dir: Path,
    retrains: dict[str, Retrain],
    *,
    parent: SplitManifest,
    scores: CandidateScores,
    config: ExperimentConfig,
    plan: StudyPlan,
) -> bool:
    """Copy a finished retrain directory into the study; ``False``: not in this plan, skipped.

    Raises:
        ConfigError: The directory is not a finished retrain, or it is one of this plan's
            retrains computed from another split, score table or recipe.

    """
    import shutil

    from sslmem.data.splits import load_manifest
    from sslmem.models.checkpoint import read_checkpoint_metadata, training_recipe

    row = _read_json(done_dir / ROW_FILE)
    if row is None or not (done_dir / POINTS_FILE).is_file():
        raise ConfigError(
            f"{done_dir} is not a finished retrain (it lacks {ROW_FILE} or {POINTS_FILE})",
            "pass the directories the study's retrain steps wrote",
        )
    name = str(row.get("name"))
    if name not in retrains:
        logger.info("not adopting %s: retrain %s is not in this study's plan", done_dir, name)
        return False
    split = load_manifest(done_dir / SPLIT_FILE)
    derivation = split.derivation
    parent_sha = derivation.parent_manifest_sha256 if derivation else split.manifest_sha256
    full_images = parent.training_indices("candidate").size
    epochs = budget_epochs(
        config.training, full_images, full_images - retrains[name].k, plan.budget
    )
    training = config.training.model_copy(update={"epochs": epochs})
    expected_recipe = training_recipe(
        training.model_dump(mode="json"), config.model.model_dump(mode="json")
    )
    recorded = read_checkpoint_metadata(done_dir / ENCODER_FILE).metadata.get("recipe")
    differs = [
        what
        for what, same in (
            ("split", parent_sha == parent.manifest_sha256),
            ("score table", derivation is None or derivation.scores_sha256 == scores.scores_sha256),
            ("recipe", recorded == expected_recipe),
        )
        if not same
    ]
    if differs:
        raise ConfigError(
            f"retrain {name!r} in {done_dir} was computed from another {', '.join(differs)} "
            "than this study's",
            "adopt only retrains of the same split, score report and recipe",
        )
    target = out_dir / RETRAINS_DIR / name
    if (target / ROW_FILE).exists():
        return True
    staging = out_dir / RETRAINS_DIR / f".{name}.adopting"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(done_dir, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return True


def run_one_retrain(
    name: str,
    *,
    scores: CandidateScores,
    manifest: SplitManifest,
    reference_path: Path,
    config: ExperimentConfig,
    plan: StudyPlan,
    row_dir: Path,
    device: str = "cpu",
) -> RetrainResult:
    """Run the retrain ``name`` of the study alone into ``row_dir`` (a pipeline's fan-out step).

    The directory it writes (result, scores, derived split, encoder) is what
    :func:`run_retrains` writes for the same retrain, and can be adopted by it (``done_dirs``).
    The reference's losses are computed here (no shared cache).

    Raises:
        ConfigError: ``name`` is not a retrain of the plan, or the inputs do not belong
            together (:func:`check_study_inputs`).

    """
    from sslmem.data.splits import manifest_dataset
    from sslmem.device import resolve_device

    reference = _checked_reference(scores, manifest, reference_path)
    by_name = {r.name: r for r in plan_retrains(plan, scores.sample_index.size)}
    if name not in by_name:
        raise ConfigError(
            f"{name!r} is not a retrain of the study plan",
            f"use one of: {', '.join(sorted(by_name))}",
        )
    dataset = manifest_dataset(manifest, config.data.root)
    manifest.verify_against(dataset)
    _run_one(
        by_name[name],
        scores=scores,
        manifest=manifest,
        reference=reference,
        dataset=dataset,
        labelled=_Labelled.load(manifest, config),
        config=config,
        plan=plan,
        row_dir=Path(row_dir),
        device=resolve_device(device),
        cache=None,
    )
    row = _read_json(Path(row_dir) / ROW_FILE)
    assert row is not None
    return RetrainResult(**row)


@dataclass(frozen=True)
class _Labelled:
    """The labelled train/test data of the downstream evaluation, loaded once per study."""

    train: ImageDataset
    test: ImageDataset

    @classmethod
    def load(cls, manifest: SplitManifest, config: ExperimentConfig) -> _Labelled:
        from sslmem.data.datasets import load_dataset

        name = manifest.dataset.name
        return cls(
            load_dataset(name, split="train", root=config.data.root),
            load_dataset(name, split="test", root=config.data.root),
        )


def _run_one(
    retrain: Retrain,
    *,
    scores: CandidateScores,
    manifest: SplitManifest,
    reference: LoadedCheckpoint,
    dataset: ImageDataset,
    labelled: _Labelled,
    config: ExperimentConfig,
    plan: StudyPlan,
    row_dir: Path,
    device: torch.device,
    cache: ReferenceLossCache | None,
) -> None:
    """Train, evaluate and score one retrain; write its row and points last (atomically)."""
    import tempfile

    from sslmem.evaluation.evaluate import evaluate_encoder
    from sslmem.memorization.scoring import score_points
    from sslmem.models.checkpoint import load_checkpoint, recorded_augmentation
    from sslmem.training import train_encoder
    from sslmem.workflow._common import copy_atomic

    started = time.perf_counter()
    if retrain.strategy == FULL:
        split = manifest
    else:
        strategy = cast(Strategy, retrain.strategy)
        removed = select_removal(
            scores, strategy, retrain.k, draw=retrain.draw, seed=plan.draw_seed
        )
        split = derive_split(
            manifest,
            removed,
            strategy=strategy,
            draw=retrain.draw,
            seed=plan.draw_seed,
            scores_sha256=scores.scores_sha256,
            reason=_reason(retrain),
        )
    row_dir.mkdir(parents=True, exist_ok=True)
    save_manifest(split, row_dir / SPLIT_FILE)
    full_images = manifest.training_indices("candidate").size
    epochs = budget_epochs(
        config.training, full_images, split.training_indices("candidate").size, plan.budget
    )
    recipe = config.model_copy(
        update={"training": config.training.model_copy(update={"epochs": epochs})}
    )
    with tempfile.TemporaryDirectory(prefix=f"sslmem-curate-{retrain.name}-") as tmp:
        result = train_encoder(
            dataset,
            split,
            role="candidate",
            config=recipe,
            out_dir=Path(tmp),
            device=device,
            seed_override=retrain.seed,
            progress=False,
        )
        copy_atomic(result.checkpoint, row_dir / ENCODER_FILE)
    candidate = load_checkpoint(row_dir / ENCODER_FILE)
    spec, _ = recorded_augmentation(candidate, config.augmentation)
    evaluation = evaluate_encoder(
        candidate.encoder,
        labelled.train,
        labelled.test,
        config=config.evaluation,
        augment_spec=spec,
        device=device,
    )
    index = scores.sample_index
    removed_mask = ~np.isin(index, split.set_indices("candidate"))
    points = score_points(
        [candidate],
        [reference],
        dataset,
        index,
        np.where(removed_mask, "removed", "candidate").astype(object),
        scoring=config.scoring,
        augment_spec=spec,
        device=device,
        reference_cache=cache,
        manifest_sha256=manifest.manifest_sha256,
    )
    sslmem = np.asarray(points.sslmem_raw, dtype=np.float64)
    row = RetrainResult(
        name=retrain.name,
        strategy=retrain.strategy,
        k=retrain.k,
        fraction=retrain.fraction,
        draw=retrain.draw,
        seed=retrain.seed,
        manifest_sha256=split.manifest_sha256,
        encoder_sha256=candidate.sha256,
        num_train=result.num_train,
        epochs=result.epochs,
        steps=result.steps,
        final_loss=float(result.final_loss),
        knn_accuracy=float(evaluation.knn_accuracy),
        linear_probe_accuracy=float(evaluation.linear_probe_accuracy),
        mean_sslmem_remaining=float(sslmem[~removed_mask].mean()),
        mean_sslmem_removed=float(sslmem[removed_mask].mean())
        if removed_mask.any()
        else float("nan"),
        seconds=time.perf_counter() - started,
    )
    import io

    buffer = io.BytesIO()
    np.savez(buffer, sample_index=index, sslmem=sslmem, removed=removed_mask)
    atomic_write_bytes(row_dir / POINTS_FILE, buffer.getvalue())
    # The row last: its presence marks the retrain done.
    atomic_write_bytes(row_dir / ROW_FILE, (json.dumps(asdict(row), indent=2) + "\n").encode())
    logger.info(
        "curation retrain %s: kNN %.4f, probe %.4f (%d epochs, %.0f s)",
        retrain.name,
        row.knn_accuracy,
        row.linear_probe_accuracy,
        row.epochs,
        row.seconds,
    )


def _reason(retrain: Retrain) -> str:
    """The sentence a derived manifest records for why its points were removed."""
    chosen = {
        "top": f"the {retrain.k} candidates with the highest SSLMem",
        "bottom": f"the {retrain.k} candidates with the lowest SSLMem",
        "random": f"{retrain.k} candidates drawn at random (draw {retrain.draw})",
    }[retrain.strategy]
    return f"curation study: {chosen} removed from the candidate's training set"


@dataclass(frozen=True)
class StudyResult:
    """A finished curation study.

    Attributes:
        out_dir: The study directory.
        rows: One result per retrain.
        analysis: Accuracy summaries, drop tests and onion-effect shifts.
        atypicality: SSLMem against atypicality.
        files: Report file role -> path.
        trained: Retrains run by this call (the others were found done).

    """

    out_dir: Path
    rows: list[RetrainResult]
    analysis: StudyAnalysis
    atypicality: Atypicality
    files: dict[str, Path]
    trained: int


def run_study(
    *,
    report_dir: Path | str,
    manifest_path: Path | str,
    reference_path: Path | str,
    config: ExperimentConfig,
    plan: StudyPlan,
    out_dir: Path | str,
    device: str = "cpu",
    settings: RuntimeSettings | None = None,
    on_retrain: Callable[[int, int, Retrain], None] | None = None,
    done_dirs: Sequence[Path] = (),
) -> StudyResult:
    """Run (or resume) a curation study and write its report into ``out_dir``.

    ``sslmem curate`` and the curation pipeline's analysis step call this.

    Args:
        report_dir: The candidate's score report directory (``sslmem score --out``).
        manifest_path: The split it was scored on (path or store URI).
        reference_path: The reference checkpoint it was scored against.
        config: The recipe the candidate was trained with (retrains use it; with
            ``plan.budget == "steps"`` only the epochs change).
        plan: What the study varies.
        out_dir: The study directory.
        device: Compute device (``cpu``, ``cuda``, ``auto``).
        settings: Runtime settings (for a manifest in the object store).
        on_retrain: Called before each retrain with ``(position, total, retrain)``.
        done_dirs: Retrains computed elsewhere, adopted first (see :func:`run_retrains`).

    Raises:
        ConfigError: See :func:`run_retrains`.
        DataError: The score report is unusable.

    """
    from sslmem.curation.atypicality import reference_atypicality
    from sslmem.curation.statistics import spearman_with_ci
    from sslmem.data.splits import load_manifest, manifest_dataset
    from sslmem.device import resolve_device
    from sslmem.models.checkpoint import load_checkpoint, recorded_augmentation

    scores = read_candidate_scores(report_dir)
    manifest = load_manifest(manifest_path, settings)
    run = run_retrains(
        scores=scores,
        manifest=manifest,
        reference_path=Path(reference_path),
        config=config,
        plan=plan,
        out_dir=Path(out_dir),
        device=device,
        on_retrain=on_retrain,
        done_dirs=done_dirs,
    )
    dataset = manifest_dataset(manifest, config.data.root)
    reference = load_checkpoint(reference_path)
    spec, _ = recorded_augmentation(reference, config.augmentation)
    atypicality = reference_atypicality(
        reference.encoder,
        dataset.images,
        scores.sample_index,
        manifest.training_indices("reference"),
        augment_spec=spec,
        k=plan.atypicality_k,
        device=resolve_device(device),
    )
    measured = Atypicality(
        sample_index=scores.sample_index,
        sslmem=scores.sslmem,
        atypicality=atypicality,
        k=plan.atypicality_k,
        correlation=spearman_with_ci(atypicality, scores.sslmem),
    )
    rows = [asdict(row) for row in run.rows]
    analysis = analyse(rows, run.points, plan)
    files = write_report(
        run.out_dir,
        analysis=analysis,
        atypicality=measured,
        plan=plan,
        rows=rows,
        images=dataset.images.cpu().numpy(),
        inputs=json.loads((run.out_dir / INPUTS_FILE).read_text()),
    )
    return StudyResult(run.out_dir, run.rows, analysis, measured, files, run.trained)


def retrain_names(report_dir: Path | str, plan: StudyPlan) -> list[str]:
    """The names of the study's retrains for a score report (the pipeline's fan-out list).

    Raises:
        DataError: The score report is unusable.
        ConfigError: The plan does not fit its scored candidates.

    """
    scores = read_candidate_scores(report_dir)
    return [retrain.name for retrain in plan_retrains(plan, scores.sample_index.size)]
