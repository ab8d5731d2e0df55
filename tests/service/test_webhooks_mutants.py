"""Fast unit tests that kill mutants mutmut found alive in sslmem.service.webhooks.

See docs/service.md#mutation-testing; the helpers are those of test_webhooks.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from sslmem.service.webhooks import (
    MAX_JSON_DEPTH,
    DeliveryIdCache,
    DeliveryOutcome,
    WebhookVerifier,
    parse_event,
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


# --- parse_event: every refusal names its reason (the service logs it and counts the outcome) ---

_CREATED = {"name": "m", "version": "3", "source": "s3://bucket/m/3"}


def _body(payload: object) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("body", "outcome", "reason"),
    [
        (b"\xff\xfe", "malformed", "body is not UTF-8 JSON"),
        (b"{not json", "malformed", "body is not UTF-8 JSON"),
        (_body([1, 2]), "malformed", "body is not a JSON object"),
        (_body({"action": "created", "data": _CREATED}), "malformed",
         "body lacks entity, action or data"),
        (_body({"entity": "model_version", "action": "created", "data": []}), "malformed",
         "body lacks entity, action or data"),
        (_body({"entity": "registered_model", "action": "created", "data": {}}), "ignored",
         "event registered_model.created not acted on"),
        (_body({"entity": "model_version", "action": "created",
                "data": {"name": "", "version": "3"}}), "malformed",
         "model_version.created lacks name or version"),
        (_body({"entity": "model_version", "action": "created",
                "data": {"name": "m", "version": "03"}}), "malformed",
         "version is not a canonical positive number (1-10 digits)"),
        (_body({"entity": "model_version", "action": "created",
                "data": {**_CREATED, "tags": {"k": 1}}}), "malformed",
         "tags are not a string mapping"),
    ],
)  # fmt: skip
def test_each_unreadable_body_says_why(body: bytes, outcome: str, reason: str) -> None:
    result = parse_event(body, "d-1")
    assert (result.outcome.value, result.reason) == (outcome, reason)
    assert result.event is None


def test_mlflows_test_delivery_is_ignored_by_name() -> None:
    body = _body(
        {
            "entity": "model_version_alias",
            "action": "created",
            "data": {"name": "example_model", "alias": "example_alias", "version": "1"},
        }
    )
    result = parse_event(body, "d-1")
    assert (result.outcome.value, result.reason) == (
        "ignored",
        "MLflow test delivery (example_model)",
    )


def test_an_accepted_event_names_itself_and_keeps_a_string_timestamp_only() -> None:
    payload = {"entity": "model_version", "action": "created", "data": _CREATED}
    stamped = parse_event(_body({**payload, "timestamp": "2026-12-07T22:00:00Z"}), "d-1")
    assert (stamped.outcome.value, stamped.reason) == ("accepted", "model_version.created m/3")
    assert stamped.event is not None and stamped.event.sent_at == "2026-12-07T22:00:00Z"
    numeric = parse_event(_body({**payload, "timestamp": 1765144800}), "d-2")
    assert numeric.event is not None and numeric.event.sent_at == ""


def test_the_depth_limit_counts_levels_outside_strings() -> None:
    def nested(depth: int, inner: str = "0") -> bytes:
        data = '{"name": "m", "version": "3", "x": ' + "[" * depth + inner + "]" * depth + "}"
        return ('{"entity": "model_version", "action": "created", "data": ' + data + "}").encode()

    # The data object and the payload are two levels; the list nesting adds the rest.
    at_limit = parse_event(nested(MAX_JSON_DEPTH - 2), "d-1")
    assert at_limit.outcome.value == "accepted"
    over = parse_event(nested(MAX_JSON_DEPTH - 1), "d-2")
    assert (over.outcome.value, over.reason) == (
        "malformed",
        f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
    )
    # Brackets inside strings are not levels; closed levels do not add up.
    in_string = nested(MAX_JSON_DEPTH - 2, inner='"' + "[{" * 40 + '\\"]"')
    assert parse_event(in_string, "d-3").outcome.value == "accepted"
    siblings = ('{"entity": "model_version", "action": "created", "data": {"name": "m", '
                '"version": "3", "x": [' + ", ".join(["[[]]"] * 40) + "]}}").encode()  # fmt: skip
    assert parse_event(siblings, "d-4").outcome.value == "accepted"


def test_a_valid_signature_after_unusable_ones_is_found() -> None:
    """Standard Webhooks: any of the space-separated signatures may match (key rotation)."""
    headers, body = mlflow_delivery(VERSION)
    valid = headers["X-MLflow-Signature"]
    for before in ("v2,c2lnbmF0dXJl", "v1,not*base64", "v1,AAAA"):
        headers["X-MLflow-Signature"] = f"{before} {valid}"
        assert verifier().verify(headers, body).outcome is DeliveryOutcome.ACCEPTED, before


def test_a_signature_with_characters_outside_base64_is_forged() -> None:
    # A lenient decoder drops the '*' and would match: the alphabet is checked strictly.
    headers, body = mlflow_delivery(VERSION)
    version, encoded = headers["X-MLflow-Signature"].split(",", 1)
    headers["X-MLflow-Signature"] = f"{version},{encoded[:8]}*{encoded[8:]}"
    assert verifier().verify(headers, body).outcome is DeliveryOutcome.FORGED
    headers["X-MLflow-Signature"] = f"{version},{encoded},extra"
    assert verifier().verify(headers, body).outcome is DeliveryOutcome.FORGED


def test_closed_levels_do_not_hide_a_deep_one() -> None:
    deep = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    data = '{"name": "m", "version": "3", "x": [' + ", ".join(["[[]]"] * 20 + [deep]) + "]}"
    body = ('{"entity": "model_version", "action": "created", "data": ' + data + "}").encode()
    assert parse_event(body, "d-1").reason == f"JSON nested deeper than {MAX_JSON_DEPTH} levels"


def test_mistyped_fields_are_named() -> None:
    body = _body(
        {"entity": "model_version", "action": "created", "data": {**_CREATED, "source": 7}}
    )
    result = parse_event(body, "d-1")
    assert (result.outcome.value, result.reason) == (
        "malformed",
        "model_version.created has mistyped fields",
    )


def test_the_replay_cache_runs_on_the_verifiers_own_monotonic_clock() -> None:
    """Without a ledger, an id is remembered for the replay TTL of the injected clock."""
    now = [1000.0]
    v = verifier(monotonic=lambda: now[0])
    headers, body = mlflow_delivery(VERSION)
    assert v.verify(headers, body).outcome is DeliveryOutcome.ACCEPTED
    now[0] += v.replay_ttl_s - 1
    assert v.verify(headers, body).outcome is DeliveryOutcome.DUPLICATE
    now[0] += 2  # past the TTL (the wall clock, and so the signature window, stands still)
    assert v.verify(headers, body).outcome is DeliveryOutcome.ACCEPTED
