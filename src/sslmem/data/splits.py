"""The SSLMem split: shared S_S, candidate S_C, independent S_I and extra S_E.

Wang et al. (ICLR 2024, Sec. 3) split the training set once, deterministically, into four
disjoint sets: the candidate encoder f trains on S_S ∪ S_C, the reference encoder g on
S_S ∪ S_I, and S_E is seen by neither. A :class:`SplitManifest` records the split (indices, seed,
fractions) together with the content hash of the dataset it was made from, so a split can never
silently be applied to other data. Its JSON form is canonical: the same inputs give the same bytes
and hence the same ``manifest_sha256``, which scores cite as provenance.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from sslmem.atomic import atomic_write_bytes
from sslmem.config import RuntimeSettings, SplitConfig
from sslmem.data.datasets import ImageDataset
from sslmem.errors import ConfigError, DataError, ManifestMismatchError, StoreError

SetName = Literal["shared", "candidate", "independent", "extra"]
Role = Literal["candidate", "reference"]
SET_NAMES: tuple[SetName, ...] = ("shared", "candidate", "independent", "extra")
# Which sets each encoder trains on (SSLMem protocol): f on S_S ∪ S_C, g on S_S ∪ S_I.
_TRAINING_SETS: dict[str, tuple[SetName, SetName]] = {
    "candidate": ("shared", "candidate"),
    "reference": ("shared", "independent"),
}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetRef(_Frozen):
    """The dataset a split was made from."""

    name: str
    split: str
    num_samples: int = Field(ge=1)
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SplitFractions(_Frozen):
    """Requested fractions of the pool per set."""

    shared: float
    candidate: float
    independent: float
    extra: float


class SplitIndices(_Frozen):
    """Dataset indices of each set, sorted ascending."""

    shared: tuple[int, ...]
    candidate: tuple[int, ...]
    independent: tuple[int, ...]
    extra: tuple[int, ...]


class Derivation(_Frozen):
    """How a derived split was made from its parent: which candidates were removed, and why.

    A curation study (:mod:`sslmem.curation`) removes some candidates (S_C) and retrains the
    candidate encoder without them. Only S_C shrinks: S_S, S_I and S_E stay the parent's, so the
    parent's reference encoder (S_S ∪ S_I) is valid for the derived split too.

    Attributes:
        parent_manifest_sha256: The split the points were removed from.
        removed: Sorted dataset indices taken out of S_C.
        strategy: How they were chosen (``top``/``bottom``/``random`` by SSLMem).
        k: How many (equals ``len(removed)``).
        draw: The random draw (``random`` only; 0 otherwise).
        seed: The seed of the random draws.
        scores_sha256: SHA-256 of the score table the choice was made from.
        reason: One sentence a reader of the manifest understands.

    """

    parent_manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    removed: tuple[int, ...]
    strategy: Literal["top", "bottom", "random"]
    k: int = Field(ge=1)
    draw: int = Field(ge=0)
    seed: int
    scores_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    reason: str


class _ManifestBody(_Frozen):
    """Everything in a manifest except its own hash."""

    format_version: Literal[1] = 1
    dataset: DatasetRef
    seed: int
    fractions: SplitFractions
    pool_size: int = Field(ge=4)
    indices: SplitIndices
    # Absent (not null) in a split made by make_split, so hashes of such splits never change.
    derivation: Derivation | None = None

    def content(self) -> dict[str, Any]:
        """The hashed JSON content: every field but the hash; ``derivation`` only when set."""
        exclude = {"manifest_sha256"} | ({"derivation"} if self.derivation is None else set())
        return self.model_dump(mode="json", exclude=exclude)


def _canonical_json(payload: dict[str, Any]) -> bytes:
    """Serialise with sorted keys and fixed layout, so equal content gives equal bytes."""
    text = json.dumps(payload, sort_keys=True, indent=2, separators=(",", ": "), ensure_ascii=True)
    return (text + "\n").encode("ascii")


class SplitManifest(_ManifestBody):
    """A sealed SSLMem split; ``manifest_sha256`` covers every other field.

    Construct with :func:`make_split` or :meth:`from_json`; construction re-checks the hash and
    the structure (sorted, disjoint, in-range indices covering ``pool_size`` points).

    Raises:
        ManifestMismatchError: On construction, if ``manifest_sha256`` does not match the content.

    """

    manifest_sha256: str
    # Where the manifest was read from (a path or URI), for messages; not part of the content.
    _source: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> SplitManifest:
        # The hash first: a tampered manifest is reported as tampered, not as malformed.
        actual = _body_hash(self.content())
        if actual != self.manifest_sha256:
            raise ManifestMismatchError(
                f"split manifest hash mismatch: recorded {self.manifest_sha256}, content hashes "
                f"to {actual}; the manifest was edited or corrupted",
                _recreate_fix(None, " instead of editing it"),
            )
        _check_indices(self)
        return self

    def to_json(self) -> bytes:
        """Canonical JSON bytes (sorted keys, fixed indentation, trailing newline)."""
        return _canonical_json({**self.content(), "manifest_sha256": self.manifest_sha256})

    @classmethod
    def from_json(cls, data: bytes | str, *, source: str | None = None) -> SplitManifest:
        """Parse and verify a manifest written by :meth:`to_json`.

        Args:
            data: The manifest's JSON.
            source: Where it was read from (path or URI); named in errors and remembered for
                later ones (:meth:`verify_against`).

        Raises:
            ManifestMismatchError: The hash does not match the content (tampered manifest).
            DataError: The bytes are not a valid manifest.

        """
        name = _name(source)
        try:
            payload = json.loads(data)
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{name} is not a split manifest: it is not UTF-8 text (byte {exc.start})",
                _recreate_fix(source, "; is it the right file?"),
            ) from exc
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{name} is not valid JSON ({exc})",
                _recreate_fix(source, "; is it the right file?"),
            ) from exc
        if not isinstance(payload, dict):
            raise DataError(f"{name} must be a JSON object", _recreate_fix(source))
        try:
            manifest = cls.model_validate(payload)
        except ValidationError as exc:
            # Field locations and error kinds only: the content (which reaches failure reasons
            # served over HTTP) is never copied into the message.
            where = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['type']}"
                for error in exc.errors()[:5]
            )
            raise DataError(f"{name} is malformed ({where})", _recreate_fix(source)) from None
        except ManifestMismatchError as exc:
            raise ManifestMismatchError(
                exc.problem.replace("split manifest", name, 1),
                _recreate_fix(source, " instead of editing it"),
            ) from exc
        manifest._source = source
        return manifest

    def verify_against(self, dataset: ImageDataset) -> None:
        """Check that ``dataset`` is the one this split was made from.

        Raises:
            ManifestMismatchError: The name, split, size or content hash differ.

        """
        expected = self.dataset
        actual = (dataset.name, dataset.split, len(dataset), dataset.identity_sha256)
        if actual != (expected.name, expected.split, expected.num_samples, expected.content_sha256):
            if dataset.source_sha256 is not None and dataset.name == expected.name:
                # A remote dataset under the same URI whose listing changed: the bucket changed.
                raise ManifestMismatchError(
                    f"{_name(self._source)} was made from an older listing of {expected.name}: "
                    f"its objects changed since the split (listing sha256 "
                    f"{expected.content_sha256} with {expected.num_samples} samples, now "
                    f"{dataset.source_sha256} with {len(dataset)})",
                    f"re-create the split for the current objects with `sslmem split --data "
                    f"{expected.name} --out FILE` (and retrain), or restore the old objects",
                )
            raise ManifestMismatchError(
                f"{_name(self._source)} does not match the dataset: made from "
                f"{_describe(*_fields(expected))}, got {_describe(*actual)}",
                "pass the dataset the manifest was made from (--data-root), or re-create the split "
                "for this dataset with `sslmem split --data NAME --out FILE`",
            )

    def set_indices(self, name: SetName) -> npt.NDArray[np.int64]:
        """Sorted dataset indices ``int64 [n]`` of one set.

        Raises:
            ConfigError: Unknown set name.

        """
        if name not in SET_NAMES:
            raise ConfigError(f"unknown split set {name!r}", f"use one of: {', '.join(SET_NAMES)}")
        return np.asarray(getattr(self.indices, name), dtype=np.int64)

    def training_indices(self, role: Role) -> npt.NDArray[np.int64]:
        """Sorted indices ``int64 [n]`` an encoder trains on: S_S ∪ S_C (candidate) or S_S ∪ S_I.

        Raises:
            ConfigError: Unknown role.

        """
        sets = _TRAINING_SETS.get(role)
        if sets is None:
            raise ConfigError(
                f"unknown encoder role {role!r}", f"use one of: {', '.join(_TRAINING_SETS)}"
            )
        return np.asarray(np.union1d(*(self.set_indices(s) for s in sets)), dtype=np.int64)


def _fields(ref: DatasetRef) -> tuple[str, str, int, str]:
    return ref.name, ref.split, ref.num_samples, ref.content_sha256


def _describe(name: str, split: str, num_samples: int, sha256: str) -> str:
    return f"{name!r} ({split}, {num_samples} samples, sha256 {sha256})"


def _body_hash(body: dict[str, Any]) -> str:
    # A null derivation is the same content as none: plain splits hash as they always have.
    if "derivation" in body and body["derivation"] is None:
        body = {key: value for key, value in body.items() if key != "derivation"}
    return hashlib.sha256(_canonical_json(body)).hexdigest()


def _check_indices(manifest: _ManifestBody) -> None:
    """Raise ValueError unless the sets are sorted, non-empty, disjoint and cover the pool."""
    n = manifest.dataset.num_samples
    sets = {name: np.asarray(getattr(manifest.indices, name), dtype=np.int64) for name in SET_NAMES}
    for name, idx in sets.items():
        if len(idx) == 0:
            raise ValueError(f"set {name!r} is empty")
        if np.any(np.diff(idx) <= 0) or idx[0] < 0 or idx[-1] >= n:
            raise ValueError(f"set {name!r} must hold sorted, unique indices in [0, {n})")
    removed = manifest.derivation.removed if manifest.derivation is not None else ()
    if manifest.derivation is not None and len(removed) != manifest.derivation.k:
        raise ValueError("derivation.k must equal the number of removed points")
    union = np.concatenate([*sets.values(), np.asarray(removed, dtype=np.int64)])
    if len(np.unique(union)) != len(union) or len(union) != manifest.pool_size:
        raise ValueError(
            f"sets (and removed points) must be disjoint and cover pool_size="
            f"{manifest.pool_size} points"
        )


# --------------------------------------------------------------------------------------------
# Making a split


def _largest_remainder(total: int, fractions: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Integer sizes proportional to ``fractions`` that sum exactly to ``total`` (Hamilton)."""
    quotas = np.asarray(fractions / fractions.sum() * total, dtype=np.float64)
    sizes: npt.NDArray[np.int64] = np.floor(quotas).astype(np.int64)
    # Ties go to the earlier set (stable sort), so the result is deterministic.
    order = np.argsort(-(quotas - sizes), kind="stable")
    sizes[order[: total - int(sizes.sum())]] += 1
    return sizes


