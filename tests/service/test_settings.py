"""ServiceSettings: env, files, secrets that never show."""

from __future__ import annotations

import logging
import re
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from sslmem.errors import ConfigError
from sslmem.service.secrets import FileSecret, webhook_secrets
from sslmem.service.settings import ServiceSettings, valid_env_names

SECRET = "hook-secret-9f2c"
TOKEN = "api-token-77aa"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SSLMEM_SERVICE_"):
            monkeypatch.delenv(key)


def test_defaults_have_no_secrets_and_bind_loopback() -> None:
    settings = ServiceSettings.load()
    assert settings.host == "127.0.0.1"
    assert settings.webhook_secret is None and settings.api_token is None
    assert settings.max_concurrent_jobs == 1 and settings.champion_alias == "champion"
    assert settings.replica_id  # host name and pid


def test_env_and_secret_never_in_repr_or_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SSLMEM_SERVICE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SSLMEM_SERVICE_API_TOKEN", TOKEN)
    monkeypatch.setenv("SSLMEM_SERVICE_PORT", "9100")
    settings = ServiceSettings.load()
    assert settings.port == 9100
    assert settings.webhook_secret is not None and settings.api_token is not None
    assert settings.webhook_secret.get_secret_value() == SECRET
    assert settings.api_token.get_secret_value() == TOKEN
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s %r", settings, settings)
    for text in (repr(settings), str(settings), settings.model_dump_json(), caplog.text):
        assert SECRET not in text and TOKEN not in text


def test_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hook").write_text(SECRET + "\n")
    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setenv("SSLMEM_SERVICE_WEBHOOK_SECRET_FILE", str(tmp_path / "hook"))
    settings = ServiceSettings.load(api_token_file=tmp_path / "token")
    assert settings.webhook_secret is not None and settings.api_token is not None
    assert settings.webhook_secret.get_secret_value() == SECRET  # newline stripped
    assert settings.api_token.get_secret_value() == TOKEN


def test_secret_and_file_together_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hook").write_text(SECRET)
    monkeypatch.setenv("SSLMEM_SERVICE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SSLMEM_SERVICE_WEBHOOK_SECRET_FILE", str(tmp_path / "hook"))
    with pytest.raises(ConfigError, match="webhook_secret or webhook_secret_file") as info:
        ServiceSettings.load()
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_missing_or_empty_secret_file(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "hook"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        ServiceSettings.load(webhook_secret_file=path)


def test_yaml_file_below_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "service.yaml"
    config.write_text("port: 9001\nchampion_alias: prod\nlease_ttl_s: 60\nlease_renew_s: 20\n")
    monkeypatch.setenv("SSLMEM_SERVICE_PORT", "9002")
    settings = ServiceSettings.load(config)
    assert settings.port == 9002  # env wins over the file
    assert settings.champion_alias == "prod" and settings.lease_ttl_s == 60.0
    monkeypatch.setenv("SSLMEM_SERVICE_CONFIG_FILE", str(config))
    assert ServiceSettings.load(port=1234).port == 1234  # keyword wins over env and file
    assert ServiceSettings.load().champion_alias == "prod"  # file found through the env


def test_env_file(tmp_path: Path) -> None:
    config = tmp_path / "service.env"
    config.write_text(f"SSLMEM_SERVICE_REPLICA_ID=replica-a\nSSLMEM_SERVICE_API_TOKEN={TOKEN}\n")
    settings = ServiceSettings.load(config)
    assert settings.replica_id == "replica-a"
    assert settings.api_token is not None and settings.api_token.get_secret_value() == TOKEN


def test_yaml_typo_and_missing_file(tmp_path: Path) -> None:
    config = tmp_path / "service.yaml"
    config.write_text("prot: 9001\n")
    with pytest.raises(ConfigError, match=r"unknown settings.*prot"):
        ServiceSettings.load(config)
    with pytest.raises(ConfigError, match="does not exist"):
        ServiceSettings.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"port": 0}, "port"),
        ({"max_concurrent_jobs": 0}, "max_concurrent_jobs"),
        ({"lease_ttl_s": 60, "lease_renew_s": 40}, "lease_renew_s"),
        ({"webhook_max_age_s": -1}, "webhook_max_age_s"),
    ],
)
def test_invalid_values_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ServiceSettings.load(None, **overrides)


def test_docs_table_lists_every_setting() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "service.md").read_text()
    for name in ServiceSettings.model_fields:
        if name.endswith("_file"):
            continue  # documented beside its secret: `WEBHOOK_SECRET` / `WEBHOOK_SECRET_FILE`
        assert f"`{name.upper()}" in docs, name


# -- unknown variables refused ---------------------------------------------------------------


def test_unknown_service_variable_is_refused_naming_it_and_the_valid_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSLMEM_SERVICE_WEBHOOK_MAX_AGE", "60")  # the _S is missing
    monkeypatch.setenv("SSLMEM_SERVICE_WEBHOOK_SECRET", SECRET)
    with pytest.raises(ConfigError) as info:
        ServiceSettings.load()
    message = str(info.value)
    assert (
        "SSLMEM_SERVICE_WEBHOOK_MAX_AGE:" in message or "SSLMEM_SERVICE_WEBHOOK_MAX_AGE " in message
    )
    assert "SSLMEM_SERVICE_WEBHOOK_MAX_AGE_S" in message  # listed among the valid names
    assert "SSLMEM_SERVICE_CONFIG_FILE" in message and SECRET not in message


