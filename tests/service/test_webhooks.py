"""Webhook verification against signatures made by MLflow's own signing function."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping

import pytest
from mlflow.entities.webhook import WebhookEvent
from mlflow.webhooks.delivery import _generate_hmac_signature
from mlflow.webhooks.types import get_example_payload_for_event
from pydantic import SecretStr

from sslmem.service.webhooks import (
    DeliveryIdCache,
    DeliveryOutcome,
    EventKind,
    WebhookVerifier,
    sign,
)

SECRET = "s3cr3t-\u00e9-value"
NOW = 1_760_000_000.0


def mlflow_delivery(
    data: Mapping[str, object],
    event: str = "model_version.created",
    *,
    secret: str = SECRET,
    timestamp: int = int(NOW),
    delivery_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body exactly as mlflow.webhooks.delivery builds them."""
    entity, action = event.split(".")
    payload_json = json.dumps(
        {"entity": entity, "action": action, "timestamp": "2026-12-01T08:00:00+00:00", "data": data}
    )
    delivery_id = delivery_id or str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": str(timestamp),
        "X-MLflow-Signature": _generate_hmac_signature(
            secret, delivery_id, str(timestamp), payload_json
        ),
    }
    return headers, payload_json.encode("utf-8")


def verifier(**kwargs: object) -> WebhookVerifier:
    options: dict[str, object] = {"max_age_s": 300.0, "clock": lambda: NOW, **kwargs}
    return WebhookVerifier(SecretStr(SECRET), **options)  # type: ignore[arg-type]


VERSION: dict[str, object] = {
    "name": "enc",
    "version": "3",
    "source": "models:/m-abc",
    "run_id": "r1",
    "tags": {"sslmem.status": "pending"},
    "description": None,
}


def test_sign_equals_mlflow_and_a_hand_computed_hmac() -> None:
    body = b'{"a": 1}'
    ours = sign("k", "id-1", "1700000000", body)
    assert ours == _generate_hmac_signature("k", "id-1", "1700000000", '{"a": 1}')
    digest = hmac.new(b"k", b'id-1.1700000000.{"a": 1}', hashlib.sha256).digest()
    assert ours == "v1," + base64.b64encode(digest).decode()


def test_accepts_mlflow_signed_version_created() -> None:
    headers, body = mlflow_delivery(VERSION)
    result = verifier().verify(headers, body)
    assert result.outcome is DeliveryOutcome.ACCEPTED and result.outcome.http_status == 202
    event = result.event
    assert event is not None
    assert (event.kind, event.name, event.version) == (EventKind.VERSION_CREATED, "enc", "3")
    assert event.source == "models:/m-abc" and event.run_id == "r1"
    assert event.tags == {"sslmem.status": "pending"}
    assert event.delivery_id == headers["X-MLflow-Delivery-Id"]


def test_headers_are_case_insensitive() -> None:
    headers, body = mlflow_delivery(VERSION)
    lowered = {key.lower(): value for key, value in headers.items()}
    assert verifier().verify(lowered, body).outcome is DeliveryOutcome.ACCEPTED


@pytest.mark.parametrize(
    ("event", "data", "expected"),
    [
        (
            "model_version_tag.set",
            {"name": "enc", "version": "4", "key": "sslmem.status", "value": "failed"},
            {"tag_key": "sslmem.status", "tag_value": "failed"},
        ),
        (
            "model_version_alias.created",
            {"name": "enc", "alias": "champion", "version": "2"},
            {"alias": "champion"},
        ),
    ],
)
def test_tag_and_alias_events(
    event: str, data: dict[str, object], expected: dict[str, str]
) -> None:
    result = verifier().verify(*mlflow_delivery(data, event))
    assert result.outcome is DeliveryOutcome.ACCEPTED and result.event is not None
    assert result.event.kind.value == event and result.event.name == "enc"
    for attribute, value in expected.items():
        assert getattr(result.event, attribute) == value


