"""Pay for each reference once: its per-point alignment losses, cached in the object store.

SSLMem is the references' alignment loss minus the candidates' (Eq. 2), and the references of
a registered model rarely change between versions, so half of every version's forwards -- and
all the extra forwards of re-scoring a champion under a candidate's protocol -- recompute the
same numbers. :class:`ReferenceLossCache` keeps them, per point, in the object store, under a
key derived from *everything* they depend on (:class:`ReferenceLossKey`): the reference
checkpoints' sha256, the split manifest, the points (their dataset indices and pixels), the
augmentation, the view seed, K, the layer, the estimator, mode and distance, the batching, the
precision, device type, processor and thread count (float sums are ordered per machine and
thread count: docs/scoring.md, "What is reproducible"), and the sslmem and torch versions.
Any change gives another key, so an entry is never used for anything but what it was computed
from.

A hit gives bit-identical scores to a miss: a miss computes the references alone (each
encoder's losses depend only on its own forwards of the shared, seeded views) and stores the
exact float32 values. An entry that does not parse, whose payload does not match its checksum,
or whose recorded key is not the one asked for (a foreign or colliding object) is ignored and
rewritten. Entries are written in one ``put`` (atomic on both stores). The cache is an
optimisation: a store that cannot be read or written only costs the forwards (logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from sslmem import __version__
from sslmem.augment import AugmentationSpec
from sslmem.config import ScoringConfig
from sslmem.errors import StoreError

if TYPE_CHECKING:
    from sslmem.data.store import ObjectStore

__all__ = ["DEFAULT_PREFIX", "ReferenceLossCache", "ReferenceLossKey", "points_sha256"]

logger = logging.getLogger(__name__)

#: Where the entries live in the object store.
DEFAULT_PREFIX = "cache/reference-alignment"
_MAGIC = b"sslmem-reference-losses-v1\n"


def points_sha256(indices: np.ndarray[Any, Any], images: torch.Tensor) -> str:
    """sha256 of the scored points: their dataset indices (seed the views) and their pixels."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(indices, dtype="<i8").tobytes())
    digest.update(images.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


class ReferenceLossKey(BaseModel):
    """Everything the references' per-point alignment losses depend on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference_sha256: tuple[str, ...]
    manifest_sha256: str
    points_sha256: str
    n_points: int
    augmentation: dict[str, Any]
    layer: str
    views: int
    mode: str
    distance: str
    estimator: str
    seed: int
    chunk_size: int
    view_batch: int
    precision: str
    device_type: str
    machine: str
    threads: int
    sslmem_version: str
    torch_version: str

    @classmethod
    def build(
        cls,
        *,
        reference_sha256: Sequence[str],
        manifest_sha256: str,
        indices: np.ndarray[Any, Any],
        images: torch.Tensor,
        scoring: ScoringConfig,
        augment_spec: AugmentationSpec,
        precision: str,
        device: torch.device,
    ) -> ReferenceLossKey:
        """The key of the references' losses on ``indices`` (``images`` are those points)."""
        return cls(
            reference_sha256=tuple(reference_sha256),
            manifest_sha256=manifest_sha256,
            points_sha256=points_sha256(indices, images),
            n_points=len(indices),
            augmentation=augment_spec.model_dump(mode="json"),
            layer=scoring.layer,
            views=scoring.views,
            mode=scoring.mode,
            distance=scoring.distance,
            estimator=scoring.estimator,
            seed=scoring.seed,
            chunk_size=scoring.chunk_size,
            view_batch=scoring.view_batch,
            precision=precision,
            device_type=device.type,
            machine=_machine(device),
            threads=torch.get_num_threads(),
            sslmem_version=__version__,
            torch_version=torch.__version__,
        )

    def digest(self) -> str:
        """sha256 of the canonical JSON of the key (the object's name)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _machine(device: torch.device) -> str:
    """The processor the losses were computed on (float sums are ordered per machine)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return platform.machine() or "unknown"


class ReferenceLossCache:
    """Reference alignment losses ``float32 [n references, N points]`` in an object store.

    Args:
        store: The object store (the service's ``SSLMEM_STORE_URI``).
        prefix: Key prefix of the entries.
    """

    def __init__(self, store: ObjectStore, prefix: str = DEFAULT_PREFIX) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"ReferenceLossCache({self.store!r}, prefix={self.prefix!r})"

    def object_key(self, key: ReferenceLossKey) -> str:
        """The object holding ``key``'s losses."""
        return f"{self.prefix}/{key.digest()}.bin"

    def load(self, key: ReferenceLossKey) -> torch.Tensor | None:
        """The cached losses of ``key``; ``None`` when absent, unreadable, corrupt or foreign."""
        name = self.object_key(key)
        try:
            data = self.store.get_bytes(name)
        except StoreError as exc:  # absent, or the store is unavailable: compute instead
            logger.debug("reference cache miss %s: %s", name, exc.problem)
            return None
        losses = _decode(data, key)
        if losses is None:
            logger.warning("ignoring a corrupt or foreign reference cache entry %s", name)
        return losses

    def save(self, key: ReferenceLossKey, losses: torch.Tensor) -> None:
        """Store ``losses`` under ``key`` in one atomic put (failures are logged, not raised)."""
        try:
            self.store.put_bytes(self.object_key(key), _encode(key, losses))
        except StoreError as exc:
            logger.warning("could not write the reference cache: %s", exc.problem)


def _encode(key: ReferenceLossKey, losses: torch.Tensor) -> bytes:
    payload = np.ascontiguousarray(losses.detach().cpu().numpy(), dtype="<f4").tobytes()
    header = {
        "key": key.model_dump(mode="json"),
        "shape": list(losses.shape),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    return _MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def _decode(data: bytes, key: ReferenceLossKey) -> torch.Tensor | None:
    if not data.startswith(_MAGIC):
        return None
    header_line, sep, payload = data[len(_MAGIC) :].partition(b"\n")
    if not sep:
        return None
    try:
        header = json.loads(header_line)
        stored_key = ReferenceLossKey.model_validate(header["key"])
        shape = [int(n) for n in header["shape"]]
        checksum = str(header["payload_sha256"])
    except (ValueError, KeyError, TypeError, ValidationError):
        return None
    expected_shape = [len(key.reference_sha256), key.n_points]
    if stored_key != key or shape != expected_shape:
        return None  # another key's entry under this name (or a hand-placed object)
    if hashlib.sha256(payload).hexdigest() != checksum or len(payload) != 4 * shape[0] * shape[1]:
        return None
    values = np.frombuffer(payload, dtype="<f4").reshape(shape).astype(np.float32)
    return torch.from_numpy(values)
