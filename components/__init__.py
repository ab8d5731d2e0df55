"""Kubeflow Pipelines components: thin, typed wrappers over the sslmem library, one step each.

Each module holds one lightweight Python component's function; its body only translates KFP
artifacts (``.path``, ``.metadata``) into a call of :mod:`sslmem.workflow`. The runtime image
is a parameter: :func:`build_components` applies ``dsl.component(base_image=image)`` to every
function, so one compiled pipeline names one image (built from ``deploy/Dockerfile``, which has
sslmem and kfp installed -- no packages are installed at runtime).
"""

import re
from dataclasses import dataclass
from typing import Any

from sslmem import __version__
from sslmem.components.curation_retrain import curation_retrain
from sslmem.components.curation_study import curation_study
from sslmem.components.evaluate_encoder import evaluate_encoder
from sslmem.components.finalize_run import finalize_run
from sslmem.components.identify_code import identify_code
from sslmem.components.merge_score_shards import merge_score_shards
from sslmem.components.plan_curation import plan_curation
from sslmem.components.plan_score_shards import plan_score_shards
from sslmem.components.prepare_split import prepare_split
from sslmem.components.register_model import register_model
from sslmem.components.resolve_config import resolve_config
from sslmem.components.score_memorization import score_memorization
from sslmem.components.score_shard import score_shard
from sslmem.components.train_encoder import train_encoder
from sslmem.errors import ConfigError

IMAGE_REPOSITORY = "ghcr.io/sslmem/sslmem"
#: The image ``deploy/Dockerfile`` builds for this version of sslmem.
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{re.sub(r'[^A-Za-z0-9_.-]', '-', __version__)}"
# [registry[:port]/]path[:tag][@sha256:digest], lower-case path (the Docker reference grammar).
_IMAGE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


@dataclass(frozen=True)
class Components:
    """The pipeline's components, all built for one runtime image."""

    image: str
    identify_code: Any
    resolve_config: Any
    prepare_split: Any
    train_encoder: Any
    evaluate_encoder: Any
    register_model: Any
    score_memorization: Any
    plan_score_shards: Any
    score_shard: Any
    merge_score_shards: Any
    finalize_run: Any
    plan_curation: Any
    curation_retrain: Any
    curation_study: Any


def check_image(image: str) -> str:
    """Return ``image`` if it is a valid container image reference.

    Raises:
        ConfigError: Not a valid reference (names ``--image``).

    """
    if not _IMAGE.match(image):
        raise ConfigError(
            f"--image: {image!r} is not a valid container image reference",
            f"use e.g. {DEFAULT_IMAGE} or registry.example.com/team/sslmem@sha256:<digest>",
        )
    return image


def build_components(image: str = DEFAULT_IMAGE) -> Components:
    """Build every component for the runtime ``image``.

    Args:
        image: Container image with sslmem installed (default :data:`DEFAULT_IMAGE`).

    Raises:
        ConfigError: ``image`` is not a valid image reference.

    """
    from kfp import dsl

    check_image(image)

    def build(func: Any) -> Any:
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return Components(
        image=image,
        identify_code=build(identify_code),
        resolve_config=build(resolve_config),
        prepare_split=build(prepare_split),
        train_encoder=build(train_encoder),
        evaluate_encoder=build(evaluate_encoder),
        register_model=build(register_model),
        score_memorization=build(score_memorization),
        plan_score_shards=build(plan_score_shards),
        score_shard=build(score_shard),
        merge_score_shards=build(merge_score_shards),
        finalize_run=build(finalize_run),
        plan_curation=build(plan_curation),
        curation_retrain=build(curation_retrain),
        curation_study=build(curation_study),
    )


__all__ = [
    "DEFAULT_IMAGE",
    "Components",
    "build_components",
    "check_image",
    "curation_retrain",
    "curation_study",
    "evaluate_encoder",
    "finalize_run",
    "identify_code",
    "merge_score_shards",
    "plan_curation",
    "plan_score_shards",
    "prepare_split",
    "register_model",
    "resolve_config",
    "score_memorization",
    "score_shard",
    "train_encoder",
]