@pytest.mark.parametrize(
    "event", ["model_version.created", "model_version_tag.set", "model_version_alias.created"]
)
def test_mlflow_test_payload_is_ignored(event: str) -> None:
    example = dict(get_example_payload_for_event(WebhookEvent.from_str(event)))  # type: ignore[arg-type]
    result = verifier().verify(*mlflow_delivery(example, event))
    assert result.outcome is DeliveryOutcome.IGNORED and result.event is None
    assert result.outcome.http_status == 200


def test_real_model_named_example_model_is_not_mistaken_for_the_test() -> None:
    data = {**VERSION, "name": "example_model"}
    assert verifier().verify(*mlflow_delivery(data)).outcome is DeliveryOutcome.ACCEPTED


def test_other_events_are_ignored() -> None:
    data: dict[str, object] = {"name": "enc", "tags": {}, "description": None}
    result = verifier().verify(*mlflow_delivery(data, "registered_model.created"))
    assert result.outcome is DeliveryOutcome.IGNORED


def test_wrong_secret_is_forged() -> None:
    headers, body = mlflow_delivery(VERSION, secret="other")
    result = verifier().verify(headers, body)
    assert result.outcome is DeliveryOutcome.FORGED and result.outcome.http_status == 401
    assert SECRET not in result.reason and headers["X-MLflow-Signature"] not in result.reason


def test_altered_body_or_headers_are_forged() -> None:
    headers, body = mlflow_delivery(VERSION)
    v = verifier()
    assert v.verify(headers, body.replace(b'"3"', b'"4"')).outcome is DeliveryOutcome.FORGED
    moved = {**headers, "X-MLflow-Timestamp": str(int(NOW) + 1)}
    assert v.verify(moved, body).outcome is DeliveryOutcome.FORGED
    other_id = {**headers, "X-MLflow-Delivery-Id": str(uuid.uuid4())}
    assert v.verify(other_id, body).outcome is DeliveryOutcome.FORGED
    # Nothing forged was remembered: the genuine delivery still goes through once.
    assert v.verify(headers, body).outcome is DeliveryOutcome.ACCEPTED


@pytest.mark.parametrize(
    "signature", ["v2,AAAA", "v1,not-base64!!", "", "v1,", "garbage", "v1," + "A" * 44]
)
def test_malformed_signatures(signature: str) -> None:
    headers, body = mlflow_delivery(VERSION)
    headers["X-MLflow-Signature"] = signature
    expected = DeliveryOutcome.UNSIGNED if signature == "" else DeliveryOutcome.FORGED
    assert verifier().verify(headers, body).outcome is expected


def test_one_of_several_signatures_may_match() -> None:
    headers, body = mlflow_delivery(VERSION)
    headers["X-MLflow-Signature"] = "v1,AAAA " + headers["X-MLflow-Signature"]
    assert verifier().verify(headers, body).outcome is DeliveryOutcome.ACCEPTED


@pytest.mark.parametrize(
    "missing", ["X-MLflow-Signature", "X-MLflow-Timestamp", "X-MLflow-Delivery-Id"]
)
def test_missing_header_is_unsigned(missing: str) -> None:
    headers, body = mlflow_delivery(VERSION)
    del headers[missing]
    assert verifier().verify(headers, body).outcome is DeliveryOutcome.UNSIGNED


def test_no_secret_refuses_even_a_valid_delivery() -> None:
    headers, body = mlflow_delivery(VERSION)
    result = WebhookVerifier(None, clock=lambda: NOW).verify(headers, body)
    assert result.outcome is DeliveryOutcome.UNCONFIGURED and result.outcome.http_status == 401


