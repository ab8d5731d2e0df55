"""Real deliveries: a real ``mlflow server`` signs and posts registry events to a local receiver."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from sslmem.service.webhooks import DeliveryOutcome, EventKind, WebhookVerifier
from sslmem.tracking import configure_mlflow
from sslmem.tracking.connection import client
from sslmem.tracking.webhooks import ensure_webhook
from tests.servers import MlflowServer
from tests.service.conftest import Receiver

pytestmark = pytest.mark.slow

SECRET = SecretStr("e2e-webhook-secret-2a1f")


def test_mlflow_deliveries_verify_and_tampering_is_refused(
    webhook_mlflow: MlflowServer, receiver: Receiver
) -> None:
    configure_mlflow(webhook_mlflow.url)
    hook = ensure_webhook(receiver.url, SECRET, name="e2e-delivery")
    mlflow = client()
    try:
        mlflow.create_registered_model("enc")
        mlflow.create_model_version(
            "enc", source="s3://models/enc/1", tags={"sslmem.status": "pending"}
        )
        created = receiver.wait_for(1)[0]
        mlflow.set_model_version_tag("enc", "1", "sslmem.status", "running")
        mlflow.set_registered_model_alias("enc", "champion", "1")
        mlflow.test_webhook(hook.webhook_id)
        deliveries = receiver.wait_for(4)
    finally:
        mlflow.delete_webhook(hook.webhook_id)

    assert created.path == "/v1/webhooks/mlflow"
    verifier = WebhookVerifier(SECRET)
    first = verifier.verify(created.headers, created.body)
    assert first.outcome is DeliveryOutcome.ACCEPTED, first.reason
    assert first.event is not None
    assert (first.event.kind, first.event.name, first.event.version) == (
        EventKind.VERSION_CREATED,
        "enc",
        "1",
    )
    assert first.event.tags == {"sslmem.status": "pending"}
    assert first.event.source == "s3://models/enc/1"

    # Every other real delivery: a tag, an alias and MLflow's canned test payload.
    seen = {}
    for delivery in deliveries[1:]:
        result = verifier.verify(delivery.headers, delivery.body)
        key = result.event.kind if result.event is not None else result.outcome
        seen[key] = result
    tag = seen[EventKind.VERSION_TAG_SET].event
    assert tag is not None and (tag.tag_key, tag.tag_value) == ("sslmem.status", "running")
    alias = seen[EventKind.VERSION_ALIAS_CREATED].event
    assert alias is not None and (alias.alias, alias.version) == ("champion", "1")
    assert seen[DeliveryOutcome.IGNORED].reason.startswith("MLflow test delivery")

    # The same real delivery replayed, re-signed under another secret, altered, or late.
    assert verifier.verify(created.headers, created.body).outcome is DeliveryOutcome.DUPLICATE
    wrong = WebhookVerifier(SecretStr("not-the-secret"))
    assert wrong.verify(created.headers, created.body).outcome is DeliveryOutcome.FORGED
    altered = created.body.replace(b'"enc"', b'"evil"')
    assert altered != created.body
    assert WebhookVerifier(SECRET).verify(created.headers, altered).outcome is (
        DeliveryOutcome.FORGED
    )
    late = WebhookVerifier(SECRET, max_age_s=300, clock=lambda: time.time() + 301)
    assert late.verify(created.headers, created.body).outcome is DeliveryOutcome.STALE
