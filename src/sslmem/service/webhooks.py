"""Verify and parse MLflow model-registry webhook deliveries.

MLflow (>= 3.3, ``mlflow/webhooks/delivery.py``) signs each delivery, Standard-Webhooks style::

    X-MLflow-Delivery-Id: <uuid4>
    X-MLflow-Timestamp:   <unix seconds>
    X-MLflow-Signature:   v1,<base64(HMAC-SHA256(secret, "<delivery id>.<timestamp>.<raw body>"))>

and posts ``{"entity", "action", "timestamp", "data": {...}}`` as JSON. :class:`WebhookVerifier`
checks, in this order: body size, that a secret is configured at all, the signature (constant-time
compare over the raw bytes, under the current and, during a rotation, the previous secret), the
timestamp window, then parses the body into a :class:`RegistryEvent` (JSON depth limited,
canonical version numbers only), and only for a readable event checks the delivery id: first in
an in-memory cache (a cheap filter), then in a *ledger* shared by every replica and surviving
restarts (:class:`~sslmem.coordination.deliveries.DeliveryLedger`, a conditional create in the
object store). An id is remembered only once its delivery is accepted, so a delivery refused as
malformed or unavailable is not mistaken for a replay when MLflow retries it. Nothing from an
unverified request is trusted or remembered. Each delivery ends in one :class:`DeliveryOutcome`
(a metrics label) with the HTTP status to answer.

Ids are remembered for :func:`replay_ttl_s` = 2 × ``max_age_s`` + a margin: the window is ± the
maximum age, so a delivery signed ``max_age_s`` in the future stays fresh that long *plus* the
maximum age; forgetting it earlier would accept its replay again.

The events the service acts on are ``model_version.created``, ``model_version_tag.set`` and
``model_version_alias.created``; others are acknowledged and ignored. MLflow's ``test_webhook``
sends a canned payload for a model that does not exist (``example_model``); it is recognised by
its exact content, answered 200 and queues nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import SecretStr

from sslmem.errors import SSLMemError
from sslmem.tracking.tags import is_canonical_version

__all__ = [
    "DELIVERY_ID_HEADER",
    "MAX_JSON_DEPTH",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryIdCache",
    "DeliveryOutcome",
    "DeliveryResult",
    "EventKind",
    "RegistryEvent",
    "WebhookVerifier",
    "parse_event",
    "replay_ttl_s",
    "sign",
]

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
_SIGNATURE_VERSION = "v1"
_MAX_DELIVERY_ID_CHARS = 128
#: Deepest JSON nesting parsed; a registry event needs 3 (MLflow sends at most 3 levels).
MAX_JSON_DEPTH = 32
#: Extra seconds a delivery id is remembered beyond the ± window (clock steps, slow requests).
REPLAY_MARGIN_S = 60.0


def replay_ttl_s(max_age_s: float) -> float:
    """How long delivery ids are remembered: the whole ± window plus :data:`REPLAY_MARGIN_S`."""
    return 2 * max_age_s + REPLAY_MARGIN_S


class DeliveryOutcome(str, Enum):
    """How a delivery ended; the value is the metrics label, :attr:`http_status` the answer."""

    ACCEPTED = "accepted"
    """Signed, fresh, new and about a model version: the event is to be queued."""
    DUPLICATE = "duplicate"
    """A delivery id already accepted (a retry or a replay): nothing queued."""
    FORGED = "forged"
    """The signature does not match the body under our secret."""
    UNSIGNED = "unsigned"
    """A signature, delivery-id or timestamp header is missing."""
    UNCONFIGURED = "unconfigured"
    """No webhook secret is configured here, so nothing can be verified: all refused."""
    STALE = "stale"
    """The signed timestamp is outside the allowed window (or not a number)."""
    MALFORMED = "malformed"
    """Correctly signed, but the body is not a registry event we can read."""
    OVERSIZED = "oversized"
    """The body exceeds the size limit (checked before anything else)."""
    UNAVAILABLE = "unavailable"
    """Verified and readable, but the replay ledger (object store) cannot be reached, so the
    delivery cannot be proven new: refused with 503, which MLflow retries."""
    IGNORED = "ignored"
    """Verified, but not an event we act on (another event, or MLflow's test payload)."""

    @property
    def http_status(self) -> int:
        """The HTTP status to answer: 2xx stops MLflow's retries, 4xx are never retried."""
        return _STATUS[self]


_STATUS = {
    DeliveryOutcome.ACCEPTED: 202,
    DeliveryOutcome.DUPLICATE: 200,
    DeliveryOutcome.IGNORED: 200,
    DeliveryOutcome.FORGED: 401,
    DeliveryOutcome.UNSIGNED: 401,
    DeliveryOutcome.UNCONFIGURED: 401,
    DeliveryOutcome.STALE: 401,
    DeliveryOutcome.MALFORMED: 400,
    DeliveryOutcome.OVERSIZED: 413,
    DeliveryOutcome.UNAVAILABLE: 503,
}


class EventKind(str, Enum):
    """Registry events the service acts on (``<entity>.<action>`` as MLflow names them)."""

    VERSION_CREATED = "model_version.created"
    VERSION_TAG_SET = "model_version_tag.set"
    VERSION_ALIAS_CREATED = "model_version_alias.created"


@dataclass(frozen=True)
class RegistryEvent:
    """One verified registry event about a model version.

    Attributes:
        kind: Which event.
        name: Registered model name.
        version: Model version (a decimal string, as MLflow sends it).
        delivery_id: MLflow's delivery id (unique per delivery, shared by its retries).
        sent_at: ISO-8601 time MLflow put in the body.
        source: ``model_version.created`` only: the version's source URI.
        run_id: ``model_version.created`` only: the run that logged the model, if any.
        tags: ``model_version.created`` only: the version's tags at creation.
        description: ``model_version.created`` only.
        tag_key: ``model_version_tag.set`` only: the tag that was set.
        tag_value: ``model_version_tag.set`` only: its new value.
        alias: ``model_version_alias.created`` only: the alias now pointing at the version.

    """

    kind: EventKind
    name: str
    version: str
    delivery_id: str
    sent_at: str
    source: str | None = None
    run_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None
    tag_key: str | None = None
    tag_value: str | None = None
    alias: str | None = None


@dataclass(frozen=True)
class DeliveryResult:
    """The verdict on one delivery.

    Attributes:
        outcome: How it ended (metrics label; :attr:`DeliveryOutcome.http_status` to answer).
        reason: A short explanation safe to log and to return: never a secret, a signature or
            body content.
        event: The parsed event when ``outcome`` is ``ACCEPTED``, else ``None``.

    """

    outcome: DeliveryOutcome
    reason: str
    event: RegistryEvent | None = None


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery (``v1,<base64>``).

    Args:
        secret: The webhook secret.
        delivery_id: ``X-MLflow-Delivery-Id``.
        timestamp: ``X-MLflow-Timestamp`` exactly as sent (unix seconds as text).
        body: The raw request body (MLflow signs the UTF-8 JSON text it posts).

    """
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{_SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


class DeliveryIdCache:
    """Delivery ids seen recently: bounded (LRU eviction) and expiring after ``ttl_s``.

    Ids only need remembering while their timestamp is inside the verifier's window (for
    :func:`replay_ttl_s`): older replays are refused as stale anyway. If more than ``max_size``
    deliveries arrive within that time, the oldest ids are forgotten early; the shared ledger
    (when configured) still refuses their replays.

    Args:
        max_size: Most ids kept.
        ttl_s: Seconds an id is kept.
        clock: Monotonic seconds (injectable for tests).

    """

    def __init__(
        self, max_size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_size < 1 or ttl_s <= 0:
            raise ValueError("max_size must be >= 1 and ttl_s > 0")
        self.max_size = max_size
        self.ttl_s = ttl_s
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self.ttl_s:
                break
            del self._seen[oldest]

    def seen(self, delivery_id: str) -> bool:
        """Whether ``delivery_id`` is remembered (and not expired); remembers nothing."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            return delivery_id in self._seen

    def add(self, delivery_id: str) -> bool:
        """Remember ``delivery_id``; return ``False`` if it was already remembered."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            if len(self._seen) > self.max_size:
                self._seen.popitem(last=False)
            return True


#: The secrets to verify with, current first: fixed, or a callable re-reading them (rotation).
SecretsSource = SecretStr | Sequence[SecretStr] | Callable[[], Sequence[SecretStr]] | None


class WebhookVerifier:
    """Checks MLflow webhook deliveries and turns the good ones into :class:`RegistryEvent`.

    Thread-safe. One instance per service process (it holds the in-memory replay cache).

    Args:
        secret: The webhook secret; several (current first, then the previous one during a
            rotation: a signature under any is valid); or a callable returning them, asked on
            every delivery (secrets re-read from files); ``None`` or none at all refuses every
            delivery (``UNCONFIGURED``).
        max_age_s: Largest allowed difference between the signed timestamp and now, either way.
        dedup_size: Delivery ids remembered in memory (see :class:`DeliveryIdCache`).
        max_body_bytes: Larger bodies are refused before any other work.
        ledger: ``first_seen(delivery_id) -> bool`` of a store shared by the replicas (see
            :class:`~sslmem.coordination.deliveries.DeliveryLedger`), remembering ids for
            :func:`replay_ttl_s`; an :class:`~sslmem.errors.SSLMemError` from it answers
            ``UNAVAILABLE``. ``None``: the in-memory cache alone (one process).
        clock: Wall-clock unix seconds (the ``clock`` attribute; the ledger's too).
        monotonic: Monotonic seconds of the in-memory cache (injectable for tests).

    """

    def __init__(
        self,
        secret: SecretsSource,
        *,
        max_age_s: float = 300.0,
        dedup_size: int = 10_000,
        max_body_bytes: int = 256 * 1024,
        ledger: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = secret
        self.max_age_s = max_age_s
        self.max_body_bytes = max_body_bytes
        self.replay_ttl_s = replay_ttl_s(max_age_s)
        self._ledger = ledger
        self.clock = clock
        self._seen = DeliveryIdCache(dedup_size, self.replay_ttl_s, clock=monotonic)

    def __repr__(self) -> str:
        configured = "configured" if self._keys() else "none"
        return f"WebhookVerifier(secret={configured}, max_age_s={self.max_age_s})"

    def _keys(self) -> list[bytes]:
        source = self._secrets
        if callable(source):
            source = source()
        if source is None:
            return []
        if isinstance(source, SecretStr):
            source = [source]
        return [value.get_secret_value().encode("utf-8") for value in source]

    def verify(self, headers: Mapping[str, str], body: bytes) -> DeliveryResult:
        """Judge one delivery.

        Args:
            headers: Request headers (any capitalisation).
            body: The raw request body, exactly as received.

        Returns:
            The outcome, a loggable reason and, when accepted, the event.

        """
        if len(body) > self.max_body_bytes:
            return DeliveryResult(
                DeliveryOutcome.OVERSIZED, f"body over {self.max_body_bytes} bytes"
            )
        keys = self._keys()
        if not keys:
            return DeliveryResult(
                DeliveryOutcome.UNCONFIGURED,
                "no webhook secret is configured; set SSLMEM_SERVICE_WEBHOOK_SECRET(_FILE)",
            )
        lower = {key.lower(): value for key, value in headers.items()}
        signature = lower.get(SIGNATURE_HEADER.lower())
        timestamp = lower.get(TIMESTAMP_HEADER.lower())
        delivery_id = lower.get(DELIVERY_ID_HEADER.lower())
        if not signature or not timestamp or not delivery_id:
            return DeliveryResult(
                DeliveryOutcome.UNSIGNED,
                f"missing {SIGNATURE_HEADER}, {TIMESTAMP_HEADER} or {DELIVERY_ID_HEADER}",
            )
        if not _signature_matches(keys, signature, delivery_id, timestamp, body):
            return DeliveryResult(DeliveryOutcome.FORGED, "signature does not match")
        try:
            age = self.clock() - int(timestamp)
        except ValueError:
            return DeliveryResult(DeliveryOutcome.STALE, "timestamp is not unix seconds")
        if abs(age) > self.max_age_s:
            return DeliveryResult(
                DeliveryOutcome.STALE,
                f"timestamp {age:+.0f} s from now (window ±{self.max_age_s:g} s)",
            )
        if len(delivery_id) > _MAX_DELIVERY_ID_CHARS:
            return DeliveryResult(DeliveryOutcome.MALFORMED, "delivery id too long")
        # Parse before remembering the id: a refused delivery must stay retryable.
        parsed = parse_event(body, delivery_id)
        if parsed.outcome is not DeliveryOutcome.ACCEPTED:
            return parsed
        return self._first_time(parsed, delivery_id)

    def _first_time(self, parsed: DeliveryResult, delivery_id: str) -> DeliveryResult:
        """``parsed`` if ``delivery_id`` is new here and in the ledger, else ``DUPLICATE``."""
        duplicate = DeliveryResult(DeliveryOutcome.DUPLICATE, f"delivery {delivery_id} seen before")
        if self._ledger is None:
            return parsed if self._seen.add(delivery_id) else duplicate
        if self._seen.seen(delivery_id):
            return duplicate  # the cheap filter: no store request for a retry seen here
        try:
            first = self._ledger(delivery_id)
        except SSLMemError as exc:
            return DeliveryResult(
                DeliveryOutcome.UNAVAILABLE,
                f"replay ledger unreachable ({type(exc).__name__}); MLflow will retry",
            )
        self._seen.add(delivery_id)
        return parsed if first else duplicate


def _signature_matches(
    keys: Sequence[bytes], header: str, delivery_id: str, timestamp: str, body: bytes
) -> bool:
    """Whether one of the header's ``v1`` signatures is the HMAC under one of ``keys``."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in keys]
    matched = False
    # Standard Webhooks allows several space-separated signatures (key rotation).
    for candidate in header.split():
        version, _, encoded = candidate.partition(",")
        if version != _SIGNATURE_VERSION:
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        for digest in expected:  # every pair compared: no early exit on a match
            matched |= hmac.compare_digest(given, digest)
    return matched


def _too_deep(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests arrays/objects deeper than ``limit`` (strings skipped)."""
    outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    steps = (1 if c in "[{" else -1 for c in outside_strings if c in "[]{}")
    return any(depth > limit for depth in itertools.accumulate(steps))


# MLflow's canned ``test_webhook`` payloads (mlflow.webhooks.types ``*.example()``), by event.
_TEST_PAYLOADS: dict[EventKind, dict[str, Any]] = {
    EventKind.VERSION_CREATED: {
        "name": "example_model",
        "version": "1",
        "source": "models:/123",
        "run_id": "abcd1234abcd5678",
        "tags": {"example_key": "example_value"},
        "description": "An example model version",
    },
    EventKind.VERSION_TAG_SET: {
        "name": "example_model",
        "version": "1",
        "key": "example_key",
        "value": "example_value",
    },
    EventKind.VERSION_ALIAS_CREATED: {
        "name": "example_model",
        "alias": "example_alias",
        "version": "1",
    },
}


def parse_event(body: bytes, delivery_id: str) -> DeliveryResult:
    """Parse a verified body into a :class:`RegistryEvent` (``ACCEPTED``), or say why not.

    Args:
        body: The raw JSON body (already verified).
        delivery_id: Its delivery id.

    Returns:
        ``ACCEPTED`` with the event, ``IGNORED`` for other events and MLflow's test payload,
        ``MALFORMED`` for anything unreadable, JSON nested deeper than :data:`MAX_JSON_DEPTH`,
        or a version number that is not canonical
        (:func:`~sslmem.tracking.tags.is_canonical_version`).

    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return DeliveryResult(DeliveryOutcome.MALFORMED, "body is not UTF-8 JSON")
    # json.loads recurses once per level: 10,000 levels would raise RecursionError (a 500).
    if _too_deep(text, MAX_JSON_DEPTH):
        return DeliveryResult(
            DeliveryOutcome.MALFORMED, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
        )
    try:
        payload = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return DeliveryResult(DeliveryOutcome.MALFORMED, "body is not UTF-8 JSON")
    if not isinstance(payload, dict):
        return DeliveryResult(DeliveryOutcome.MALFORMED, "body is not a JSON object")
    entity, action, data = payload.get("entity"), payload.get("action"), payload.get("data")
    if not isinstance(entity, str) or not isinstance(action, str) or not isinstance(data, dict):
        return DeliveryResult(DeliveryOutcome.MALFORMED, "body lacks entity, action or data")
    try:
        kind = EventKind(f"{entity}.{action}")
    except ValueError:
        return DeliveryResult(DeliveryOutcome.IGNORED, f"event {entity}.{action} not acted on")
    if data == _TEST_PAYLOADS[kind]:
        return DeliveryResult(DeliveryOutcome.IGNORED, "MLflow test delivery (example_model)")
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not name or not isinstance(version, str):
        return DeliveryResult(DeliveryOutcome.MALFORMED, f"{kind.value} lacks name or version")
    if not is_canonical_version(version):
        return DeliveryResult(
            DeliveryOutcome.MALFORMED, "version is not a canonical positive number (1-10 digits)"
        )
    strings = _string_fields(data, kind)
    if strings is None:
        return DeliveryResult(DeliveryOutcome.MALFORMED, f"{kind.value} has mistyped fields")
    tags = data.get("tags") or {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        return DeliveryResult(DeliveryOutcome.MALFORMED, "tags are not a string mapping")
    sent_at = payload.get("timestamp")
    event = RegistryEvent(
        kind=kind,
        name=name,
        version=version,
        delivery_id=delivery_id,
        sent_at=sent_at if isinstance(sent_at, str) else "",
        tags=dict(tags),
        **strings,
    )
    return DeliveryResult(DeliveryOutcome.ACCEPTED, f"{kind.value} {name}/{version}", event)


_EVENT_FIELDS: dict[EventKind, dict[str, str]] = {
    # RegistryEvent attribute -> payload key, per event; all optional strings.
    EventKind.VERSION_CREATED: {
        "source": "source",
        "run_id": "run_id",
        "description": "description",
    },
    EventKind.VERSION_TAG_SET: {"tag_key": "key", "tag_value": "value"},
    EventKind.VERSION_ALIAS_CREATED: {"alias": "alias"},
}
_REQUIRED = {"tag_key", "alias"}


def _string_fields(data: dict[str, Any], kind: EventKind) -> dict[str, str | None] | None:
    """The event-specific string fields, or ``None`` if one is mistyped or a required one absent."""
    out: dict[str, str | None] = {}
    for attribute, key in _EVENT_FIELDS[kind].items():
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            return None
        if value is None and attribute in _REQUIRED:
            return None
        out[attribute] = value
    return out