@pytest.mark.parametrize(("offset", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_timestamp_window(offset: int, ok: bool) -> None:
    headers, body = mlflow_delivery(VERSION, timestamp=int(NOW) + offset)
    outcome = verifier().verify(headers, body).outcome
    assert outcome is (DeliveryOutcome.ACCEPTED if ok else DeliveryOutcome.STALE)


def test_non_numeric_timestamp_is_stale() -> None:
    headers, body = mlflow_delivery(VERSION)
    headers["X-MLflow-Timestamp"] = "yesterday"
    delivery_id = headers["X-MLflow-Delivery-Id"]
    headers["X-MLflow-Signature"] = sign(SECRET, delivery_id, "yesterday", body)
    assert verifier().verify(headers, body).outcome is DeliveryOutcome.STALE


def test_replayed_delivery_id_is_duplicate() -> None:
    v = verifier()
    headers, body = mlflow_delivery(VERSION)
    assert v.verify(headers, body).outcome is DeliveryOutcome.ACCEPTED
    second = v.verify(headers, body)
    assert second.outcome is DeliveryOutcome.DUPLICATE and second.event is None
    assert second.outcome.http_status == 200  # stops MLflow retrying


def test_oversized_body_is_refused_before_anything() -> None:
    headers, body = mlflow_delivery({**VERSION, "description": "x" * 5000})
    result = verifier(max_body_bytes=1024).verify(headers, body)
    assert result.outcome is DeliveryOutcome.OVERSIZED and result.outcome.http_status == 413
    # Also without a secret: size is checked first.
    assert WebhookVerifier(None, max_body_bytes=1024).verify(headers, body).outcome is (
        DeliveryOutcome.OVERSIZED
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"entity": "model_version", "action": "created"}',
        b'{"entity": "model_version", "action": "created", "data": {"version": "1"}}',
        b'{"entity": "model_version", "action": "created", "data": {"name": "m", "version": "x"}}',
        b'{"entity": "model_version", "action": "created", "data": {"name": "m", "version": 1}}',
        b'{"entity": "model_version", "action": "created",'
        b' "data": {"name": "m", "version": "1", "tags": {"a": 1}}}',
        b'{"entity": "model_version_alias", "action": "created",'
        b' "data": {"name": "m", "version": "1"}}',
    ],
)
def test_malformed_signed_bodies(body: bytes) -> None:
    delivery_id, timestamp = str(uuid.uuid4()), str(int(NOW))
    headers = {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": sign(SECRET, delivery_id, timestamp, body),
    }
    result = verifier().verify(headers, body)
    assert result.outcome is DeliveryOutcome.MALFORMED and result.outcome.http_status == 400


def test_verifier_repr_hides_the_secret() -> None:
    assert SECRET not in repr(verifier()) and "configured" in repr(verifier())


def test_delivery_id_cache_is_bounded_and_expires() -> None:
    now = [0.0]
    cache = DeliveryIdCache(max_size=2, ttl_s=10.0, clock=lambda: now[0])
    assert cache.add("a") and cache.add("b") and not cache.add("a")
    assert cache.add("c")  # evicts the oldest ("a")
    assert len(cache) == 2 and cache.add("a")
    now[0] = 10.0  # everything seen at t=0 has expired
    assert cache.add("b") and cache.add("c")


# -- signatures: several in one header, rotation --------------------------------------------


def _wrong_signature(seed: str) -> str:
    """A well-formed ``v1`` signature (32 bytes, valid base64) that matches nothing."""
    return "v1," + base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()


def test_several_signatures_none_matching_is_forged() -> None:
    headers, body = mlflow_delivery(VERSION)
    headers["X-MLflow-Signature"] = " ".join(_wrong_signature(s) for s in ("a", "b", "c"))
    assert verifier().verify(headers, body).outcome is DeliveryOutcome.FORGED


def test_a_matching_signature_then_wrong_ones_is_accepted() -> None:
    headers, body = mlflow_delivery(VERSION)
    good = headers["X-MLflow-Signature"]
    headers["X-MLflow-Signature"] = f"{good} {_wrong_signature('a')} {_wrong_signature('b')}"
    assert verifier().verify(headers, body).outcome is DeliveryOutcome.ACCEPTED


