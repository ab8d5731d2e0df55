"""What a registered version needs to be scored, read from its tags in one place.

Every reader of a version's scoring inputs (the service, ``sslmem register``'s checks) goes
through :func:`scoring_inputs_from_tags`, so a change of the tag schema touches this module only.

The inputs are bound to the version before anything is read (:func:`check_bound_inputs`): its
accuracies are finite numbers in [0, 1], every location it makes the scorer read (both encoders'
weights, the split manifest, the dataset the manifest names) lies in the configured stores
(:func:`read_policy`), and its reference belongs to a model in the service's scope. A score run
is used only once it is shown to have scored the version's checkpoint
(:func:`~sslmem.tracking.tags.check_score_binding`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sslmem.augment import AugmentationSpec
from sslmem.data.uri_policy import UriPolicy
from sslmem.errors import TrackingError
from sslmem.tracking import tags as T

if TYPE_CHECKING:
    from sslmem.config import RuntimeSettings
    from sslmem.data.splits import SplitManifest
    from sslmem.workflow.scope import ModelScope

__all__ = [
    "ALLOWED_URI_SETTING",
    "MissingProvenanceError",
    "ScoringInputs",
    "check_bound_inputs",
    "read_policy",
    "read_scoring_inputs",
    "scoring_inputs_from_tags",
]

logger = logging.getLogger(__name__)

#: The setting that extends :func:`read_policy` (named in every refusal).
ALLOWED_URI_SETTING = "SSLMEM_SERVICE_ALLOWED_URI_PREFIXES"
#: Always readable: MLflow's proxied artifact store (``mlflow-artifacts:/``, the tracking
#: server's own ``--artifacts-destination``) and registry URIs it resolves itself.
MLFLOW_LOCATIONS = ("mlflow-artifacts:/", "models:/", "runs:/")


class MissingProvenanceError(TrackingError):
    """A version lacks (or has invalid) provenance tags; :attr:`missing` names them."""

    def __init__(self, name: str, version: str, missing: list[str], detail: str = "") -> None:
        self.missing = missing
        what = f"lacks the provenance tag(s) {', '.join(missing)}" if missing else detail
        super().__init__(
            f"model {name!r} version {version} {what}",
            "register the encoder with `sslmem register --reference models:/NAME/N --split URI` "
            "(or tag the version with those tags)",
        )


@dataclass(frozen=True)
class ScoringInputs:
    """The provenance a candidate version is scored with.

    Attributes:
        name: Registered model name of the candidate.
        version: Its version number.
        reference_name: Registered model of the reference encoder (default: ``name``).
        reference_version: The reference's resolved version number.
        split_manifest_uri: Where the split manifest is stored.
        split_manifest_sha256: The manifest's hash (checked when it is loaded).
        augmentation: The augmentation the encoders were trained and are scored with.
        layer: The representation layer SSLMem is computed on.
        seed: The candidate's training seed.

    """

    name: str
    version: str
    reference_name: str
    reference_version: str
    split_manifest_uri: str
    split_manifest_sha256: str
    augmentation: AugmentationSpec
    layer: str
    seed: int

    @property
    def reference_uri(self) -> str:
        """``models:/<reference name>/<reference version>``."""
        return f"models:/{self.reference_name}/{self.reference_version}"


def scoring_inputs_from_tags(name: str, version: str, tags: Mapping[str, str]) -> ScoringInputs:
    """Parse a version's scoring inputs from its tags.

    Raises:
        MissingProvenanceError: Tags are absent (all are named) or invalid.

    """
    missing = T.missing_provenance(tags)
    if missing:
        raise MissingProvenanceError(name, version, missing)
    try:
        provenance = T.parse_provenance(tags)
        augmentation = T.provenance_augmentation(tags)
        seed = int(provenance[T.SEED_FIELD])
        layer = str(provenance[T.LAYER])
        reference_version = T.check_version_number(tags[T.REFERENCE_VERSION], T.REFERENCE_VERSION)
    except (ValueError, TypeError, TrackingError) as exc:
        detail = exc.problem if isinstance(exc, TrackingError) else str(exc).splitlines()[0]
        raise MissingProvenanceError(
            name, version, [], f"has invalid provenance tags: {detail}"
        ) from None
    return ScoringInputs(
        name=name,
        version=str(version),
        reference_name=tags.get(T.REFERENCE_MODEL) or name,
        reference_version=reference_version,
        split_manifest_uri=tags[T.SPLIT_MANIFEST_URI],
        split_manifest_sha256=tags[T.SPLIT_MANIFEST_SHA256],
        augmentation=augmentation,
        layer=layer,
        seed=seed,
    )


def read_scoring_inputs(name: str, version: str) -> ScoringInputs:
    """Read a version's tags from MLflow and parse its scoring inputs.

    Raises:
        MissingProvenanceError: Provenance tags are absent or invalid.
        TrackingError: No such version, or MLflow is unreachable.

    """
    from sslmem.tracking import get_version_tags

    return scoring_inputs_from_tags(name, str(version), get_version_tags(name, version))


@functools.lru_cache(maxsize=8)
def _mlflow_artifact_root(tracking_uri: str) -> str | None:
    """The tracking server's default artifact root (that of experiment ``0``, one level up)."""
    from sslmem.tracking.connection import client, is_not_found, tracking_errors

    try:
        with tracking_errors("read the default experiment's artifact location"):
            location = str(client().get_experiment("0").artifact_location or "")
    except TrackingError as exc:
        if is_not_found(exc):
            return None
        raise
    root, sep, last = location.rstrip("/").rpartition("/")
    return root if sep and last == "0" and root not in ("", "file:", "file://") else None


