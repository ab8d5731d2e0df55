"""Tiny registered encoder pairs for the service tests (real MLflow, real scoring)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslmem.augment import AugmentationSpec
from sslmem.config import RuntimeSettings, SplitConfig
from sslmem.data import load_dataset, make_split, save_manifest
from sslmem.models import save_checkpoint
from sslmem.service.settings import ServiceSettings
from tests.tracking.conftest import tiny_registry_encoder

if TYPE_CHECKING:
    from sslmem.memorization.scoring import ScoreReport

#: Small enough to score in seconds on a CPU: 8 S_C points, K = 2 views, 8 S_S points.
FAST_SCORING = ["scoring.views=2", "scoring.shared_sample=8", "scoring.chunk_size=64"]


@dataclass(frozen=True)
class Encoders:
    """A split manifest (path or URI) and candidate/reference checkpoints on disk."""

    split_uri: str
    candidate: Path
    other_candidate: Path
    reference: Path


def make_encoders(root: Path, split_uri: str | None = None) -> Encoders:
    """Write a split (80 bundled images) and three tiny checkpoints under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = make_split(load_dataset("bundled"), fractions=SplitConfig(pool_size=80, seed=1))
    path = save_manifest(manifest, root / "split.json")
    checkpoints = []
    # Everything `sslmem train` records, so provenance-checked scoring accepts the pair.
    recipe = {"training": {"method": "simclr", "epochs": 1}, "model": {"arch": "small_cnn"}}
    augmentation = AugmentationSpec().model_dump(mode="json")
    for seed, name, role in ((0, "f", "candidate"), (2, "f2", "candidate"), (1, "g", "reference")):
        metadata = {
            "seed": seed,
            "role": role,
            "split_manifest_sha256": manifest.manifest_sha256,
            "recipe": recipe,
            "augmentation": augmentation,
        }
        checkpoints.append(
            save_checkpoint(
                tiny_registry_encoder(seed), root / f"{name}.safetensors", metadata=metadata
            )
        )
    return Encoders(split_uri or str(path), *checkpoints)


def register_pair(
    encoders: Encoders, runtime: RuntimeSettings, model: str = "enc", layer: str = "backbone"
) -> str:
    """Register ``encoders``' reference as ``<model>-ref`` 1 and its candidate as ``model``.

    Returns:
        The candidate's version number.

    """
    from sslmem.workflow.register_external import register_external_encoder

    register_external_encoder(
        encoders.reference, model_name=f"{model}-ref", split_uri=encoders.split_uri,
        settings=runtime,
    )  # fmt: skip
    version = register_external_encoder(
        encoders.candidate, model_name=model, split_uri=encoders.split_uri,
        reference_uri=f"models:/{model}-ref/1", layer=layer, settings=runtime,
    )  # fmt: skip
    return str(version.version)


def score_in_pipeline(
    encoders: Encoders, runtime: RuntimeSettings, version: str, out: Path, **claim: Any
) -> ScoreReport:
    """The pipeline's scoring step (components/_scoring.py) on version ``version`` of ``enc``.

    ``claim``: ``score_pair_claimed``'s claim arguments (``wait_s``, ``poll_s``, lease
    settings, ``on_publish``).
    """
    from sslmem.workflow.score_version import score_pair_claimed, service_config
    from sslmem.workflow.versions import VersionInfo

    return score_pair_claimed(
        candidate=VersionInfo("enc", version),
        out_dir=out,
        candidate_checkpoints=[encoders.candidate],
        reference_checkpoints=[encoders.reference],
        manifest_path=encoders.split_uri,
        config=service_config(service_settings()),
        reference=VersionInfo("enc-ref", "1"),
        experiment="pipeline",
        pipeline_run_id="pipeline-run-1",
        settings=runtime,
        **claim,
    )


def service_settings(**overrides: object) -> ServiceSettings:
    """Service settings with fast scoring and short leases."""
    values: dict[str, Any] = {
        "config_overrides": FAST_SCORING,
        "lease_ttl_s": 6.0,
        "lease_renew_s": 1.0,
        "reconcile_interval_s": 1.0,
        "device": "cpu",
        "replica_id": "test-replica",
    }
    values.update(overrides)
    return ServiceSettings.load(**values)


def runtime_settings(tracking_uri: str, store_uri: Path | str, **extra: object) -> RuntimeSettings:
    """Runtime settings pointing at one MLflow and one object store."""
    return RuntimeSettings(
        mlflow_tracking_uri=tracking_uri, store_uri=str(store_uri), device="cpu", **extra
    )
