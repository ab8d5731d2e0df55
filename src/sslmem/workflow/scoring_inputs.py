"""What a registered version needs to be scored, read from its tags in one place.

Every reader of a version's scoring inputs (the service, ``sslmem register``'s checks) goes
through :func:`scoring_inputs_from_tags`, so a change of the tag schema touches this module only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sslmem.augment import AugmentationSpec
from sslmem.errors import TrackingError
from sslmem.tracking import tags as T

__all__ = [
    "MissingProvenanceError",
    "ScoringInputs",
    "read_scoring_inputs",
    "scoring_inputs_from_tags",
]


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