def _stratified_assign(
    labels: npt.NDArray[np.int64], sizes: npt.NDArray[np.int64], rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Assign each point a group so that every group gets its share of every class.

    Points are sorted by class, randomly within a class. The group sequence interleaves the
    groups evenly (group ``g``'s ``j``-th slot sits at ``(j + 0.5) / sizes[g]`` of the way), so
    every contiguous run -- in particular each class's block -- is split in proportion to
    ``sizes`` up to one point per group, and the totals are exact.

    Args:
        labels: ``[P]`` class labels.
        sizes: ``[G]`` group sizes summing to ``P``.
        rng: Source of the within-class shuffle.

    Returns:
        ``[P]`` group ids in ``[0, G)``.

    """
    by_class = np.lexsort((rng.random(len(labels)), labels))
    groups = np.repeat(np.arange(len(sizes)), sizes)
    slots = np.concatenate([(np.arange(n) + 0.5) / n for n in sizes if n > 0])
    sequence = groups[np.lexsort((groups, slots))]
    assignment = np.empty(len(labels), dtype=np.int64)
    assignment[by_class] = sequence
    return assignment


def make_split(dataset: ImageDataset, *, fractions: SplitConfig | None = None) -> SplitManifest:
    """Split a dataset into S_S / S_C / S_I / S_E, deterministically and stratified by label.

    With ``fractions.pool_size`` set, a class-stratified random subset of that size is drawn
    first and split; the remaining points belong to no set. Set sizes follow the fractions with
    largest-remainder rounding, so they add up to the pool exactly. All randomness comes from
    ``numpy.random.Generator(PCG64(fractions.seed))``.

    Args:
        dataset: Images ``[N, C, H, W]`` and labels ``[N]``.
        fractions: Fractions, seed and optional pool size (default :class:`SplitConfig`).

    Returns:
        The sealed manifest (indices into ``dataset``, sorted within each set).

    Raises:
        DataError: The pool is larger than the dataset, or a set would be empty.

    """
    config = fractions if fractions is not None else SplitConfig()
    labels = dataset.labels.cpu().numpy().astype(np.int64)
    pool_size = config.pool_size if config.pool_size is not None else len(dataset)
    if pool_size > len(dataset) or pool_size < len(SET_NAMES):
        raise DataError(
            f"split pool_size={pool_size} does not fit dataset {dataset.name!r} with "
            f"{len(dataset)} samples",
            f"set split.pool_size between {len(SET_NAMES)} and {len(dataset)}, or leave it unset",
        )
    rng = np.random.Generator(np.random.PCG64(config.seed))
    pool = np.arange(len(dataset))
    if pool_size < len(dataset):
        keep = _largest_remainder(
            len(dataset), np.array([pool_size, len(dataset) - pool_size], dtype=np.float64)
        )
        pool = np.flatnonzero(_stratified_assign(labels, keep, rng) == 0)

    wanted = np.array([getattr(config, name) for name in SET_NAMES], dtype=np.float64)
    sizes = _largest_remainder(pool_size, wanted)
    for name, size, fraction in zip(SET_NAMES, sizes, wanted, strict=True):
        if size == 0:
            raise DataError(
                f"split set {name!r} would be empty: {fraction:g} of a pool of {pool_size} "
                "rounds to 0 points",
                f"raise split.{name}, or use a larger split.pool_size / dataset",
            )
    assignment = _stratified_assign(labels[pool], sizes, rng)
    indices = {name: pool[assignment == g].tolist() for g, name in enumerate(SET_NAMES)}

    body = _ManifestBody(
        dataset=DatasetRef(
            name=dataset.name,
            split=dataset.split,
            num_samples=len(dataset),
            content_sha256=dataset.identity_sha256,
        ),
        seed=config.seed,
        fractions=SplitFractions(**{name: getattr(config, name) for name in SET_NAMES}),
        pool_size=pool_size,
        indices=SplitIndices(**indices),
    )
    return _seal(body)


def _seal(body: _ManifestBody) -> SplitManifest:
    """The manifest of ``body`` with its hash."""
    payload = body.content()
    return SplitManifest.model_validate({**payload, "manifest_sha256": _body_hash(payload)})


def derive_split(
    parent: SplitManifest,
    removed: npt.ArrayLike,
    *,
    strategy: Literal["top", "bottom", "random"],
    draw: int,
    seed: int,
    scores_sha256: str,
    reason: str,
) -> SplitManifest:
    """The split ``parent`` with the candidates ``removed`` taken out of S_C.

    The derived manifest has its own hash and records its parent, what was removed and why
    (:class:`Derivation`); the removed points belong to no set. S_S, S_I and S_E are unchanged,
    so the reference encoder of ``parent`` is the reference of the derived split too.

    Args:
        parent: The split the candidate encoder was trained on (not itself derived).
        removed: Dataset indices ``[k]`` to remove; each must be in the parent's S_C.
        strategy: How they were chosen.
        draw: The random draw (0 unless ``strategy == "random"``).
        seed: The seed of the random draws.
        scores_sha256: SHA-256 of the score table they were chosen from.
        reason: One sentence recorded with them.

    Raises:
        ConfigError: ``removed`` is empty, repeats a point, names a point outside S_C, or
            would leave S_C empty; ``parent`` is itself derived.

    """
    if parent.derivation is not None:
        raise ConfigError(
            "cannot derive a split from a derived split (removals do not stack)",
            f"derive from its parent split {parent.derivation.parent_manifest_sha256}",
        )
    chosen = np.asarray(removed, dtype=np.int64).reshape(-1)
    candidates = parent.set_indices("candidate")
    if chosen.size == 0:
        raise ConfigError("no candidates to remove", "remove at least one candidate (k >= 1)")
    if np.unique(chosen).size != chosen.size:
        raise ConfigError("a candidate is listed twice for removal", "list each point once")
    outside = np.setdiff1d(chosen, candidates)
    if outside.size:
        raise ConfigError(
            f"{outside.size} point(s) to remove are not candidates (S_C) of split "
            f"{parent.manifest_sha256}, e.g. index {int(outside[0])}",
            "remove only candidates of the split the score report was made on",
        )
    if chosen.size >= candidates.size:
        raise ConfigError(
            f"removing {chosen.size} of {candidates.size} candidates leaves none to train on",
            "remove fewer candidates",
        )
    remaining = np.setdiff1d(candidates, chosen)
    indices = parent.indices.model_copy(update={"candidate": tuple(int(i) for i in remaining)})
    body = _ManifestBody(
        dataset=parent.dataset,
        seed=parent.seed,
        fractions=parent.fractions,
        pool_size=parent.pool_size,
        indices=indices,
        derivation=Derivation(
            parent_manifest_sha256=parent.manifest_sha256,
            removed=tuple(int(i) for i in np.sort(chosen)),
            strategy=strategy,
            k=int(chosen.size),
            draw=draw,
            seed=seed,
            scores_sha256=scores_sha256,
            reason=reason,
        ),
    )
    return _seal(body)


def _name(source: str | None) -> str:
    return f"split manifest {source}" if source else "split manifest"


def _recreate_fix(source: str | None, extra: str = "") -> str:
    """The fix for a bad manifest: make it again with the command that writes manifests."""
    return f"re-create it with `sslmem split --out {source or 'FILE'}`{extra}"


# --------------------------------------------------------------------------------------------
# Files


def save_manifest(manifest: SplitManifest, path: Path | str) -> Path:
    """Write the canonical JSON atomically (temp file in the same directory, then rename).

    Readers never see a half-written manifest, even if the writer dies mid-way.

    Returns:
        The path written.

    """
    target = Path(path)
    atomic_write_bytes(target, manifest.to_json())
    return target


def load_manifest(path: Path | str, settings: RuntimeSettings | None = None) -> SplitManifest:
    """Read and verify a manifest from a local path or an object-store URI (``s3://...``).

    Raises:
        StoreError: The manifest cannot be read (missing object, unreachable store).
        DataError: The manifest is malformed.
        ManifestMismatchError: The file was tampered with.

    """
    from sslmem.data.store import read_bytes  # local import: the store is optional at import

    text = str(path)
    if not text.strip():
        raise StoreError("the split manifest path is empty", "pass the file `sslmem split` wrote")
    local = None if "://" in text else Path(text).expanduser()
    if local is not None and local.is_dir():
        raise StoreError(
            f"split manifest {text} is a directory, not a file",
            f"pass the manifest file inside it (the --out file of `sslmem split`, e.g. "
            f"{local / 'split.json'})",
        )
    if local is not None and not local.exists():
        raise StoreError(
            f"split manifest {text} does not exist",
            f"check the path, or create it with `sslmem split --out {text}`",
        )
    return SplitManifest.from_json(read_bytes(path, settings), source=text)


def manifest_dataset(manifest: SplitManifest, root: str | Path | None = None) -> ImageDataset:
    """The dataset a split manifest was made from (its name and its train or test split).

    The one place that maps a manifest to its data: the CLI, the pipeline steps and the service
    all call it.

    Args:
        manifest: The split.
        root: Local directory of datasets that are not bundled (``data.root``).

    Raises:
        DataError: The dataset is unknown or not found under ``root``.

    """
    from sslmem.data.datasets import load_dataset

    return load_dataset(
        manifest.dataset.name,
        split="test" if manifest.dataset.split == "test" else "train",
        root=root,
    )