def test_previous_secret_is_accepted_during_a_rotation() -> None:
    both = WebhookVerifier(
        [SecretStr("new-secret"), SecretStr(SECRET)], max_age_s=300, clock=lambda: NOW
    )
    assert both.verify(*mlflow_delivery(VERSION)).outcome is DeliveryOutcome.ACCEPTED
    signed_new = mlflow_delivery(VERSION, secret="new-secret")
    assert both.verify(*signed_new).outcome is DeliveryOutcome.ACCEPTED
    third = mlflow_delivery(VERSION, secret="neither")
    assert both.verify(*third).outcome is DeliveryOutcome.FORGED
    # Once the previous secret is gone, its signatures are forged.
    only_new = WebhookVerifier([SecretStr("new-secret")], clock=lambda: NOW)
    assert only_new.verify(*mlflow_delivery(VERSION)).outcome is DeliveryOutcome.FORGED


def test_secrets_callable_is_asked_on_every_delivery() -> None:
    current = [SecretStr("old-secret")]
    v = WebhookVerifier(lambda: current, clock=lambda: NOW)
    assert v.verify(*mlflow_delivery(VERSION, secret="old-secret")).outcome is (
        DeliveryOutcome.ACCEPTED
    )
    current[:] = [SecretStr("rotated")]
    assert v.verify(*mlflow_delivery(VERSION, secret="old-secret")).outcome is (
        DeliveryOutcome.FORGED
    )
    assert v.verify(*mlflow_delivery(VERSION, secret="rotated")).outcome is (
        DeliveryOutcome.ACCEPTED
    )
    current.clear()
    assert v.verify(*mlflow_delivery(VERSION)).outcome is DeliveryOutcome.UNCONFIGURED


# -- replay window: the TTL covers the whole ± window ---------------------------------------


def test_future_timestamped_delivery_replayed_after_the_window_is_still_duplicate() -> None:
    wall, mono = [NOW], [0.0]
    v = WebhookVerifier(
        SecretStr(SECRET), max_age_s=300, clock=lambda: wall[0], monotonic=lambda: mono[0]
    )
    headers, body = mlflow_delivery(VERSION, timestamp=int(NOW) + 300)  # 300 s in the future
    assert v.verify(headers, body).outcome is DeliveryOutcome.ACCEPTED
    for elapsed in (1, 299, 301, 599):  # still inside the window for 600 s
        wall[0], mono[0] = NOW + elapsed, float(elapsed)
        assert v.verify(headers, body).outcome is DeliveryOutcome.DUPLICATE, elapsed
    wall[0], mono[0] = NOW + 601, 601.0
    assert v.verify(headers, body).outcome is DeliveryOutcome.STALE
    assert v.replay_ttl_s >= 2 * 300


# -- parsing: depth, canonical versions, ids not remembered on refusal -----------------------


def _signed(body: bytes, delivery_id: str | None = None) -> dict[str, str]:
    delivery_id = delivery_id or str(uuid.uuid4())
    timestamp = str(int(NOW))
    return {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": sign(SECRET, delivery_id, timestamp, body),
    }


def _nested(depth: int) -> bytes:
    data = json.dumps({**VERSION, "description": "[[{{ not structure }}]]"})
    wrapped = "[" * depth + "1" + "]" * depth
    return (
        '{"entity": "model_version", "action": "created", "timestamp": "t", '
        f'"extra": {wrapped}, "data": {data}}}'
    ).encode()


@pytest.mark.parametrize("depth", [10_000, 32])
def test_deep_json_is_malformed_not_a_recursion_error(depth: int) -> None:
    body = _nested(depth)
    result = verifier(max_body_bytes=1 << 20).verify(_signed(body), body)
    assert result.outcome is DeliveryOutcome.MALFORMED and "deeper than 32" in result.reason


