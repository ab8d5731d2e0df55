"""Create or update, idempotently, the MLflow registry webhook that feeds the scoring service.

:func:`ensure_webhook` is what ``sslmem webhook ensure`` (and a Helm hook) runs: it finds the
webhook by name and creates it, or brings its URL, events, status and description to the wanted
values. The secret cannot be read back from MLflow, so it is sent on every run: a rotated secret
takes effect by running the command again. Only an MLflow *server* delivers webhooks, and it
needs ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` and ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true``
for an in-cluster (http, private address) receiver, and a stable
``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`` so stored secrets stay readable after a restart
(docs/service.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from sslmem.errors import ConfigError, TrackingError
from sslmem.tracking.connection import client, current_target, tracking_errors

__all__ = ["DEFAULT_EVENTS", "DEFAULT_WEBHOOK_NAME", "WebhookState", "ensure_webhook"]

#: The registry webhook's name (its identity for ``sslmem webhook ensure``) and events.
DEFAULT_WEBHOOK_NAME = "sslmem-scoring"
#: The registry events the scoring service acts on (its webhook intake's event kinds).
DEFAULT_EVENTS: tuple[str, ...] = (
    "model_version.created",
    "model_version_tag.set",
    "model_version_alias.created",
)

_SERVER_FIX = (
    "on the MLflow server set MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https (for an http receiver) "
    "and MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true (for an in-cluster or loopback receiver), "
    "then restart it"
)


@dataclass(frozen=True)
class WebhookState:
    """What :func:`ensure_webhook` did.

    Attributes:
        webhook_id: MLflow's id of the webhook.
        name: Its name.
        url: Where it delivers.
        events: Its events, sorted.
        action: ``"created"`` or ``"updated"`` (an update always re-sends the secret).
        changed: The fields whose values changed on update (``()`` if only the secret was sent).

    """

    webhook_id: str
    name: str
    url: str
    events: tuple[str, ...]
    action: Literal["created", "updated"]
    changed: tuple[str, ...] = ()


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"webhook URL {url!r} is not an http(s) URL with a host",
            "pass the service's receiver, e.g. http://sslmem.ml.svc:8080/v1/webhooks/mlflow",
        )
    if parts.username or parts.password:
        raise ConfigError(
            "the webhook URL must not carry credentials (user:password@)",
            "remove them: deliveries are authenticated by the HMAC secret",
        )


def _all_webhooks(mlflow: Any) -> list[Any]:
    found: list[Any] = []
    token: str | None = None
    while True:
        page = mlflow.list_webhooks(max_results=100, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def ensure_webhook(
    url: str,
    secret: SecretStr,
    *,
    name: str = DEFAULT_WEBHOOK_NAME,
    events: Sequence[str] = DEFAULT_EVENTS,
    description: str | None = "Feeds new model versions to the sslmem scoring service.",
) -> WebhookState:
    """Create the registry webhook ``name``, or update it to these values; idempotent.

    Args:
        url: The receiver, ``http(s)://host[:port]/v1/webhooks/mlflow``.
        secret: The HMAC secret shared with the service (never printed or logged).
        name: Webhook name: the identity this function converges on.
        events: MLflow event names (``entity.action``).
        description: Shown in MLflow.

    Returns:
        What was done.

    Raises:
        ConfigError: The URL, the events or the secret are unusable, or the configured
            tracking store is not an MLflow server (a local store never delivers webhooks).
        TrackingError: MLflow is unreachable or refused (the fix names the server settings
            when it refused the URL); several webhooks already carry ``name``.

    """
    _check_url(url)
    wanted_events = tuple(sorted(dict.fromkeys(events)))
    if not wanted_events:
        raise ConfigError("no webhook events given", f"use e.g. {', '.join(DEFAULT_EVENTS)}")
    if not secret.get_secret_value().strip():
        raise ConfigError("the webhook secret is empty", "give a long random secret")
    target = current_target()
    if not target.tracking_uri.startswith(("http://", "https://")):
        raise ConfigError(
            f"webhooks need an MLflow server, but the tracking store is {target.tracking_uri}",
            "set SSLMEM_MLFLOW_TRACKING_URI to http(s)://<mlflow server> (a local store never "
            "delivers webhooks; the service's reconcile pass covers it)",
        )
    from mlflow.entities.webhook import WebhookEvent

    try:
        parsed_events = [WebhookEvent.from_str(event) for event in wanted_events]  # type: ignore[arg-type]
    except Exception as exc:  # MlflowException: unknown entity or action
        raise ConfigError(
            f"unknown webhook event in {', '.join(wanted_events)}",
            f"use entity.action names such as {', '.join(DEFAULT_EVENTS)}",
        ) from exc
    mlflow = client()
    try:
        with tracking_errors(f"ensure the registry webhook {name!r}"):
            matches = [hook for hook in _all_webhooks(mlflow) if hook.name == name]
            if len(matches) > 1:
                ids = ", ".join(hook.webhook_id for hook in matches)
                raise TrackingError(
                    f"{len(matches)} webhooks are named {name!r} ({ids})",
                    "delete all but one (MlflowClient().delete_webhook(id)) and run again",
                )
            if not matches:
                hook = mlflow.create_webhook(
                    name=name,
                    url=url,
                    events=parsed_events,
                    description=description,
                    secret=secret.get_secret_value(),
                    status="ACTIVE",
                )
                return _state(hook, "created")
            current = matches[0]
            changed = tuple(
                field
                for field, differs in (
                    ("url", current.url != url),
                    ("events", tuple(sorted(str(e) for e in current.events)) != wanted_events),
                    ("status", str(current.status) != "ACTIVE"),
                    ("description", current.description != description),
                )
                if differs
            )
            hook = mlflow.update_webhook(
                webhook_id=current.webhook_id,
                url=url,
                events=parsed_events,
                description=description,
                secret=secret.get_secret_value(),
                status="ACTIVE",
            )
            return _state(hook, "updated", changed)
    except TrackingError as exc:
        problem = exc.problem.replace(secret.get_secret_value(), "**********")
        refused_url = any(word in problem for word in ("scheme", "private", "public IP"))
        raise TrackingError(problem, _SERVER_FIX if refused_url else exc.fix) from None


def _state(
    hook: Any, action: Literal["created", "updated"], changed: tuple[str, ...] = ()
) -> WebhookState:
    return WebhookState(
        webhook_id=str(hook.webhook_id),
        name=str(hook.name),
        url=str(hook.url),
        events=tuple(sorted(str(event) for event in hook.events)),
        action=action,
        changed=changed,
    )
