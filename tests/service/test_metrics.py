"""The service's Prometheus metrics: names, labels, values, bounded cardinality, promtool."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from sslmem.errors import CheckpointError, ManifestMismatchError, TrackingError
from sslmem.memorization.judgement import JudgementPolicy, judge
from sslmem.memorization.scoring import CheckpointRef
from sslmem.service.metrics import (
    JOB_KINDS,
    JOB_OUTCOMES,
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
ALLOWED_LABELS = {
    "model", "version", "alias", "set", "verdict", "outcome", "quantity", "reason", "kind",
    "dependency",
}  # fmt: skip

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


def test_open_regressions_keep_their_series_after_newer_versions_arrive() -> None:
    # Versions faster than an alert's `for:` must not hide a regression (7 of 12 never fired).
    versions: dict[str, list[str]] = {str(v): [] for v in range(1, 10)}
    versions["2"] = ["champion"]
    policy = LabelPolicy(latest=2, regressions=2)
    # 1 is older than the champion (closed); 3, 4 and 6 are open, only the newest 2 are kept.
    eligible = label_eligibility(versions, policy, {"1", "3", "4", "6"})
    assert eligible == {"2": ("champion",), "4": ("",), "6": ("",), "8": ("",), "9": ("",)}
    # Promoting a newer champion closes the regressions older than it.
    versions["2"], versions["5"] = [], ["champion"]
    assert label_eligibility(versions, policy, {"1", "3", "4", "6"}) == {
        "5": ("champion",),
        "6": ("",),
        "8": ("",),
        "9": ("",),
    }
    # No champion: nothing was judged against one, so nothing is open; 0 turns it off.
    versions["5"] = []
    assert label_eligibility(versions, policy, {"6"}) == {"8": ("",), "9": ("",)}
    versions["2"] = ["champion"]
    assert label_eligibility(versions, LabelPolicy(latest=2, regressions=0), {"6"}) == {
        "2": ("champion",),
        "8": ("",),
        "9": ("",),
    }
    # Another alias name is not the champion.
    custom = LabelPolicy(latest=1, regressions=5, champion_alias="prod")
    assert "6" not in label_eligibility(versions, custom, {"6"})
    versions["2"] = ["prod"]
    assert "6" in label_eligibility(versions, custom, {"6"})


def test_a_regression_stays_exported_while_newer_neutral_versions_are_scored() -> None:
    metrics = ServiceMetrics(labels=LabelPolicy(latest=3))
    metrics.update_model("enc", [_record("2", True)], read_at=100.0)
    metrics.set_aliases("enc", {"champion": "1"})
    for version in range(3, 8):
        metrics.update_model(
            "enc",
            [_record("2", True)] + [_record(str(v), False) for v in range(3, version + 1)],
            read_at=100.0 + version,
        )
    s = scrape(metrics)
    assert value(s, "sslmem_version_regression", model="enc", version="2", alias="") == 1
    assert series(s, "sslmem_version_regression") == {("2", ""), ("5", ""), ("6", ""), ("7", "")}
    metrics.set_aliases("enc", {"champion": "6"})  # promoted past it: the alert may resolve
    assert ("2", "") not in series(scrape(metrics), "sslmem_version_regression")


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
    managed = {"sslmem.managed": "true"}  # opted in (other teams' models are never read)
    mlflow_client.create_registered_model(
        "tagged",
        tags={**managed, "sslmem.policy.budget_mean": "0.02", "sslmem.policy.threshold": "0.2"},
    )
    mlflow_client.create_registered_model("plain", tags=managed)
    mlflow_client.create_registered_model(
        "broken", tags={**managed, "sslmem.policy.alpha": "often"}
    )
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


# -- operability: job outcomes, dependencies, clock skew ------------------------------------------


def test_job_outcome_counters_are_a_fixed_enum_exported_from_zero() -> None:
    metrics = ServiceMetrics()
    s = scrape(metrics)
    for kind in JOB_KINDS:
        for outcome in JOB_OUTCOMES:
            assert value(s, "sslmem_jobs_total", kind=kind, outcome=outcome) == 0
    assert {"scored", "failed", "lost", "busy", "taken_over", "retried", "crashed", "skipped"} <= (
        set(JOB_OUTCOMES)
    )
    metrics.job_done("score", "taken_over")
    metrics.job_done("score", "taken_over")
    metrics.job_done("judge", "crashed")
    s = scrape(metrics)
    assert value(s, "sslmem_jobs_total", kind="score", outcome="taken_over") == 2
    assert value(s, "sslmem_jobs_total", kind="judge", outcome="crashed") == 1
    assert value(s, "sslmem_jobs_total", kind="score", outcome="crashed") == 0
    with pytest.raises(ValueError, match="unknown job kind/outcome"):
        metrics.job_done("score", "exploded")
    with pytest.raises(ValueError, match="unknown job kind/outcome"):
        metrics.job_done("train", "scored")


def test_dependency_and_clock_skew_gauges_appear_once_measured() -> None:
    metrics = ServiceMetrics()
    names = {name for name, _ in scrape(metrics)}
    assert "sslmem_dependency_up" not in names and "sslmem_clock_skew_seconds" not in names
    metrics.set_dependency("mlflow", True)
    metrics.set_dependency("object_store", False)
    metrics.set_clock_skew(-12.5)
    s = scrape(metrics)
    assert value(s, "sslmem_dependency_up", dependency="mlflow") == 1
    assert value(s, "sslmem_dependency_up", dependency="object_store") == 0
    assert value(s, "sslmem_clock_skew_seconds") == -12.5
    with pytest.raises(ValueError, match="unknown dependency"):
        metrics.set_dependency("postgres", True)


def test_each_champion_delta_is_its_own_quantity() -> None:
    """Kills the mutant exporting the kNN delta as the linear-probe delta (and vice versa)."""
    candidate = make_version(CAND, version="2", knn=0.80, probe=0.85)
    champion = make_version(CHAMP, version="1", knn=0.75, probe=0.60)
    judgement = judge(candidate, champion, POLICY)
    metrics = ServiceMetrics()
    metrics.set_version("enc", "2", summary=make_summary(candidate.sslmem), judgement=judgement)
    s = scrape(metrics)
    at = {"model": "enc", "version": "2", "alias": ""}
    delta = "sslmem_version_champion_delta"
    assert value(s, delta, quantity="knn_accuracy", **at) == pytest.approx(0.05)
    assert value(s, delta, quantity="linear_probe_accuracy", **at) == pytest.approx(0.25)
    assert value(s, "sslmem_version_knn_accuracy", **at) == pytest.approx(0.80)
    assert value(s, "sslmem_version_linear_probe_accuracy", **at) == pytest.approx(0.85)


def _record(version: str, regression: bool, read_at: float = 0.0) -> VersionRecord:
    candidate = make_version(CAND if regression else CHAMP, version=version)
    judgement = judge(candidate, make_version(CHAMP, version="1"), POLICY)
    assert judgement.regression is regression
    return VersionRecord(
        "enc", version, (), make_summary(candidate.sslmem), judgement, refreshed_at=read_at
    )


def test_update_model_replaces_drops_keeps_and_never_goes_back_in_time() -> None:
    metrics = ServiceMetrics()
    metrics.update_model("enc", [_record("2", True), _record("3", True)], read_at=100.0)
    s = scrape(metrics)
    at2 = {"model": "enc", "version": "2", "alias": ""}
    assert value(s, "sslmem_version_regression", **at2) == 1
    assert value(s, "sslmem_version_refreshed_timestamp_seconds", **at2) == 100.0
    # A newer reading: version 2 re-judged, version 3 gone (deleted, or no longer scored).
    metrics.update_model("enc", [_record("2", False)], read_at=200.0)
    s = scrape(metrics)
    assert value(s, "sslmem_version_regression", **at2) == 0
    assert value(s, "sslmem_version_refreshed_timestamp_seconds", **at2) == 200.0
    assert series(s, "sslmem_version_regression") == {("2", "")}
    # An older reading that finishes late (a slow pass) does not bring the past back ...
    metrics.update_model("enc", [_record("2", True), _record("3", True)], read_at=150.0)
    s = scrape(metrics)
    assert value(s, "sslmem_version_regression", **at2) == 0
    # ... and a version whose reading failed this time keeps its record.
    metrics.update_model("enc", [], read_at=300.0, keep={"2", "3"})
    assert series(scrape(metrics), "sslmem_version_regression") == {("2", ""), ("3", "")}
    metrics.update_model("enc", [], read_at=400.0)
    assert series(scrape(metrics), "sslmem_version_regression") == set()


def test_retain_models_drops_models_gone_from_the_listing_only() -> None:
    metrics = ServiceMetrics()
    metrics.update_model("enc", [_record("2", True)], read_at=100.0)
    metrics.set_policy("enc", POLICY)
    metrics.update_model("other", [replace(_record("4", True), model="other")], read_at=300.0)
    # A listing that began at 200 did not contain either: "enc" (read at 100) is gone, "other"
    # was read after the listing began (a job saw it: created meanwhile), so it stays.
    metrics.retain_models(set(), read_at=200.0)
    s = scrape(metrics)
    models = {dict(labels)["model"] for name, labels in s if name == "sslmem_version_regression"}
    assert models == {"other"}
    assert policy_series(s) == {}


# -- gauges follow MLflow: real local MLflow store -------------------------------------------------


def _client_model(name: str) -> None:
    from sslmem.tracking import tags as T
    from sslmem.tracking.connection import client

    client().create_registered_model(name, tags={T.MANAGED: T.MANAGED_VALUE})


def _scored_version(name: str, record: VersionRecord, tmp_path: Path) -> str:
    """A version tagged scored, with its score run's summary.json and its judgement tag."""
    import mlflow

    from sslmem.tracking import tags as T
    from sslmem.tracking.connection import client
    from sslmem.tracking.runs import SCORING_ARTIFACT_DIR

    assert record.summary is not None and record.judgement is not None
    sha = secrets.token_hex(32)  # the version's own checkpoint
    weights = CheckpointRef(path="w", sha256=sha, arch="small_cnn", representation={})
    summary = record.summary.model_copy(update={"candidates": [weights]})
    with mlflow.start_run() as run:
        mlflow.log_dict(summary.model_dump(mode="json"), f"{SCORING_ARTIFACT_DIR}/summary.json")
    tags = {
        T.STATUS: "scored",
        T.CHECKPOINT_SHA256: sha,
        T.PROVENANCE: T.dump_provenance({T.SCORE_RUN: run.info.run_id}),
        T.JUDGEMENT_JSON: record.judgement.model_dump_json(),
    }
    source = f"{run.info.artifact_uri}/{SCORING_ARTIFACT_DIR}"  # inside the run: any server
    found = client().create_model_version(name, source, run_id=run.info.run_id, tags=tags)
    return str(found.version)


