"""Fast unit tests that kill mutants mutmut found alive in sslmem.service.webhooks.

See docs/service.md#mutation-testing; the helpers are those of test_webhooks.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sslmem.service.webhooks import (
    DeliveryIdCache,
    DeliveryOutcome,
    WebhookVerifier,
    replay_ttl_s,
    sign,
)
from tests.service.test_webhooks import NOW, SECRET, VERSION, Ledger, mlflow_delivery, verifier


def test_the_ledger_is_asked_about_each_delivery_id_itself() -> None:
    ledger = Ledger()
    v = verifier(ledger=ledger)
    first = mlflow_delivery(VERSION, delivery_id="delivery-1")
    second = mlflow_delivery({**VERSION, "version": "4"}, delivery_id="delivery-2")
    assert v.verify(*first).outcome is DeliveryOutcome.ACCEPTED
    assert v.verify(*second).outcome is DeliveryOutcome.ACCEPTED  # another id: new too
    assert ledger.ids == {"delivery-1", "delivery-2"}


def test_a_duplicate_says_which_delivery_was_seen_before() -> None:
    v = verifier()
    headers, body = mlflow_delivery(VERSION, delivery_id="delivery-7")
    assert v.verify(headers, body).outcome is DeliveryOutcome.ACCEPTED
    again = v.verify(headers, body)
    assert again.outcome is DeliveryOutcome.DUPLICATE
    assert again.reason == "delivery delivery-7 seen before"


def test_an_unreachable_ledger_names_the_kind_of_failure() -> None:
    ledger = Ledger()
    ledger.down = True
    result = verifier(ledger=ledger).verify(*mlflow_delivery(VERSION))
    assert result.outcome is DeliveryOutcome.UNAVAILABLE
    assert result.reason == "replay ledger unreachable (StoreError); MLflow will retry"


# The reasons are logged and returned to MLflow: operators read them (docs/service.md).
def _unsigned() -> tuple[dict[str, str], bytes]:
    headers, body = mlflow_delivery(VERSION)
    del headers["X-MLflow-Signature"]
    return headers, body


def _text_timestamp() -> tuple[dict[str, str], bytes]:
    headers, body = mlflow_delivery(VERSION)
    headers["X-MLflow-Timestamp"] = "yesterday"
    headers["X-MLflow-Signature"] = sign(SECRET, headers["X-MLflow-Delivery-Id"], "yesterday", body)
    return headers, body


@pytest.mark.parametrize(
    ("delivery", "outcome", "reason"),
    [
        (
            lambda: mlflow_delivery(VERSION, secret="wrong"),
            DeliveryOutcome.FORGED,
            "signature does not match",
        ),
        (
            _unsigned,
            DeliveryOutcome.UNSIGNED,
            "missing X-MLflow-Signature, X-MLflow-Timestamp or X-MLflow-Delivery-Id",
        ),
        (_text_timestamp, DeliveryOutcome.STALE, "timestamp is not unix seconds"),
        (
            lambda: mlflow_delivery(VERSION, timestamp=int(NOW) - 400),
            DeliveryOutcome.STALE,
            "timestamp +400 s from now (window ±300 s)",
        ),
        (
            lambda: mlflow_delivery(VERSION, delivery_id="d" * 129),
            DeliveryOutcome.MALFORMED,
            "delivery id too long",
        ),
    ],
    ids=["forged", "unsigned", "text-timestamp", "stale", "long-id"],
)
def test_each_refusal_says_why(
    delivery: Callable[[], tuple[dict[str, str], bytes]], outcome: DeliveryOutcome, reason: str
) -> None:
    result = verifier().verify(*delivery())
    assert (result.outcome, result.reason, result.event) == (outcome, reason, None)


def test_unconfigured_and_oversized_say_how_to_fix_it() -> None:
    headers, body = mlflow_delivery(VERSION)
    unconfigured = WebhookVerifier(None, clock=lambda: NOW).verify(headers, body)
    assert unconfigured.reason == (
        "no webhook secret is configured; set SSLMEM_SERVICE_WEBHOOK_SECRET(_FILE)"
    )
    oversized = verifier(max_body_bytes=len(body) - 1).verify(headers, body)
    assert oversized.reason == f"body over {len(body) - 1} bytes"


def test_limits_are_inclusive() -> None:
    headers, body = mlflow_delivery(VERSION, delivery_id="d" * 128)  # the longest id allowed
    assert verifier(max_body_bytes=len(body)).verify(headers, body).outcome is (
        DeliveryOutcome.ACCEPTED
    )


def test_replay_ttl_covers_the_whole_window_plus_the_margin() -> None:
    assert replay_ttl_s(300.0) == 2 * 300.0 + 60.0
    assert verifier().replay_ttl_s == 660.0


@pytest.mark.parametrize(("max_size", "ttl_s"), [(0, 10.0), (1, 0.0), (1, -1.0)])
def test_delivery_id_cache_refuses_empty_sizes_and_ttls(max_size: int, ttl_s: float) -> None:
    with pytest.raises(ValueError, match=r"^max_size must be >= 1 and ttl_s > 0$"):
        DeliveryIdCache(max_size, ttl_s)


def test_delivery_id_cache_of_one_id_for_half_a_second_works() -> None:
    now = [0.0]
    cache = DeliveryIdCache(1, 0.5, clock=lambda: now[0])
    assert cache.add("a") and not cache.add("a")
    assert cache.add("b") and cache.add("a")  # one id only: "b" evicted "a"
