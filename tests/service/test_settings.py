"""ServiceSettings: env, files, secrets that never show."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from sslmem.errors import ConfigError
from sslmem.service.settings import ServiceSettings

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
        ServiceSettings.load(**overrides)


def test_docs_table_lists_every_setting() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "service.md").read_text()
    for name in ServiceSettings.model_fields:
        if name.endswith("_file"):
            continue  # documented beside its secret: `WEBHOOK_SECRET` / `WEBHOOK_SECRET_FILE`
        assert f"`{name.upper()}" in docs, name
