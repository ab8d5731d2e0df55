"""Weights-only encoder checkpoints in the safetensors format.

A checkpoint is one ``.safetensors`` file: the encoder's ``state_dict`` tensors plus a JSON
header stored in the safetensors metadata under the key ``"sslmem"``::

    {"format": "sslmem.encoder", "format_version": 1,
     "arch": "small_cnn",
     "arch_config": {"arch", "in_channels", "image_size", "arch_kwargs", "head_hidden_dim",
                     "head_output_dim"},
     "representation": {"feature_dim", "head_dim", "in_channels", "image_size"},
     "metadata": {... caller's JSON: recipe, augmentation spec, split hash, role, seed ...}}

Training records the provenance scoring checks (:func:`checkpoint_provenance`): ``role``
(``candidate`` | ``reference``), ``split_manifest_sha256``, ``recipe`` (everything that shapes the
weights except the seed: see :func:`training_recipe`), ``augmentation``, ``head_trained`` and
``seed``.

Loading never unpickles and never executes code from the file: the header is parsed as JSON,
tensors are read by safetensors, and the encoder is rebuilt from the registry by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel
from safetensors.torch import load as st_load
from safetensors.torch import save_file as st_save_file

from sslmem.atomic import atomic_path
from sslmem.augment import AugmentationSpec
from sslmem.errors import CheckpointError, ConfigError
from sslmem.models.encoder import Encoder
from sslmem.models.registry import build_encoder_from_config

FORMAT_NAME = "sslmem.encoder"
FORMAT_VERSION = 1
HEADER_KEY = "sslmem"
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class CheckpointHeader:
    """The sslmem header of a checkpoint (everything but the weights).

    Attributes:
        format_version: Checkpoint format version.
        arch: Registered architecture name.
        arch_config: Rebuild recipe (see :func:`~sslmem.models.build_encoder_from_config`).
        representation: ``{"feature_dim", "head_dim", "in_channels", "image_size"}``.
        metadata: The caller's metadata, as saved.

    """

    format_version: int
    arch: str
    arch_config: dict[str, Any]
    representation: dict[str, int]
    metadata: dict[str, Any]


#: Training-config fields left out of a recipe: the seed (candidate and reference may differ in
#: it), and settings that do not change what a run learns (checkpoint cadence, compilation,
#: deterministic kernels).
NON_RECIPE_TRAINING_KEYS = (
    "seed",
    "checkpoint_every",
    "resume_every_epochs",
    "compile",
    "deterministic",
)
#: Provenance fields a checkpoint must record to be scored without ``allow_missing_provenance``.
PROVENANCE_FIELDS = ("role", "split_manifest_sha256", "recipe", "augmentation")


def training_recipe(training: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe of a training run: what candidate and reference must share (all but seeds).

    Args:
        training: The training config as JSON (``TrainingConfig.model_dump(mode="json")``).
        model: The model config as JSON.

    Returns:
        ``{"training": training without NON_RECIPE_TRAINING_KEYS, "model": model}``.
    """
    kept = {k: v for k, v in training.items() if k not in NON_RECIPE_TRAINING_KEYS}
    return {"training": kept, "model": dict(model)}


@dataclass(frozen=True)
class Provenance:
    """What a checkpoint records about how it was made (``None``: not recorded).

    Attributes:
        role: ``"candidate"`` (trained on S_S ∪ S_C) or ``"reference"`` (S_S ∪ S_I).
        split_manifest_sha256: Hash of the split manifest it was trained on.
        recipe: :func:`training_recipe` of its run.
        augmentation: Its training augmentation spec (JSON).
        head_trained: Whether its projection head was trained (``False`` for MAE).
        method: SSL method name.
        seed: Training seed.
    """

    role: str | None
    split_manifest_sha256: str | None
    recipe: dict[str, Any] | None
    augmentation: dict[str, Any] | None
    head_trained: bool | None
    method: str | None
    seed: int | None

    @property
    def missing(self) -> list[str]:
        """The :data:`PROVENANCE_FIELDS` this checkpoint does not record."""
        return [name for name in PROVENANCE_FIELDS if getattr(self, name) is None]


