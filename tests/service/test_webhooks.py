"""Webhook verification against signatures made by MLflow's own signing function."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid

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
    data: dict[str, object],
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


VERSION = {
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
    data = {"name": "enc", "tags": {}, "description": None}
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