def test_config_file_variable_and_every_field_variable_are_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "service.yaml"
    config.write_text("port: 9001\n")
    monkeypatch.setenv("SSLMEM_SERVICE_CONFIG_FILE", str(config))
    monkeypatch.setenv("SSLMEM_SERVICE_LOG_FORMAT", "json")
    monkeypatch.setenv("sslmem_service_port", "9003")  # any case names the same setting
    settings = ServiceSettings.load()
    assert settings.log_format == "json"
    assert set(valid_env_names()) == {"SSLMEM_SERVICE_CONFIG_FILE"} | {
        f"SSLMEM_SERVICE_{name.upper()}" for name in ServiceSettings.model_fields
    }


def test_every_variable_the_chart_sets_is_a_setting() -> None:
    chart = Path(__file__).parents[2] / "helm" / "sslmem"
    names = set()
    for template in chart.rglob("*"):
        if template.is_file() and template.suffix in (".yaml", ".tpl", ".txt"):
            names |= set(re.findall(r"SSLMEM_SERVICE_[A-Z0-9_]+", template.read_text()))
    assert "SSLMEM_SERVICE_WEBHOOK_SECRET_FILE" in names  # the scan finds the templates
    assert names <= set(valid_env_names()), sorted(names - set(valid_env_names()))


def test_log_format_is_json_or_text() -> None:
    assert ServiceSettings.load().log_format == "text"
    with pytest.raises(ConfigError, match="log_format"):
        ServiceSettings.load(log_format="xml")


# -- the previous webhook secret ---------------------------------------------------------------


def test_previous_secret_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSLMEM_SERVICE_WEBHOOK_SECRET_PREVIOUS", "old-one")
    settings = ServiceSettings.load(webhook_secret=SECRET)
    assert settings.webhook_secret_previous is not None
    assert settings.webhook_secret_previous.get_secret_value() == "old-one"
    assert "old-one" not in repr(settings)
    monkeypatch.delenv("SSLMEM_SERVICE_WEBHOOK_SECRET_PREVIOUS")
    previous = tmp_path / "previous"
    previous.write_text("old-two\n")
    from_file = ServiceSettings.load(webhook_secret=SECRET, webhook_secret_previous_file=previous)
    assert from_file.webhook_secret_previous is not None
    assert from_file.webhook_secret_previous.get_secret_value() == "old-two"
    with pytest.raises(
        ConfigError, match="webhook_secret_previous or webhook_secret_previous_file"
    ):
        ServiceSettings.load(webhook_secret_previous="x", webhook_secret_previous_file=previous)


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_previous_secret_file_missing_or_empty_means_none(
    tmp_path: Path, content: str | None
) -> None:
    previous = tmp_path / "previous"
    if content is not None:
        previous.write_text(content)
    settings = ServiceSettings.load(webhook_secret=SECRET, webhook_secret_previous_file=previous)
    assert settings.webhook_secret_previous is None


# -- secrets re-read from their files ----------------------------------------------------------


def _rewrite(path: Path, text: str) -> None:
    """Replace a file the way the kubelet does: a new inode moved into place."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    fresh.replace(path)


def test_file_secret_is_re_read_when_the_file_changes_at_most_every_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hook"
    path.write_text("first-secret\n")
    now = [0.0]
    secret = FileSecret(path, "webhook secret", check_s=5.0, clock=lambda: now[0])
    assert _value(secret.get()) == "first-secret"
    _rewrite(path, "second-secret\n")
    now[0] = 4.9
    assert _value(secret.get()) == "first-secret"  # not looked at yet
    now[0] = 5.0
    with caplog.at_level(logging.INFO):
        assert _value(secret.get()) == "second-secret"
    assert "re-read" in caplog.text and "second-secret" not in caplog.text
    path.unlink()  # mid-rotation: a required secret keeps its last value
    now[0] = 10.0
    assert _value(secret.get()) == "second-secret"


def test_optional_file_secret_disappears_with_its_file(tmp_path: Path) -> None:
    path = tmp_path / "previous"
    now = [0.0]
    secret = FileSecret(path, "previous", optional=True, check_s=1.0, clock=lambda: now[0])
    assert secret.get() is None
    path.write_text("old")
    now[0] = 1.0
    assert _value(secret.get()) == "old"
    path.unlink()
    now[0] = 2.0
    assert secret.get() is None


def test_rotation_through_files_without_a_restart(tmp_path: Path) -> None:
    """The documented procedure, on real files: old and new both verify until the end."""
    from sslmem.service.webhooks import DeliveryOutcome, WebhookVerifier, sign

    current, previous = tmp_path / "webhook-secret", tmp_path / "webhook-secret-previous"
    current.write_text("old-secret")
    settings = ServiceSettings.load(
        webhook_secret_file=current, webhook_secret_previous_file=previous
    )
    verifier = WebhookVerifier(webhook_secrets(settings, check_s=0.0))

    def outcome(secret: str) -> DeliveryOutcome:
        body = (
            b'{"entity": "model_version", "action": "created", "timestamp": "t",'
            b' "data": {"name": "enc", "version": "1"}}'
        )
        delivery, timestamp = uuid.uuid4().hex, str(int(time.time()))
        headers = {
            "X-MLflow-Delivery-Id": delivery,
            "X-MLflow-Timestamp": timestamp,
            "X-MLflow-Signature": sign(secret, delivery, timestamp, body),
        }
        return verifier.verify(headers, body).outcome

    assert outcome("old-secret") is DeliveryOutcome.ACCEPTED
    assert outcome("new-secret") is DeliveryOutcome.FORGED
    _rewrite(previous, "old-secret")  # step 1: old -> previous, new -> current
    _rewrite(current, "new-secret")
    assert outcome("old-secret") is DeliveryOutcome.ACCEPTED
    assert outcome("new-secret") is DeliveryOutcome.ACCEPTED
    previous.unlink()  # step 3: the previous key removed
    assert outcome("old-secret") is DeliveryOutcome.FORGED
    assert outcome("new-secret") is DeliveryOutcome.ACCEPTED


def _value(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
