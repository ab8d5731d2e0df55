"""A registered model's judgement policy, from its ``sslmem.policy.*`` tags.

The policy itself (:class:`~sslmem.memorization.judgement.JudgementPolicy`) is pure; which MLflow
tags carry it is the tracking layer's knowledge (tag names live in :mod:`sslmem.tracking.tags`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from sslmem.errors import ConfigError
from sslmem.memorization.judgement import JudgementPolicy
from sslmem.tracking import tags as T

#: Registered-model tag -> policy field (e.g. ``sslmem.policy.alpha`` -> ``alpha``).
POLICY_TAGS: dict[str, str] = {
    f"{T.POLICY_PREFIX}{name}": name for name in JudgementPolicy.model_fields
}
_NONE_VALUES = ("", "none", "off")


def policy_from_tags(tags: Mapping[str, str], defaults: JudgementPolicy) -> JudgementPolicy:
    """The policy of one registered model: ``defaults`` overridden by its ``sslmem.policy.*`` tags.

    Other tags are ignored. A budget tag set to ``none`` (or ``off``, or empty) removes a
    service-wide budget for this model.

    Args:
        tags: The registered model's tags.
        defaults: The service-wide policy.

    Returns:
        The validated policy.

    Raises:
        ConfigError: An unknown ``sslmem.policy.*`` tag, or a value that is not a number or out
            of range (the message names the tag and its value).
    """
    overrides: dict[str, Any] = {}
    for tag, raw in tags.items():
        if not tag.startswith(T.POLICY_PREFIX):
            continue
        field = POLICY_TAGS.get(tag)
        if field is None:
            raise ConfigError(
                f"unknown judgement policy tag {tag!r} (value {raw!r})",
                f"use one of: {', '.join(POLICY_TAGS)}",
            )
        text = str(raw).strip()
        if field.startswith("budget_") and text.lower() in _NONE_VALUES:
            overrides[field] = None
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError(
                f"policy tag {tag} must be a finite number, got {raw!r}",
                f"set the registered-model tag {tag} to e.g. {_example(field)}",
            )
        overrides[field] = value
    try:
        return JudgementPolicy.model_validate({**defaults.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        tag = f"{T.POLICY_PREFIX}{field}"
        raise ConfigError(
            f"policy tag {tag} = {tags.get(tag)!r} is invalid: {first['msg']}",
            f"set the registered-model tag {tag} to e.g. {_example(field)}",
        ) from None


def _example(field: str) -> str:
    value = JudgementPolicy.model_fields[field].default
    return "0.1, or none for no budget" if value is None else repr(value)
