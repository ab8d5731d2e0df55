"""The rules of ``sslmem.policy.*`` registered-model tags, pinned against hand-written values.

Each expectation is written out here (tag names, the fix a user reads, which tags count), not
derived from :mod:`sslmem.tracking.policy` itself, so a changed rule fails a test (the
mutation-testing survivors of ``tracking/policy.py`` in docs/service.md#mutation-testing).
"""

from __future__ import annotations

import pytest

from sslmem.errors import ConfigError
from sslmem.memorization.judgement import JudgementPolicy
from sslmem.tracking.policy import policy_from_tags

#: The six policy tags, in the order of JudgementPolicy's fields, as a user would type them.
ALL_TAGS = (
    "sslmem.policy.alpha, sslmem.policy.min_delta, sslmem.policy.accuracy_gain, "
    "sslmem.policy.threshold, sslmem.policy.budget_mean, sslmem.policy.budget_fraction"
)
#: What the fix suggests for a budget (default: no budget) -- a number or "none".
BUDGET_EXAMPLE = "0.1, or none for no budget"


def _error(tags: dict[str, str], defaults: JudgementPolicy | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        policy_from_tags(tags, defaults or JudgementPolicy())
    return info.value


def test_other_tags_before_a_policy_tag_do_not_end_the_reading() -> None:
    # Registered models carry other teams' tags; their order in MLflow's answer is arbitrary.
    tags = {
        "team": "vision",
        "sslmem.managed": "true",
        "sslmem.policy.alpha": "0.05",
        "owner": "alice",
        "sslmem.policy.threshold": "0.3",
    }
    policy = policy_from_tags(tags, JudgementPolicy())
    assert policy.alpha == 0.05
    assert policy.threshold == 0.3
    assert (policy.min_delta, policy.accuracy_gain) == (0.005, 0.01)  # the defaults


def test_a_cleared_budget_does_not_end_the_reading_either() -> None:
    defaults = JudgementPolicy(budget_mean=0.3, budget_fraction=0.2)
    tags = {
        "sslmem.policy.budget_mean": "none",
        "sslmem.policy.min_delta": "0.02",
        "sslmem.policy.budget_fraction": "0.5",
    }
    policy = policy_from_tags(tags, defaults)
    assert policy.budget_mean is None
    assert policy.min_delta == 0.02
    assert policy.budget_fraction == 0.5


@pytest.mark.parametrize("cleared", ["none", "NONE", " None ", "off", "Off", "", "  "])
def test_none_off_or_empty_clears_a_budget_in_any_case(cleared: str) -> None:
    defaults = JudgementPolicy(budget_mean=0.3, budget_fraction=0.2)
    policy = policy_from_tags({"sslmem.policy.budget_fraction": cleared}, defaults)
    assert policy.budget_fraction is None
    assert policy.budget_mean == 0.3


def test_an_unknown_policy_tag_lists_every_known_tag() -> None:
    error = _error({"sslmem.policy.budget": "0.2"})
    assert error.problem == "unknown judgement policy tag 'sslmem.policy.budget' (value '0.2')"
    assert error.fix == f"use one of: {ALL_TAGS}"


@pytest.mark.parametrize(
    ("tag", "value", "example"),
    [
        ("sslmem.policy.alpha", "often", "0.01"),
        ("sslmem.policy.min_delta", "inf", "0.005"),
        ("sslmem.policy.accuracy_gain", "-inf", "0.01"),
        ("sslmem.policy.threshold", "nan", "0.1"),
        ("sslmem.policy.budget_mean", "a lot", BUDGET_EXAMPLE),
        ("sslmem.policy.budget_fraction", "NaN", BUDGET_EXAMPLE),
    ],
)
def test_a_value_that_is_no_finite_number_gets_the_fields_default_as_example(
    tag: str, value: str, example: str
) -> None:
    error = _error({tag: value})
    assert error.problem == f"policy tag {tag} must be a finite number, got {value!r}"
    assert error.fix == f"set the registered-model tag {tag} to e.g. {example}"


@pytest.mark.parametrize(
    ("tag", "value", "example", "reason"),
    [
        ("sslmem.policy.alpha", "1", "0.01", "less than 1"),
        ("sslmem.policy.min_delta", "-0.5", "0.005", "greater than or equal to 0"),
        ("sslmem.policy.accuracy_gain", "1.5", "0.01", "less than or equal to 1"),
        ("sslmem.policy.budget_fraction", "-0.1", BUDGET_EXAMPLE, "greater than or equal to 0"),
    ],
)
def test_an_out_of_range_value_names_the_tag_its_value_and_an_example(
    tag: str, value: str, example: str, reason: str
) -> None:
    error = _error({tag: value})
    assert error.problem.startswith(f"policy tag {tag} = {value!r} is invalid: ")
    assert reason in error.problem
    assert error.fix == f"set the registered-model tag {tag} to e.g. {example}"