def test_json_within_the_depth_limit_is_read_and_brackets_in_strings_do_not_count() -> None:
    body = _nested(29)  # 29 + the outer object = 30 levels; the description holds 4 brackets
    assert verifier().verify(_signed(body), body).outcome is DeliveryOutcome.ACCEPTED


@pytest.mark.parametrize(
    "version", ["0", "007", "00", "+7", "-1", " 7", "7 ", "²", "1" * 11, "1" * 20, "1\n"]
)
def test_non_canonical_versions_are_malformed(version: str) -> None:
    headers, body = mlflow_delivery({**VERSION, "version": version})
    result = verifier().verify(headers, body)
    assert result.outcome is DeliveryOutcome.MALFORMED and result.outcome.http_status == 400
    assert result.event is None


@pytest.mark.parametrize("version", ["1", "7", "10", "1234567890"])
def test_canonical_versions_are_accepted(version: str) -> None:
    result = verifier().verify(*mlflow_delivery({**VERSION, "version": version}))
    assert result.outcome is DeliveryOutcome.ACCEPTED and result.event is not None
    assert result.event.version == version


def test_a_refused_delivery_id_is_not_remembered() -> None:
    v = verifier()
    delivery_id = str(uuid.uuid4())
    bad = _nested(100)
    assert v.verify(_signed(bad, delivery_id), bad).outcome is DeliveryOutcome.MALFORMED
    headers, body = mlflow_delivery(VERSION, delivery_id=delivery_id)
    assert v.verify(headers, body).outcome is DeliveryOutcome.ACCEPTED  # MLflow's retry
    assert v.verify(headers, body).outcome is DeliveryOutcome.DUPLICATE


# -- the shared ledger behind the in-memory cache --------------------------------------------


class Ledger:
    """A ``first_seen`` stand-in with a switchable outage (the real one: test_intake_faults)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.calls = 0
        self.down = False

    def __call__(self, delivery_id: str) -> bool:
        from sslmem.errors import StoreError

        self.calls += 1
        if self.down:
            raise StoreError("store unreachable")
        first = delivery_id not in self.ids
        self.ids.add(delivery_id)
        return first


def test_ledger_decides_and_the_memory_cache_filters_retries() -> None:
    ledger = Ledger()
    a, b = verifier(ledger=ledger), verifier(ledger=ledger)  # two replicas, one ledger
    headers, body = mlflow_delivery(VERSION)
    assert a.verify(headers, body).outcome is DeliveryOutcome.ACCEPTED
    assert b.verify(headers, body).outcome is DeliveryOutcome.DUPLICATE
    assert ledger.calls == 2
    assert a.verify(headers, body).outcome is DeliveryOutcome.DUPLICATE
    assert b.verify(headers, body).outcome is DeliveryOutcome.DUPLICATE
    assert ledger.calls == 2  # both answered from memory


def test_ledger_unreachable_is_unavailable_and_the_retry_is_accepted() -> None:
    ledger = Ledger()
    v = verifier(ledger=ledger)
    headers, body = mlflow_delivery(VERSION)
    ledger.down = True
    result = v.verify(headers, body)
    assert result.outcome is DeliveryOutcome.UNAVAILABLE and result.outcome.http_status == 503
    assert result.event is None and "unreachable" in result.reason
    ledger.down = False
    assert v.verify(headers, body).outcome is DeliveryOutcome.ACCEPTED
    assert v.verify(headers, body).outcome is DeliveryOutcome.DUPLICATE


def test_delivery_id_cache_seen_does_not_remember() -> None:
    now = [0.0]
    cache = DeliveryIdCache(max_size=4, ttl_s=10.0, clock=lambda: now[0])
    assert not cache.seen("a") and not cache.seen("a")
    assert cache.add("a") and cache.seen("a")
    now[0] = 10.0
    assert not cache.seen("a")
