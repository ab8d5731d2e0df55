"""Step 1: the deterministic SSLMem split, stored content-addressed in the object store."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sslmem.config import ExperimentConfig, RuntimeSettings
from sslmem.data.datasets import load_dataset
from sslmem.data.splits import SplitManifest, make_split
from sslmem.data.store import open_store, write_bytes
from sslmem.outputs import check_output_uri
from sslmem.workflow._common import (
    process_settings,
)

logger = logging.getLogger(__name__)

#: Where split manifests are stored, content-addressed, in the object store.
SPLIT_STORE_PREFIX = "splits"


def split_store_key(manifest_sha256: str) -> str:
    """The object-store key of a split manifest: content-addressed by its hash."""
    return f"{SPLIT_STORE_PREFIX}/{manifest_sha256}.json"


@dataclass(frozen=True)
class PreparedSplit:
    """The split of a run and the resolved config.

    Attributes:
        manifest: The sealed split.
        manifest_path: Where the manifest was written (the step's output).
        manifest_uri: Its content-addressed copy in the object store (a version tag).
        config: The config it was made with (its ``data`` and ``split`` apply).

    """

    manifest: SplitManifest
    manifest_path: Path
    manifest_uri: str
    config: ExperimentConfig


def write_split(
    config: ExperimentConfig,
    out: Path | str,
    *,
    data_root: Path | None = None,
    settings: RuntimeSettings | None = None,
) -> SplitManifest:
    """Make the split of ``config.data`` with ``config.split`` and write its manifest to ``out``.

    ``sslmem split`` is this function; :func:`prepare_split` adds the content-addressed copy.

    Args:
        config: Experiment config (``data`` and ``split`` apply).
        out: Destination: a local path or an object-store URI (written atomically).
        data_root: Local dataset directory (default ``config.data.root``).
        settings: Runtime settings (object-store credentials; default: from the environment).

    Raises:
        OutputError: A local ``out`` that cannot be written (checked before the work).
        ConfigError, DataError: Bad dataset name or pool size (see :func:`make_split`).
        StoreError: The object store cannot be written.

    """
    settings = process_settings(settings)
    check_output_uri(out, what="manifest")
    dataset = load_dataset(config.data.dataset, split="train", root=data_root or config.data.root)
    manifest = make_split(dataset, fractions=config.split)
    write_bytes(out, manifest.to_json(), settings)
    return manifest


def prepare_split(
    config: ExperimentConfig, manifest_path: Path, *, settings: RuntimeSettings | None = None
) -> PreparedSplit:
    """:func:`write_split` to ``manifest_path``, and a copy in the object store.

    The copy is ``<store>/splits/<sha256>.json`` (``SSLMEM_STORE_URI``): content-addressed,
    so re-running never overwrites a different split.

    Raises:
        ConfigError, DataError: Bad dataset name or pool size (see :func:`make_split`).
        StoreError: The object store cannot be written.

    """
    settings = process_settings(settings)
    manifest = write_split(config, manifest_path, settings=settings)
    store = open_store(settings.store_uri, settings)
    key = split_store_key(manifest.manifest_sha256)
    if not store.exists(key):
        store.put_bytes(key, manifest.to_json())
    logger.info("split %s of %s stored at %s", manifest.manifest_sha256, config.data.dataset, key)
    return PreparedSplit(
        manifest=manifest,
        manifest_path=Path(manifest_path),
        manifest_uri=store.uri(key),
        config=config,
    )