def read_policy(runtime: RuntimeSettings, extra: Iterable[str] = ()) -> UriPolicy:
    """The locations a scorer may read: the configured stores, plus ``extra``.

    The object store (``SSLMEM_STORE_URI``), MLflow's artifact stores (the proxied
    ``mlflow-artifacts:/``, the tracking server's default artifact root, a local tracking
    store's artifact directory) and ``extra`` (``SSLMEM_SERVICE_ALLOWED_URI_PREFIXES``).

    Raises:
        TrackingError: MLflow is unreachable (its artifact root is asked once per process).
        UriNotAllowedError: An ``extra`` entry is not a plain location.

    """
    from sslmem.tracking.connection import current_target

    target = current_target()
    store = str(runtime.store_uri)
    if "://" not in store:  # a local store, possibly relative to the working directory
        store = os.path.abspath(store)
    prefixes = [store, *MLFLOW_LOCATIONS]
    if target.artifact_root is not None:
        prefixes.append(str(target.artifact_root))
    root = _mlflow_artifact_root(target.tracking_uri)
    if root is not None:
        prefixes.append(root)
    policy = UriPolicy.of(prefixes)
    return UriPolicy(
        policy.prefixes + UriPolicy.of(extra, setting=ALLOWED_URI_SETTING).prefixes,
        ALLOWED_URI_SETTING,
    )


def _weights_location(name: str, version: str) -> str | None:
    """Where MLflow will download a version's weights from (``None``: no such version)."""
    from sslmem.tracking.connection import client, is_not_found, tracking_errors

    try:
        with tracking_errors(f"resolve the artifact location of model {name!r} version {version}"):
            return str(client().get_model_version_download_uri(name, version))
    except TrackingError as exc:
        if is_not_found(exc):
            return None  # the loader reports the missing version as such
        raise


def check_bound_inputs(
    inputs: ScoringInputs,
    tags: Mapping[str, str],
    *,
    policy: UriPolicy,
    runtime: RuntimeSettings,
    scope: ModelScope | None = None,
) -> SplitManifest:
    """Check that a version's inputs are bound to it, before anything is read; the manifest.

    In order: the accuracy tags are finite numbers in [0, 1]; the reference's model is in
    ``scope``; the candidate's and the reference's weights (where MLflow resolves their
    download) and the split manifest lie under ``policy``; then the manifest is read and the
    dataset it names must lie under ``policy`` too (registry names such as ``bundled`` are
    the service's own data and always allowed).

    Args:
        inputs: The version's scoring inputs (:func:`scoring_inputs_from_tags`).
        tags: The version's tags.
        policy: The readable locations (:func:`read_policy`).
        runtime: Runtime settings (the object store's credentials, for the manifest).
        scope: The service's model scope (``None``: no scope check of the reference).

    Returns:
        The split manifest, verified.

    Raises:
        InvalidInputError: An accuracy tag is invalid, or the reference is out of scope.
        UriNotAllowedError: A location lies outside ``policy``.
        DataError: The manifest is invalid (the message never copies its content).
        StoreError: The manifest cannot be read (transient or missing).
        TrackingError: MLflow is unreachable.

    """
    from sslmem.data.splits import load_manifest

    for key in T.ACCURACY_TAGS:
        T.parse_accuracy(tags, key)
    if scope is not None and not scope.allows(inputs.reference_name):
        raise T.InvalidInputError(
            f"the reference model {inputs.reference_name!r} (tag {T.REFERENCE_MODEL}) is not "
            "managed by sslmem",
            f"tag it {T.MANAGED}={T.MANAGED_VALUE} (`sslmem models opt-in NAME`) or add it to "
            "SSLMEM_SERVICE_MODELS",
        )
    for role, (model, number) in (
        ("candidate", (inputs.name, inputs.version)),
        ("reference", (inputs.reference_name, inputs.reference_version)),
    ):
        location = _weights_location(model, number)
        if location is not None:
            policy.check(location, f"the {role}'s weights (model version source)")
    policy.check(inputs.split_manifest_uri, f"the split manifest URI (tag {T.SPLIT_MANIFEST_URI})")
    manifest = load_manifest(inputs.split_manifest_uri, runtime)
    dataset = manifest.dataset.name
    if "://" in dataset or dataset.startswith("/"):
        policy.check(dataset, "the dataset the split manifest names")
    return manifest
