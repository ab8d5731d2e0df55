"""Datasets, the SSLMem split (S_S / S_C / S_I / S_E), split manifests and object stores."""

from sslmem.data.datasets import ImageDataset, available_datasets, load_dataset
from sslmem.data.splits import SplitManifest, load_manifest, make_split, save_manifest
from sslmem.data.store import (
    LocalStore,
    ObjectStore,
    S3Store,
    open_store,
    read_bytes,
    register_store_scheme,
    write_bytes,
)

__all__ = [
    "ImageDataset",
    "LocalStore",
    "ObjectStore",
    "S3Store",
    "SplitManifest",
    "available_datasets",
    "load_dataset",
    "load_manifest",
    "make_split",
    "open_store",
    "read_bytes",
    "register_store_scheme",
    "save_manifest",
    "write_bytes",
]
