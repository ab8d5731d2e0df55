"""The ``EnvSettings`` classes: defaults, a bad value named as its variable, misspelt ones refused.

``SSLMEM_SERVICE_LEASE_*`` outside the service (:class:`LeaseEnvSettings`), ``SSLMEM_TRAIN_*``
(:class:`TrainProcessSettings`, :class:`TrainStepSettings`) and ``SSLMEM_TRAINJOB_*``
(:class:`TrainJobSettings`); docs/configuration.md lists every variable.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sslmem.config import RuntimeSettings
from sslmem.coordination.settings import LeaseEnvSettings, LeaseSettings
from sslmem.env_settings import EnvSettings
from sslmem.errors import ConfigError
from sslmem.pipelines.platform import DataCache, TaskProfile
from sslmem.pipelines.settings import (
    DEFAULT_TIMEOUT_S,
    TrainJobSettings,
    TrainStepSettings,
    forwarded_environment,
)
from sslmem.training.launch import processes_per_node
from sslmem.training.settings import TrainProcessSettings
from sslmem.workflow.scoring_settings import LEASE_ENV, lease_settings_from_env

CLASSES: list[type[EnvSettings]] = [
    LeaseEnvSettings,
    TrainProcessSettings,
    TrainStepSettings,
    TrainJobSettings,
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith(("SSLMEM_SERVICE_LEASE_", "SSLMEM_TRAIN")):
            monkeypatch.delenv(name)


def test_defaults_are_unchanged() -> None:
    lease = lease_settings_from_env()
    assert (lease.prefix, lease.ttl_s, lease.renew_s) == ("leases", 120.0, 30.0)
    assert lease.holder  # host name and pid
    assert processes_per_node() == 1 == processes_per_node({})
    step = TrainStepSettings.from_environ()
    assert (step.nproc_per_node, step.nodes, step.profile, step.image) == (1, 1, None, None)
    assert (step.secrets, step.data_cache) == (None, None)
    job = TrainJobSettings.from_environ()
    assert (job.namespace, job.timeout_s) == (None, 7 * 24 * 3600.0)
    assert DEFAULT_TIMEOUT_S == 7 * 24 * 3600.0


def test_the_lease_variables_are_the_services() -> None:
    from sslmem.service.settings import valid_env_names

    assert set(LeaseEnvSettings.env_names()) == set(LEASE_ENV.values())
    assert set(LeaseEnvSettings.env_names()) <= set(valid_env_names())
    service = {f.removeprefix("lease_"): v.default for f, v in _service_lease_fields().items()}
    ours = {f: v.default for f, v in LeaseEnvSettings.model_fields.items()}
    assert service == ours


def _service_lease_fields() -> dict[str, object]:
    from sslmem.service.settings import ServiceSettings

    return {k: v for k, v in ServiceSettings.model_fields.items() if k.startswith("lease_")}


def test_values_are_read_from_the_environment_or_a_given_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSLMEM_SERVICE_LEASE_TTL_S", "400")
    monkeypatch.setenv("sslmem_service_lease_prefix", "locks")  # any case names the setting
    lease = lease_settings_from_env()
    assert (lease.prefix, lease.ttl_s) == ("locks", 400.0)
    assert isinstance(lease, LeaseSettings)
    # A given mapping is read instead of the process environment, not merged with it.
    assert LeaseEnvSettings.from_environ({}).ttl_s == 120.0
    profile = TaskProfile(processes_per_node=2)
    cache = DataCache(pvc_name="cache")
    step = TrainStepSettings.from_environ(
        {
            "SSLMEM_TRAIN_NODES": " 3 ",
            "SSLMEM_TRAIN_NPROC_PER_NODE": "2",
            "SSLMEM_TRAIN_PROFILE": profile.model_dump_json(),
            "SSLMEM_TRAIN_IMAGE": "reg.example/sslmem:1",
            "SSLMEM_TRAIN_SECRETS": "[]",
            "SSLMEM_TRAIN_DATA_CACHE": cache.model_dump_json(),
        }
    )
    assert (step.nodes, step.nproc_per_node, step.image) == (3, 2, "reg.example/sslmem:1")
    assert (step.profile, step.secrets, step.data_cache) == (profile, [], cache)
    job = TrainJobSettings.from_environ(
        {"SSLMEM_TRAINJOB_NAMESPACE": "ml", "SSLMEM_TRAINJOB_TIMEOUT_S": "60"}
    )
    assert (job.namespace, job.timeout_s) == ("ml", 60.0)


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_value_is_unset(blank: str) -> None:
    assert TrainJobSettings.from_environ({"SSLMEM_TRAINJOB_NAMESPACE": blank}).namespace is None
    assert TrainJobSettings.from_environ({"SSLMEM_TRAINJOB_TIMEOUT_S": blank}).timeout_s == (
        DEFAULT_TIMEOUT_S
    )
    assert TrainStepSettings.from_environ({"SSLMEM_TRAIN_NODES": blank}).nodes == 1
    assert processes_per_node({"SSLMEM_TRAIN_NPROC_PER_NODE": blank}) == 1


@pytest.mark.parametrize(
    ("settings_cls", "variable", "value", "message"),
    [
        (LeaseEnvSettings, "SSLMEM_SERVICE_LEASE_TTL_S", "abc", "valid number"),
        (LeaseEnvSettings, "SSLMEM_SERVICE_LEASE_TTL_S", "-1", "greater than 0"),
        (LeaseEnvSettings, "SSLMEM_SERVICE_LEASE_RENEW_S", "100", "at most half"),
        (TrainProcessSettings, "SSLMEM_TRAIN_NPROC_PER_NODE", "65", "less than or equal to 64"),
        (TrainStepSettings, "SSLMEM_TRAIN_NODES", "two", "valid integer"),
        (TrainStepSettings, "SSLMEM_TRAIN_PROFILE", "{", "Invalid JSON"),
        (TrainStepSettings, "SSLMEM_TRAIN_SECRETS", '[{"name": 1}]', "SSLMEM_TRAIN_SECRETS"),
        (TrainJobSettings, "SSLMEM_TRAINJOB_TIMEOUT_S", "soon", "valid number"),
        (TrainJobSettings, "SSLMEM_TRAINJOB_TIMEOUT_S", "0", "greater than 0"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable_and_the_fix(
    settings_cls: type[EnvSettings],
    variable: str,
    value: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for environ in ({variable: value}, None):  # a given mapping, then the process environment
        if environ is None:
            monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError) as info:
            settings_cls.from_environ(environ)
        text = str(info.value)
        assert variable in text and message in text, text
        assert info.value.fix and "docs/configuration.md" in info.value.fix
        assert "Traceback" not in text


def test_a_bad_lease_variable_fails_the_pipelines_lease_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSLMEM_SERVICE_LEASE_TTL_S", "ten")
    with pytest.raises(ConfigError, match=r"SSLMEM_SERVICE_LEASE_TTL_S: .*\(got 'ten'\)"):
        lease_settings_from_env()


@pytest.mark.parametrize(
    ("settings_cls", "misspelt"),
    [
        (LeaseEnvSettings, "SSLMEM_SERVICE_LEASE_TTL"),
        (TrainStepSettings, "SSLMEM_TRAIN_NODE"),
        (TrainStepSettings, "sslmem_train_nproc"),
        (TrainJobSettings, "SSLMEM_TRAINJOB_NAMESPCE"),
    ],
)
def test_a_misspelt_variable_is_refused_naming_it_and_the_valid_ones(
    settings_cls: type[EnvSettings], misspelt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for environ in ({misspelt: "1"}, None):
        if environ is None:
            monkeypatch.setenv(misspelt, "1")
        with pytest.raises(ConfigError, match=f"unknown environment variable.*{misspelt}") as info:
            settings_cls.from_environ(environ)
        assert all(name in (info.value.fix or "") for name in settings_cls.env_names())


def test_the_library_process_count_leaves_the_pipelines_variables_alone() -> None:
    # TrainProcessSettings shares SSLMEM_TRAIN_ with the pipeline's TrainStepSettings.
    assert processes_per_node({"SSLMEM_TRAIN_NODES": "2", "SSLMEM_TRAIN_NPROC_PER_NODE": "4"}) == 4


def test_every_variable_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`(SSLMEM_[A-Z0-9_]+)`", doc))
    names = {name for cls in CLASSES for name in cls.env_names()}
    names |= {f"SSLMEM_{field.upper()}" for field in RuntimeSettings.model_fields}
    assert names <= documented, sorted(names - documented)


def test_forwarded_environment_passes_on_only_the_set_plain_settings() -> None:
    env = {"SSLMEM_STORE_URI": "s3://b/p", "SSLMEM_DEVICE": "", "SSLMEM_S3_SECRET_KEY": "x"}
    assert forwarded_environment(env) == {"SSLMEM_STORE_URI": "s3://b/p"}
