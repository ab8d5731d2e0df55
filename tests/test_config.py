from pathlib import Path

import pytest

from sslmem.config import RuntimeSettings, load_experiment_config, parse_overrides
from sslmem.errors import ConfigError


def test_defaults_file_and_overrides_compose(tmp_path: Path) -> None:
    file = tmp_path / "exp.yaml"
    file.write_text("scoring:\n  views: 4\n  layer: head\ntraining:\n  epochs: 3\n")
    config = load_experiment_config(file, ["scoring.views=6", "scoring.sets=[candidate,extra]"])
    assert config.scoring.views == 6  # --set wins over the file
    assert config.scoring.layer == "head"  # the file wins over defaults
    assert config.scoring.sets == ("candidate", "extra")
    assert config.training.epochs == 3
    assert config.model.arch == "small_cnn"  # default


def test_errors_name_the_field_and_allowed_values() -> None:
    with pytest.raises(ConfigError) as info:
        load_experiment_config(None, ["scoring.distance=manhattan", "training.epochs=0"])
    message = str(info.value)
    assert "scoring.distance" in message and "'l2' or 'cosine'" in message
    assert "training.epochs" in message


def test_unknown_fields_and_bad_overrides_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"scoring\.viewz"):
        load_experiment_config(None, ["scoring.viewz=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["scoring.views"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_experiment_config(bad)


def test_split_fractions_must_sum_to_one() -> None:
    with pytest.raises(ConfigError, match="sum to 1"):
        load_experiment_config(None, ["split.shared=0.9"])


def test_runtime_settings_from_env_keep_secrets_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSLMEM_DEVICE", "cpu")
    monkeypatch.setenv("SSLMEM_S3_ENDPOINT", "127.0.0.1:9000")
    monkeypatch.setenv("SSLMEM_S3_SECRET_KEY", "do-not-print")
    settings = RuntimeSettings()
    assert settings.device == "cpu" and settings.s3_endpoint == "127.0.0.1:9000"
    assert settings.s3_secret_key is not None
    assert settings.s3_secret_key.get_secret_value() == "do-not-print"
    assert "do-not-print" not in repr(settings)


def test_runtime_settings_have_no_secret_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSLMEM_S3_ACCESS_KEY", "SSLMEM_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = RuntimeSettings()
    assert settings.s3_access_key is None and settings.s3_secret_key is None


def test_a_bad_environment_variable_is_named_as_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSLMEM_NUM_THREADS", "two")
    monkeypatch.setenv("SSLMEM_S3_SECURE", "perhaps")
    with pytest.raises(ConfigError) as info:
        RuntimeSettings()
    message = str(info.value)
    assert "SSLMEM_NUM_THREADS" in message and "'two'" in message
    assert "SSLMEM_S3_SECURE" in message and "'perhaps'" in message
    assert "num_threads" not in message  # the field name means nothing to the user
    # A value passed in code (not from the environment) is named as the field.
    monkeypatch.delenv("SSLMEM_NUM_THREADS")
    monkeypatch.delenv("SSLMEM_S3_SECURE")
    with pytest.raises(ConfigError, match=r"  num_threads: .*greater than or equal to 1"):
        RuntimeSettings(num_threads=0)


def test_malformed_yaml_in_set_and_undecodable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"override 'scoring\.sets=\[candidate,'.*not valid YAML"):
        parse_overrides(["scoring.sets=[candidate,"])
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("scoring:\n  layer: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml is not UTF-8 text"):
        load_experiment_config(latin1)
    with pytest.raises(ConfigError, match="is a directory"):
        load_experiment_config(tmp_path)


def test_split_seed_must_be_non_negative() -> None:
    with pytest.raises(ConfigError, match=r"split\.seed"):
        load_experiment_config(None, ["split.seed=-1"])
    assert load_experiment_config(None, ["split.seed=0"]).split.seed == 0


def test_the_tracking_uri_falls_back_to_mlflows_own_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSLMEM_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert RuntimeSettings().mlflow_tracking_uri is None  # neither: the local store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert RuntimeSettings().mlflow_tracking_uri == "http://mlflow:5000"
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", "http://sslmem:5000")
    assert RuntimeSettings().mlflow_tracking_uri == "http://sslmem:5000"  # SSLMEM_ first
    # The field name still works as a keyword, like every other field's.
    assert RuntimeSettings(mlflow_tracking_uri="sqlite:///x.db").mlflow_tracking_uri == (
        "sqlite:///x.db"
    )