def checkpoint_provenance(metadata: Mapping[str, Any]) -> Provenance:
    """Read the provenance from a checkpoint's metadata.

    Checkpoints written before ``recipe`` was recorded get it rebuilt from their ``training``
    and ``model`` entries, so earlier sslmem checkpoints remain scoreable. Values of the wrong
    type count as not recorded.
    """

    def typed(key: str, kind: type) -> Any:
        value = metadata.get(key)
        return value if isinstance(value, kind) else None

    recipe = typed("recipe", dict)
    training, model = typed("training", dict), typed("model", dict)
    if recipe is None and training is not None and model is not None:
        recipe = training_recipe(training, model)
    seed = metadata.get("seed")
    return Provenance(
        role=typed("role", str),
        split_manifest_sha256=typed("split_manifest_sha256", str),
        recipe=recipe,
        augmentation=typed("augmentation", dict),
        head_trained=typed("head_trained", bool),
        method=typed("method", str),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
    )


@dataclass(frozen=True)
class LoadedCheckpoint:
    """An encoder loaded from a checkpoint.

    Attributes:
        encoder: The rebuilt encoder with the saved weights, in eval mode.
        header: The full sslmem header.
        sha256: Hex SHA-256 of the file's bytes (exactly the bytes that were loaded).
        path: The file it was loaded from.

    """

    encoder: Encoder
    header: CheckpointHeader
    sha256: str
    path: Path

    @property
    def metadata(self) -> dict[str, Any]:
        """The caller's metadata as saved (``header.metadata``)."""
        return self.header.metadata

    @property
    def provenance(self) -> Provenance:
        """Role, split hash, recipe, augmentation ... (:func:`checkpoint_provenance`)."""
        return checkpoint_provenance(self.header.metadata)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    Raises:
        CheckpointError: The file does not exist or cannot be read.

    """
    file = Path(path)
    digest = hashlib.sha256()
    try:
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read {file}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON-serialisable")


def save_checkpoint(
    encoder: Encoder, path: str | os.PathLike[str], *, metadata: dict[str, Any]
) -> Path:
    """Save an encoder's weights and header to a safetensors file, atomically.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so readers never see a partial checkpoint. Tensors are copied to contiguous
    CPU memory (shared tensors become independent copies).

    Args:
        encoder: An encoder built by :func:`~sslmem.models.build_encoder` (it needs a complete
            ``arch_config``).
        path: Destination file (conventionally ``*.safetensors``); parent directories are
            created.
        metadata: Caller metadata (training recipe, augmentation spec, split manifest hash,
            role, seed, ...). Must be JSON-serialisable; pydantic models are dumped in JSON mode
            and paths become strings. Non-finite floats are rejected.

    Returns:
        The path written.

    Raises:
        CheckpointError: The encoder has no usable ``arch_config``, metadata is not JSON, or
            the file cannot be written.

    """
    dest = Path(path)
    keys = (
        "arch",
        "in_channels",
        "image_size",
        "arch_kwargs",
        "head_hidden_dim",
        "head_output_dim",
    )
    missing = [k for k in keys if k not in encoder.arch_config]
    if missing:
        raise CheckpointError(
            f"cannot save encoder: its arch_config lacks {missing}",
            "build encoders with sslmem.models.build_encoder so they can be rebuilt",
        )
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": encoder.arch,
        "arch_config": encoder.arch_config,
        "representation": {
            "feature_dim": encoder.feature_dim,
            "head_dim": encoder.head_dim,
            "in_channels": encoder.in_channels,
            "image_size": encoder.image_size,
        },
        "metadata": metadata,
    }
    try:
        header_json = json.dumps(header, default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint metadata for {dest} is not JSON-serialisable: {exc}",
            "pass plain JSON values (str, int, float, bool, None, lists, dicts)",
        ) from exc
    tensors = {
        name: tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for name, tensor in encoder.state_dict().items()
    }
    try:
        with atomic_path(dest) as tmp:
            st_save_file(tensors, str(tmp), metadata={HEADER_KEY: header_json})
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {dest}: {exc}") from exc
    return dest


def _corrupt(file: Path, why: str, first: bytes = b"") -> CheckpointError:
    """The error for a file that is not valid safetensors (named for what it is, if known).

    Args:
        file: For messages.
        why: What is wrong with the framing.
        first: The file's first bytes, to recognise pickles and text files.

    """
    _check_not_foreign(file, first)
    return CheckpointError(
        f"{file} is not a valid safetensors file ({why})",
        "the file is truncated or corrupt; copy or re-save the checkpoint",
    )


_PICKLE_FIX = (
    "pass the encoder.safetensors written by `sslmem train`; to convert a state_dict you "
    "trust, load it with torch.load(path, weights_only=True) into an encoder built by "
    "sslmem.models.build_encoder and write it with sslmem.models.save_checkpoint"
)


def _check_not_foreign(file: Path, first: bytes) -> None:
    """Name a pickle or text file for what it is instead of calling it corrupt.

    Only called once the safetensors framing has failed, so a valid checkpoint whose header
    length happens to look like a pickle opcode is never misjudged.

    Args:
        file: For messages.
        first: The file's first (up to 8) bytes.

    """
    # torch.save writes a ZIP archive holding a pickle (legacy: a bare pickle, protocol 2+).
    if first.startswith(b"PK\x03\x04") or (len(first) > 1 and first[0] == 0x80 and first[1] <= 5):
        raise CheckpointError(
            f"{file} is a PyTorch pickle (torch.save format), not a weights-only safetensors "
            "checkpoint; pickles are refused because loading one can run arbitrary code",
            _PICKLE_FIX,
        )
    if first and all(32 <= b < 127 or b in b"\t\n\r" for b in first):
        raise CheckpointError(
            f"{file} is a text file (it starts with {first.decode('ascii')!r}), not a "
            "safetensors checkpoint",
            "pass the encoder.safetensors written by `sslmem train` (a manifest or summary is "
            "not a checkpoint)",
        )


def _parse_header(file: Path, prefix: bytes, file_size: int) -> CheckpointHeader:
    """Validate the safetensors framing and the sslmem header.

    Args:
        file: For messages.
        prefix: The file's first ``8 + N`` bytes (or fewer if the file is shorter).
        file_size: Total size of the file in bytes.

    """
    first = prefix[:8]
    if file_size < 8:
        raise _corrupt(file, f"only {file_size} bytes", first)
    (header_len,) = struct.unpack("<Q", first)
    if header_len > _MAX_HEADER_BYTES or 8 + header_len > file_size:
        raise _corrupt(file, "header length exceeds the file size", first)
    try:
        raw = json.loads(prefix[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(file, "header is not JSON", first) from exc
    if not isinstance(raw, dict):
        raise _corrupt(file, "header is not a JSON object")
    data_end = 0
    for name, entry in raw.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
        ):
            raise _corrupt(file, f"bad entry for tensor {name!r}")
        data_end = max(data_end, offsets[1])
    if 8 + header_len + data_end != file_size:
        raise _corrupt(file, f"expected {8 + header_len + data_end} bytes, found {file_size}")
    meta = raw.get("__metadata__")
    if not isinstance(meta, dict) or HEADER_KEY not in meta:
        raise CheckpointError(
            f"{file} is a safetensors file but not an sslmem checkpoint (no {HEADER_KEY!r} header)",
            "save encoders with sslmem.models.save_checkpoint",
        )
    try:
        header = json.loads(meta[HEADER_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: the sslmem header is not valid JSON") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{file} is not an sslmem checkpoint (unknown header format)")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{file}: invalid checkpoint format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} uses checkpoint format version {version}; this sslmem reads up to "
            f"{FORMAT_VERSION}",
            "upgrade sslmem",
        )
    fields = {"arch": str, "arch_config": dict, "representation": dict, "metadata": dict}
    for key, kind in fields.items():
        if not isinstance(header.get(key), kind):
            raise CheckpointError(f"{file}: sslmem header field {key!r} is missing or invalid")
    return CheckpointHeader(
        format_version=version,
        arch=header["arch"],
        arch_config=header["arch_config"],
        representation=header["representation"],
        metadata=header["metadata"],
    )


def _check_exists(file: Path) -> None:
    if file.is_dir():
        inside = sorted(p.name for p in file.glob("*.safetensors"))[:3]
        raise CheckpointError(
            f"checkpoint {file} is a directory, not a checkpoint file",
            f"pass a file inside it: {', '.join(str(file / n) for n in inside)}"
            if inside
            else "pass the encoder.safetensors file of a training run (in its --out directory)",
        )
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint {file} does not exist", "check the path (or download it first)"
        )


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> CheckpointHeader:
    """Read a checkpoint's header without loading its weights.

    Only the header bytes are read; the file size is checked against the header, so a
    truncated file is reported here too.

    Args:
        path: A checkpoint written by :func:`save_checkpoint`.

    Returns:
        The :class:`CheckpointHeader` (caller metadata in ``.metadata``).

    Raises:
        CheckpointError: Missing file, not a safetensors file, truncated, or not an sslmem
            checkpoint (each message names the file).

    """
    file = Path(path)
    _check_exists(file)
    try:
        with file.open("rb") as handle:
            file_size = os.fstat(handle.fileno()).st_size
            first = handle.read(8)
            if len(first) < 8:
                raise _corrupt(file, f"only {len(first)} bytes", first)
            (header_len,) = struct.unpack("<Q", first)
            if header_len > _MAX_HEADER_BYTES or 8 + header_len > file_size:
                raise _corrupt(file, "header length exceeds the file size", first)
            prefix = first + handle.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {file}: {exc.strerror or exc}") from exc
    return _parse_header(file, prefix, file_size)


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Load an encoder from a checkpoint, rebuilding it from the file alone.

    The file is read once; its SHA-256 is computed over exactly the bytes loaded.

    Args:
        path: A checkpoint written by :func:`save_checkpoint`.
        map_location: Device to move the encoder to.

    Returns:
        A :class:`LoadedCheckpoint` with the encoder in eval mode.

    Raises:
        CheckpointError: Missing file, corrupt or truncated file, foreign safetensors file,
            unknown architecture, or weights that do not match the architecture.

    """
    file = Path(path)
    _check_exists(file)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {file}: {exc.strerror or exc}") from exc
    header = _parse_header(file, data, len(data))
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        state = st_load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise _corrupt(file, str(exc)) from exc
    del data
    try:
        encoder = build_encoder_from_config(header.arch_config)
    except ConfigError as exc:
        raise CheckpointError(
            f"cannot rebuild the encoder of {file}: {exc.problem}",
            exc.fix or "register the architecture before loading (import its module)",
        ) from exc
    expected = set(encoder.state_dict())
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {file} do not match architecture {header.arch!r}: "
            f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
            f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}",
            "the header and weights disagree; the file was not written by save_checkpoint "
            "or was modified",
        )
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {file} do not fit architecture {header.arch!r}: {exc}"
        ) from exc
    representation = {
        "feature_dim": encoder.feature_dim,
        "head_dim": encoder.head_dim,
        "in_channels": encoder.in_channels,
        "image_size": encoder.image_size,
    }
    if header.representation != representation:
        raise CheckpointError(
            f"{file}: header representation {header.representation} does not match the "
            f"rebuilt encoder {representation}"
        )
    encoder.to(map_location)
    encoder.eval()
    return LoadedCheckpoint(encoder=encoder, header=header, sha256=sha256, path=file)


def recorded_augmentation(
    checkpoint: LoadedCheckpoint, fallback: AugmentationSpec
) -> tuple[AugmentationSpec, Literal["checkpoint", "config"]]:
    """The augmentation an encoder was trained with (its metadata), else ``fallback``.

    The one place that reads it: scoring draws views with it, evaluation preprocesses with it.

    Returns:
        ``(spec, source)``: ``source`` says whether it came from the checkpoint or the fallback.

    Raises:
        CheckpointError: The recorded spec is invalid.

    """
    from pydantic import ValidationError

    raw = checkpoint.metadata.get("augmentation")
    if raw is None:
        return fallback, "config"
    try:
        return AugmentationSpec.model_validate(raw), "checkpoint"
    except ValidationError as exc:
        raise CheckpointError(
            f"the augmentation spec in {checkpoint.path}'s metadata is invalid: {exc}",
            "re-train the encoder, or score with the config's augmentation (--augmentation config)",
        ) from exc
