"""KFP component: make the SSLMem split and store its manifest."""

from typing import NamedTuple

from kfp.dsl import Dataset, Output


def prepare_split(split_json: str, split: Output[Dataset], code_version: str = "") -> NamedTuple(  # type: ignore[valid-type]
    "PrepareOutputs", [("split_sha256", str), ("split_uri", str)]
):
    """Split the dataset into S_S / S_C / S_I / S_E, deterministically.

    Args:
        split_json: The data and split sections of the config (this task's cache key).
        split: Output: the split manifest (canonical JSON).
        code_version: The code identity, a cache-key input (recorded in the metadata).

    Returns:
        split_sha256: the manifest hash; split_uri: the manifest in the object store.

    """
    from pathlib import Path

    from sslmem import workflow
    from sslmem.config_text import config_from_json
    from sslmem.runtime import apply_process_settings

    apply_process_settings()  # process-wide: the adapter's job
    prepared = workflow.prepare_split(config_from_json(split_json), Path(split.path))
    manifest = prepared.manifest
    split.metadata.update(
        {
            "manifest_sha256": manifest.manifest_sha256,
            "manifest_uri": prepared.manifest_uri,
            "dataset": manifest.dataset.name,
            "pool_size": manifest.pool_size,
            "code_version": code_version,
        }
    )
    return (manifest.manifest_sha256, prepared.manifest_uri)
