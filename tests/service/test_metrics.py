"""The service's Prometheus metrics: names, labels, values, bounded cardinality, promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from sslmem.errors import CheckpointError, ManifestMismatchError, TrackingError
from sslmem.memorization.judgement import JudgementPolicy, judge
from sslmem.service.metrics import (
    POLICY_SETTINGS,
    FailureReason,
    LabelPolicy,
    ServiceMetrics,
    VersionRecord,
    failure_reason,
    label_eligibility,
    model_policy,
)
from tests.memorization.scored import make_summary, make_version

if TYPE_CHECKING:
    from sslmem.tracking import TrackingTarget

CAND = [0.10, 0.12, 0.08, 0.15, 0.11]  # mean 0.112; 3 of 5 above 0.1
CHAMP = [0.07, 0.10, 0.07, 0.11, 0.09]  # mean 0.088
POLICY = JudgementPolicy(alpha=0.01, min_delta=0.005, accuracy_gain=0.01, threshold=0.1)
ALLOWED_LABELS = {"model", "version", "alias", "set", "verdict", "outcome", "quantity", "reason"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: ServiceMetrics) -> Samples:
    text = metrics.render().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> set[tuple[str, str]]:
    """(version, alias) label pairs present for a per-version metric."""
    return {
        (dict(labels)["version"], dict(labels)["alias"])
        for sample_name, labels in samples
        if sample_name == name
    }


def test_service_wide_metrics() -> None:
    metrics = ServiceMetrics()
    metrics.observe_scoring(3.0)
    metrics.observe_scoring(100.0)
    metrics.set_queue_depth(4)
    metrics.version_scored("enc", now=1_700_000_000.0)
    metrics.version_scored("enc", now=1_700_000_100.0)
    metrics.version_failed("enc", FailureReason.INVALID_CHECKPOINT)
    metrics.version_failed("other", "missing_provenance")
    metrics.webhook_delivery("accepted")
    metrics.webhook_delivery("accepted")
    metrics.webhook_delivery("forged")
    s = scrape(metrics)
    assert value(s, "sslmem_scoring_duration_seconds_count") == 2
    assert value(s, "sslmem_scoring_duration_seconds_sum") == 103.0
    assert value(s, "sslmem_scoring_duration_seconds_bucket", le="1.0") == 0
    assert value(s, "sslmem_scoring_duration_seconds_bucket", le="5.0") == 1
    assert value(s, "sslmem_scoring_duration_seconds_bucket", le="120.0") == 2
    assert value(s, "sslmem_queue_depth") == 4
    assert value(s, "sslmem_versions_scored_total", model="enc") == 2
    assert value(s, "sslmem_last_success_timestamp_seconds") == 1_700_000_100.0
    assert value(s, "sslmem_versions_failed_total", model="enc", reason="invalid_checkpoint") == 1
    assert value(s, "sslmem_versions_failed_total", model="other", reason="missing_provenance") == 1
    assert value(s, "sslmem_webhook_deliveries_total", outcome="accepted") == 2
    assert value(s, "sslmem_webhook_deliveries_total", outcome="forged") == 1
    # every outcome is exported from the start
    for outcome in ("duplicate", "unsigned", "unconfigured", "stale", "malformed", "oversized"):
        assert value(s, "sslmem_webhook_deliveries_total", outcome=outcome) == 0
    assert value(s, "sslmem_webhook_deliveries_total", outcome="ignored") == 0


def test_labels_outside_the_enums_are_refused() -> None:
    metrics = ServiceMetrics()
    with pytest.raises(ValueError, match="unknown webhook outcome 'weird'"):
        metrics.webhook_delivery("weird")
    with pytest.raises(ValueError):
        metrics.version_failed("enc", "disk on fire")
    with pytest.raises(ValueError, match="positive integer"):
        metrics.set_version("enc", "champion", summary=None)


def test_dedicated_registries_do_not_collide() -> None:
    first, second = ServiceMetrics(), ServiceMetrics()
    first.set_queue_depth(7)
    assert value(scrape(second), "sslmem_queue_depth") == 0
    assert not any(name.startswith("sslmem_") for name in REGISTRY._names_to_collectors)


def test_version_gauges_from_summary_and_judgement() -> None:
    candidate, champion = make_version(CAND, version="2"), make_version(CHAMP, version="1")
    judgement = judge(candidate, champion, POLICY)
    metrics = ServiceMetrics()
    metrics.set_version(
        "enc", "2", summary=make_summary(candidate.sslmem), judgement=judgement, aliases=()
    )
    s = scrape(metrics)
    at = {"model": "enc", "version": "2", "alias": ""}
    assert value(s, "sslmem_version_sslmem_mean", set="candidate", **at) == pytest.approx(0.112)
    assert value(s, "sslmem_version_sslmem_mean", set="independent", **at) == pytest.approx(0.0)
    assert value(s, "sslmem_version_fraction_above_threshold", **at) == pytest.approx(0.6)
    assert value(s, "sslmem_version_verdict", verdict="passed", **at) == 1
    assert value(s, "sslmem_version_verdict", verdict="failed", **at) == 0
    assert value(s, "sslmem_version_verdict", verdict="inconclusive", **at) == 0
    assert value(s, "sslmem_version_knn_accuracy", **at) == pytest.approx(0.80)
    assert value(s, "sslmem_version_linear_probe_accuracy", **at) == pytest.approx(0.85)
    assert value(s, "sslmem_version_champion_delta", quantity="sslmem_mean", **at) == (
        pytest.approx(0.024)
    )
    # above 0.1: candidate 3 of 5, champion 1 of 5
    delta_fraction = value(
        s, "sslmem_version_champion_delta", quantity="fraction_above_threshold", **at
    )
    assert delta_fraction == pytest.approx(0.4)
    assert value(s, "sslmem_version_champion_delta", quantity="knn_accuracy", **at) == 0
    assert value(s, "sslmem_version_judgement", outcome="regression", **at) == 1
    for other in ("improvement", "neutral", "incomparable"):
        assert value(s, "sslmem_version_judgement", outcome=other, **at) == 0
    assert value(s, "sslmem_version_regression", **at) == 1
    labels = {name for _, label_set in s for name, _ in label_set}
    assert labels <= ALLOWED_LABELS | {"le"}


def test_incomparable_version_has_no_deltas_and_regression_zero() -> None:
    candidate = make_version(CAND, version="3")
    judgement = judge(candidate, make_version(CHAMP, version="1", layer="head"), POLICY)
    metrics = ServiceMetrics()
    metrics.set_version(
        "enc", "3", summary=make_summary(candidate.sslmem), judgement=judgement, knn_accuracy=0.7
    )
    s = scrape(metrics)
    at = {"model": "enc", "version": "3", "alias": ""}
    assert value(s, "sslmem_version_regression", **at) == 0
    assert value(s, "sslmem_version_judgement", outcome="incomparable", **at) == 1
    assert value(s, "sslmem_version_knn_accuracy", **at) == pytest.approx(0.7)
    assert series(s, "sslmem_version_champion_delta") == set()
    assert series(s, "sslmem_version_linear_probe_accuracy") == set()  # none given


def _scored(metrics: ServiceMetrics, version: int, aliases: tuple[str, ...] = ()) -> None:
    summary = make_summary(make_version(CAND).sslmem)
    metrics.set_version("enc", str(version), summary=summary, aliases=aliases)


def test_only_aliased_and_latest_versions_have_series_and_losers_are_removed() -> None:
    metrics = ServiceMetrics(labels=LabelPolicy(latest=3))
    for version in range(1, 11):
        _scored(metrics, version, ("champion",) if version == 2 else ())
    name = "sslmem_version_verdict"
    expected = {("2", "champion"), ("8", ""), ("9", ""), ("10", "")}
    assert series(scrape(metrics), name) == expected
    assert series(scrape(metrics), "sslmem_version_sslmem_mean") == expected
    metrics.set_aliases("enc", {"champion": "9"})  # the alias moves: version 2 loses its series
    assert series(scrape(metrics), name) == {("8", ""), ("9", "champion"), ("10", "")}
    _scored(metrics, 11)  # a newer version pushes 8 out
    assert series(scrape(metrics), name) == {("9", "champion"), ("10", ""), ("11", "")}
    metrics.forget_version("enc", "11")
    assert series(scrape(metrics), name) == {("8", ""), ("9", "champion"), ("10", "")}
    # 3 verdict states per labelled version, however many versions exist
    assert sum(1 for key in scrape(metrics) if key[0] == name) == 9


def test_rebuild_replaces_everything() -> None:
    metrics = ServiceMetrics()
    _scored(metrics, 1)
    summary = make_summary(make_version(CHAMP).sslmem)
    metrics.rebuild(
        [
            VersionRecord("other", "4", ("champion",), summary, linear_probe_accuracy=0.9),
            VersionRecord("other", "5", (), summary),
        ]
    )
    s = scrape(metrics)
    models = {dict(labels).get("model") for name, labels in s if name.startswith("sslmem_version_")}
    assert models == {"other"}
    assert series(s, "sslmem_version_verdict") == {("4", "champion"), ("5", "")}
    at = {"model": "other", "version": "4", "alias": "champion"}
    assert value(s, "sslmem_version_sslmem_mean", set="candidate", **at) == pytest.approx(0.088)
    assert value(s, "sslmem_version_linear_probe_accuracy", **at) == pytest.approx(0.9)


def test_label_eligibility_policy() -> None:
    versions = {
        "1": ["champion"],
        "2": ["challenger", "staging"],
        "3": [],
        "4": ["zz-temp"],
        "5": [],
        "12": [],
    }
    assert label_eligibility(versions, LabelPolicy(latest=2)) == {
        "1": ("champion",),
        "2": ("challenger", "staging"),
        "4": ("zz-temp",),
        "5": ("",),
        "12": ("",),  # numeric order: 12 is newer than 5
    }
    only_champion = LabelPolicy(latest=1, aliases=frozenset({"champion"}))
    assert label_eligibility(versions, only_champion) == {"1": ("champion",), "12": ("",)}
    # at most 2 alias names per model: challenger, champion (sorted)
    capped = LabelPolicy(latest=0, max_aliases=2)
    assert label_eligibility(versions, capped) == {"1": ("champion",), "2": ("challenger",)}
    assert label_eligibility({}, LabelPolicy()) == {}


def test_failure_reason_of_errors() -> None:
    assert failure_reason(CheckpointError("corrupt")) is FailureReason.INVALID_CHECKPOINT
    assert failure_reason(ManifestMismatchError("other data")) is FailureReason.DATA
    assert failure_reason(TrackingError("down")) is FailureReason.TRACKING
    assert failure_reason(RuntimeError("bug")) is FailureReason.INTERNAL


def test_exposition_passes_promtool_check_metrics() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        hint = "promtool not installed: apt-get install -y --no-install-recommends prometheus"
        if os.environ.get("CI"):  # `make test` installs it: in CI its absence is a failure
            pytest.fail(hint)
        pytest.skip(hint)
    metrics = ServiceMetrics()
    candidate, champion = make_version(CAND, version="2"), make_version(CHAMP, version="1")
    metrics.set_version(
        "enc",
        "2",
        summary=make_summary(candidate.sslmem),
        judgement=judge(candidate, champion, POLICY),
        aliases=("champion",),
    )
    metrics.observe_scoring(12.0)
    metrics.version_scored("enc")
    metrics.version_failed("enc", FailureReason.DATA)
    metrics.webhook_delivery("duplicate")
    metrics.set_policy("enc", JudgementPolicy(budget_mean=0.02))
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics.render(),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
    assert done.stdout.strip() == b"" and done.stderr.strip() == b"", done.stderr.decode()


def policy_series(samples: Samples) -> dict[str, dict[str, float]]:
    """``{model: {setting: value}}`` of every ``sslmem_model_policy`` sample."""
    out: dict[str, dict[str, float]] = {}
    for (name, labels), v in samples.items():
        if name == "sslmem_model_policy":
            found = dict(labels)
            assert set(found) == {"model", "setting"}
            out.setdefault(found["model"], {})[found["setting"]] = v
    return out


def test_policy_settings_are_the_judgement_policy_fields() -> None:
    # A new policy field must be exported (or deliberately left out here).
    assert set(POLICY_SETTINGS) == set(JudgementPolicy.model_fields)


def test_model_policy_gauge_set_dropped_and_rebuilt() -> None:
    metrics = ServiceMetrics()
    metrics.set_policy("a", JudgementPolicy(budget_fraction=0.25, threshold=0.3))
    metrics.set_policy("b", JudgementPolicy())
    assert policy_series(scrape(metrics)) == {
        "a": {"alpha": 0.01, "min_delta": 0.005, "accuracy_gain": 0.01, "threshold": 0.3,
              "budget_fraction": 0.25},
        "b": {"alpha": 0.01, "min_delta": 0.005, "accuracy_gain": 0.01, "threshold": 0.1},
    }  # fmt: skip
    metrics.set_policy("b", None)
    assert set(policy_series(scrape(metrics))) == {"a"}
    metrics.rebuild([], {"c": JudgementPolicy(budget_mean=0.5), "d": None})
    assert policy_series(scrape(metrics)) == {
        "c": {"alpha": 0.01, "min_delta": 0.005, "accuracy_gain": 0.01, "threshold": 0.1,
              "budget_mean": 0.5},
    }  # fmt: skip


def test_model_policy_of_invalid_tags_is_none() -> None:
    defaults = JudgementPolicy(min_delta=0.003)
    assert model_policy("m", {"sslmem.policy.alpha": "abc"}, defaults) is None
    assert model_policy("m", {"sslmem.policy.budget_fraction": "2"}, defaults) is None
    assert model_policy("m", {"other": "x"}, defaults) == defaults


def test_model_policy_gauge_from_registered_model_tags_in_mlflow(
    local_mlflow: TrackingTarget, tmp_path: Path
) -> None:
    """Start-up rebuild and the reconcile pass read each model's policy tags from MLflow."""
    from sslmem.service.core import ScoringService
    from sslmem.service.worker import Job
    from sslmem.tracking.connection import client
    from tests.service.scoring_setup import runtime_settings, service_settings

    mlflow_client = client()
    mlflow_client.create_registered_model(
        "tagged", tags={"sslmem.policy.budget_mean": "0.02", "sslmem.policy.threshold": "0.2"}
    )
    mlflow_client.create_registered_model("plain")
    mlflow_client.create_registered_model("broken", tags={"sslmem.policy.alpha": "often"})
    settings = service_settings(policy={"min_delta": 0.003})  # service default, not the library's
    runtime = runtime_settings(local_mlflow.tracking_uri, tmp_path / "store")
    service = ScoringService(settings, runtime)

    assert service.rebuild_metrics() == 0  # no versions, but every model's policy
    assert policy_series(scrape(service.metrics)) == {
        "tagged": {"alpha": 0.01, "min_delta": 0.003, "accuracy_gain": 0.01, "threshold": 0.2,
                   "budget_mean": 0.02},
        "plain": {"alpha": 0.01, "min_delta": 0.003, "accuracy_gain": 0.01, "threshold": 0.1},
    }  # fmt: skip

    mlflow_client.set_registered_model_tag("plain", "sslmem.policy.budget_fraction", "0.3")
    mlflow_client.set_registered_model_tag("tagged", "sslmem.policy.budget_mean", "none")
    mlflow_client.set_registered_model_tag("broken", "sslmem.policy.alpha", "0.05")
    # A version of "plain" scored or judged: the worker re-reads that model (only).
    service.worker._refresh(Job("plain", "1"))
    after_job = policy_series(scrape(service.metrics))
    assert after_job["plain"]["budget_fraction"] == 0.3
    assert after_job["tagged"]["budget_mean"] == 0.02 and "broken" not in after_job
    # Tags changed without a new version: the next reconcile pass updates every model.
    assert service.reconciler.run_once().error is None
    assert policy_series(scrape(service.metrics)) == {
        "tagged": {"alpha": 0.01, "min_delta": 0.003, "accuracy_gain": 0.01, "threshold": 0.2},
        "plain": {"alpha": 0.01, "min_delta": 0.003, "accuracy_gain": 0.01, "threshold": 0.1,
                  "budget_fraction": 0.3},
        "broken": {"alpha": 0.05, "min_delta": 0.003, "accuracy_gain": 0.01, "threshold": 0.1},
    }  # fmt: skip