def _rejudge(name: str, version: str, regression: bool) -> None:
    """What a replica's judge job writes: the version's judgement tag."""
    from sslmem.tracking import tags as T
    from sslmem.tracking.connection import client

    judgement = _record(version, regression).judgement
    assert judgement is not None
    client().set_model_version_tag(name, version, T.JUDGEMENT_JSON, judgement.model_dump_json())


def test_two_replicas_follow_a_rejudgement_and_forget_deleted_versions(
    local_mlflow: TrackingTarget, tmp_path: Path
) -> None:
    """Replica B re-judges a regression away; replica A's next pass shows it too (both 0).

    Two in-process replicas on one real MLflow store; nothing is scored (the judgement is the
    tag a judge job writes), so this runs in seconds. Deleting a version or its model removes
    its series at the next pass.
    """
    from sslmem.service.core import ScoringService
    from sslmem.service.worker import Job
    from sslmem.tracking.connection import client
    from tests.service.scoring_setup import runtime_settings, service_settings

    _client_model("enc")
    version = _scored_version("enc", _record("2", True), tmp_path)
    runtime = runtime_settings(local_mlflow.tracking_uri, tmp_path / "store")
    a = ScoringService(service_settings(replica_id="a"), runtime)
    b = ScoringService(service_settings(replica_id="b"), runtime)
    at = {"model": "enc", "version": version, "alias": ""}
    for replica in (a, b):  # the start-up rebuild (the first pass)
        assert replica.rebuild_metrics() == 1
        assert value(scrape(replica.metrics), "sslmem_version_regression", **at) == 1

    _rejudge("enc", version, regression=False)
    b.worker._refresh(Job("enc", version, "judge"))  # what B does after its judge job
    assert value(scrape(b.metrics), "sslmem_version_regression", **at) == 0
    stale = scrape(a.metrics)
    assert value(stale, "sslmem_version_regression", **at) == 1  # until A's next pass
    # B's reading is the newer one: the rules follow it even before A's pass.
    newer = value(scrape(b.metrics), "sslmem_version_refreshed_timestamp_seconds", **at)
    assert newer > value(stale, "sslmem_version_refreshed_timestamp_seconds", **at)
    assert a.reconciler.run_once(queue_jobs=False).error is None
    assert value(scrape(a.metrics), "sslmem_version_regression", **at) == 0

    # A deleted version loses its series at the next pass; so does a deleted model.
    second = _scored_version("enc", _record("3", True), tmp_path)
    _client_model("gone")
    _scored_version("gone", replace(_record("2", True), model="gone"), tmp_path)
    a.reconciler.run_once(queue_jobs=False)
    assert series(scrape(a.metrics), "sslmem_version_regression") == {(version, ""), (second, "")}
    client().delete_model_version("enc", version)
    client().delete_registered_model("gone")
    a.reconciler.run_once(queue_jobs=False)
    s = scrape(a.metrics)
    assert series(s, "sslmem_version_regression") == {(second, "")}
    assert {dict(labels)["model"] for name, labels in s if name.startswith("sslmem_version_")} == {
        "enc"
    }
    assert "gone" not in policy_series(s)


def test_a_scored_job_refreshes_the_gauges_of_its_version(
    local_mlflow: TrackingTarget, tmp_path: Path
) -> None:
    """Kills the mutant that drops the gauge refresh after scoring (fast, no scoring run)."""
    from sslmem.service.core import ScoringService
    from sslmem.workflow.score_version import VersionResult
    from tests.service.scoring_setup import runtime_settings, service_settings

    _client_model("enc")
    version = _scored_version("enc", _record("2", True), tmp_path)
    service = ScoringService(
        service_settings(), runtime_settings(local_mlflow.tracking_uri, tmp_path / "store")
    )
    at = {"model": "enc", "version": version, "alias": ""}
    assert series(scrape(service.metrics), "sslmem_version_regression") == set()
    service.worker._record(VersionResult("enc", version, "scored", seconds=2.0))
    s = scrape(service.metrics)
    assert value(s, "sslmem_version_regression", **at) == 1
    assert value(s, "sslmem_version_sslmem_mean", set="candidate", **at) == pytest.approx(0.112)
    assert value(s, "sslmem_versions_scored_total", model="enc") == 1
