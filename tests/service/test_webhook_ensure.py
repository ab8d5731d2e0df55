"""``sslmem webhook ensure`` against a real ``mlflow server``: idempotent, secret never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from sslmem.cli import main
from sslmem.service.webhooks import DeliveryOutcome, WebhookVerifier
from sslmem.tracking import configure_mlflow
from sslmem.tracking.connection import client
from tests.servers import MlflowServer
from tests.service.conftest import Receiver

pytestmark = pytest.mark.slow

SECRET = "ensure-secret-81c4d"


def named(name: str) -> list[object]:
    return [hook for hook in client().list_webhooks(max_results=100) if hook.name == name]


def test_ensure_twice_then_change_url_and_rotate_secret(
    webhook_mlflow: MlflowServer,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", webhook_mlflow.url)
    monkeypatch.setenv("SSLMEM_SERVICE_WEBHOOK_SECRET", SECRET)
    configure_mlflow(webhook_mlflow.url)
    args = ["webhook", "ensure", "--name", "e2e-ensure", "--url", "http://127.0.0.1:9/hook"]
    try:
        assert main(args) == 0
        assert main(args) == 0
        hooks = named("e2e-ensure")
        assert len(hooks) == 1
        hook = hooks[0]
        assert hook.url == "http://127.0.0.1:9/hook"  # type: ignore[attr-defined]
        assert sorted(str(e) for e in hook.events) == [  # type: ignore[attr-defined]
            "model_version.created",
            "model_version_alias.created",
            "model_version_tag.set",
        ]
        out = capsys.readouterr().out
        assert "created" in out.splitlines()[0] and "updated" in out.splitlines()[1]
        assert "changed" not in out.splitlines()[1]

        # A changed URL updates the same webhook; a rotated secret (from a file) takes effect.
        (tmp_path / "secret").write_text("rotated-secret-55e0\n")
        moved = ["webhook", "ensure", "--name", "e2e-ensure", "--url", receiver.url]
        assert main([*moved, "--secret-file", str(tmp_path / "secret")]) == 0
        out = capsys.readouterr().out
        assert "updated (url changed)" in out
        hooks = named("e2e-ensure")
        assert len(hooks) == 1 and hooks[0].webhook_id == hook.webhook_id  # type: ignore[attr-defined]
        assert hooks[0].url == receiver.url  # type: ignore[attr-defined]
        client().test_webhook(hook.webhook_id)  # type: ignore[attr-defined]
        delivery = receiver.wait_for(1)[0]
        rotated = WebhookVerifier(SecretStr("rotated-secret-55e0"))
        assert rotated.verify(delivery.headers, delivery.body).outcome is DeliveryOutcome.IGNORED
        old = WebhookVerifier(SecretStr(SECRET))
        assert old.verify(delivery.headers, delivery.body).outcome is DeliveryOutcome.FORGED
    finally:
        for leftover in named("e2e-ensure"):
            client().delete_webhook(leftover.webhook_id)  # type: ignore[attr-defined]
    captured = capsys.readouterr()
    for text in (out, captured.out, captured.err):
        assert SECRET not in text and "rotated-secret" not in text


def test_ensure_errors(
    webhook_mlflow: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("SSLMEM_SERVICE_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("SSLMEM_SERVICE_WEBHOOK_SECRET_FILE", raising=False)
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", webhook_mlflow.url)
    base = ["webhook", "ensure", "--url", "http://127.0.0.1:9/hook"]
    assert main(base) == 2
    assert "no webhook secret given" in capsys.readouterr().err

    monkeypatch.setenv("SSLMEM_SERVICE_WEBHOOK_SECRET", SECRET)
    assert main(["webhook", "ensure", "--url", "ftp://host/hook"]) == 2
    assert "not an http(s) URL" in capsys.readouterr().err
    assert main([*base, "--events", "model_version.exploded"]) == 2
    assert "unknown webhook event" in capsys.readouterr().err

    # A local SQLite store never delivers webhooks: refused, not silently stored.
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "webhooks need an MLflow server" in err and SECRET not in err


def test_server_without_webhook_settings_refuses_with_the_fix(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from sslmem.errors import TrackingError
    from sslmem.tracking.webhooks import ensure_webhook
    from tests.servers import start_mlflow_server

    root = tmp_path_factory.mktemp("mlflow-plain")
    with start_mlflow_server(root, str(root / "artifacts")) as plain:
        configure_mlflow(plain.url)
        with pytest.raises(TrackingError) as info:
            ensure_webhook("http://127.0.0.1:9/hook", SecretStr(SECRET), name="refused")
        assert "scheme" in info.value.problem
        assert info.value.fix is not None and "MLFLOW_WEBHOOK_ALLOWED_SCHEMES" in info.value.fix
        with pytest.raises(TrackingError) as info:
            ensure_webhook("https://127.0.0.1:9/hook", SecretStr(SECRET), name="refused")
        assert "non-public IP" in info.value.problem
        assert info.value.fix is not None and "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS" in info.value.fix
        assert SECRET not in str(info.value)


def test_the_cli_help_names_the_default_webhook_and_every_default_event() -> None:
    # The CLI spells the defaults in its help (importing them would load MLflow on --help).
    import argparse

    from sslmem.cli import webhook as webhook_cli
    from sslmem.tracking.webhooks import DEFAULT_EVENTS, DEFAULT_WEBHOOK_NAME

    parser = argparse.ArgumentParser()
    webhook_cli.add_arguments(parser)
    ensure = parser._subparsers._group_actions[0].choices["ensure"]  # type: ignore[union-attr]
    text = " ".join(ensure.format_help().split())
    assert DEFAULT_WEBHOOK_NAME in text
    for event in DEFAULT_EVENTS:
        assert event in text
