"""Generate the sslmem Grafana dashboard (``grafana-foundation-sdk``), never hand-edit its JSON.

Run from the repository root::

    python deploy/grafana/dashboard.py            # (re)write both committed copies
    python deploy/grafana/dashboard.py --check    # exit 1 if a committed copy is out of date
    python deploy/grafana/dashboard.py --out x.json

The same JSON is written to ``deploy/grafana/sslmem-dashboard.json`` (Grafana UI import) and
``helm/sslmem/files/sslmem-dashboard.json`` (the chart's sidecar ConfigMap). Output is
deterministic (sorted keys, two-space indent, trailing newline), so ``--check`` can compare bytes.

Queries read the metrics of ``GET /metrics`` (docs/service.md, "Metrics") of job ``sslmem``, the
recording rules of ``deploy/prometheus/sslmem-rules.yaml`` where one exists (so a panel shows
what the alerts evaluate) and the ``ALERTS`` series of its alerts. Per-version gauges are
exported by every replica (each rebuilds them from MLflow), so they are aggregated with ``max by
(model, version, alias)`` -- one series per version whatever the number of replicas -- and
counters with ``sum``. Memorisation is mean raw SSLMem over the candidate set S_C (Wang et al.,
ICLR 2024, Eq. 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries, xychart
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import prometheus as prom_m
from grafana_foundation_sdk.models import xychart as xy_m

ROOT = Path(__file__).resolve().parents[2]
#: Where the generator writes (both copies must stay identical).
OUTPUTS = (
    ROOT / "deploy" / "grafana" / "sslmem-dashboard.json",
    ROOT / "helm" / "sslmem" / "files" / "sslmem-dashboard.json",
)
UID = "sslmem-overview"
TITLE = "sslmem: memorisation and scoring service"
TAGS = ["sslmem", "ml", "memorisation"]
#: Panels and targets refer to the datasource variable, never to an instance's uid.
DATASOURCE = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: Version metrics are selected per model; "All" matches any model (``.*``).
MODEL = 'model=~"$model"'
#: The scrape job of the service (the rules and the chart's ServiceMonitor use the same).
JOB = 'job="sslmem"'
#: Raw per-version gauges without a recording rule: one series per version, whatever the number
#: of replicas exporting it (the rules aggregate the same way).
BY_VERSION = "max by (model, version, alias)"
#: Recording rules of deploy/prometheus/sslmem-rules.yaml: the panels show exactly what the
#: alerts evaluate (already aggregated over replicas).
MEAN = f"sslmem:version_candidate_sslmem_mean{{{MODEL}}}"
DELTA = f"sslmem:version_champion_delta_sslmem_mean{{{MODEL}}}"
FRACTION = f"sslmem:version_fraction_above_threshold{{{MODEL}}}"
LEGEND_VERSION = "{{model}} v{{version}} {{alias}}"
#: Grafana's unit ids.
RATIO, SECONDS = "percentunit", "s"


def _query(
    expr: str, ref: str, legend: str = "", *, instant: bool = False, as_table: bool = False
) -> prom_b.Dataquery:
    """One Prometheus target (range by default; ``instant`` for stats and tables)."""
    target = (
        prom_b.Dataquery()
        .expr(expr)
        .ref_id(ref)
        .datasource(DATASOURCE)
        .editor_mode(prom_m.QueryEditorMode.CODE)
    )
    target = target.instant() if instant else target.range()
    if legend:
        target = target.legend_format(legend)
    if as_table:
        target = target.format(prom_m.PromQueryFormat.TABLE)
    return target


def _policy(setting: str) -> str:
    """A model's effective judgement-policy value (recording rule ``sslmem:model_policy``)."""
    return f'sslmem:model_policy{{{MODEL}, setting="{setting}"}}'


def _steps(*steps: tuple[float | None, str]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps([dash_m.Threshold(value=v, color=c) for v, c in steps])
    )


def _legend() -> common_b.VizLegendOptions:
    return (
        common_b.VizLegendOptions()
        .display_mode(common_m.LegendDisplayMode.TABLE)
        .placement(common_m.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
    )


def _dashed(color: str = "red") -> list[dash_m.DynamicConfigValue]:
    """Override properties for a policy line (threshold, budget) drawn as a series."""
    return [
        dash_m.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color}),
        dash_m.DynamicConfigValue(
            id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 6]}
        ),
        dash_m.DynamicConfigValue(id_val="custom.lineWidth", value=2),
    ]


def _timeseries(title: str, description: str, width: int = 12) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .legend(_legend())
        .tooltip(
            common_b.VizTooltipOptions()
            .mode(common_m.TooltipDisplayMode.MULTI)
            .sort(common_m.SortOrder.DESCENDING)
        )
        .line_width(2)
        .show_points(common_m.VisibilityMode.AUTO)
    )


def _stat(title: str, description: str, expr: str, unit: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(6)
        .height(4)
        .unit(unit)
        .with_target(_query(expr, "A", instant=True))
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(common_m.BigValueColorMode.BACKGROUND)
        .graph_mode(common_m.BigValueGraphMode.NONE)
    )


def _organize(exclude: Sequence[str], rename: dict[str, str]) -> dash_m.DataTransformerConfig:
    """Hide the bookkeeping columns of instant table queries and name the value columns."""
    return dash_m.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {name: True for name in exclude},
            "renameByName": rename,
            "indexByName": {},
        },
    )


#: Joins instant table queries into one row per version. Each query's metric name is dropped
#: first: a recording rule's result keeps ``__name__``, which would keep its rows apart.
_MERGE = dash_m.DataTransformerConfig(id_val="merge", options={})


def memorisation_panels() -> list[Builder[dash_m.Panel]]:
    """What the ML team reads: memorisation, Δ vs champion, accuracy, verdicts."""
    sslmem_mean = (
        _timeseries(
            "Mean SSLMem of S_C per model and alias",
            "Mean raw SSLMem over the candidate set S_C (Wang et al., ICLR 2024) of each "
            "labelled version: aliased versions (champion, ...) and the latest few unaliased "
            "ones. Red dashed: the model's memorisation budget (policy budget_mean), if set.",
            width=12,
        )
        .unit("none")
        .decimals(3)
        .with_target(
            _query(
                MEAN,
                "A",
                LEGEND_VERSION,
            )
        )
        .with_target(
            _query(
                _policy("budget_mean"),
                "B",
                "{{model}} budget_mean",
            )
        )
        .override_by_query("B", _dashed())
    )
    delta = (
        _timeseries(
            "Δ mean SSLMem vs champion (regression threshold dashed)",
            "Candidate minus champion mean SSLMem on S_C "
            '(sslmem_version_champion_delta{quantity="sslmem_mean"}). Red dashed: the model\'s '
            "policy min_delta. A version above the line AND significant at the policy's alpha "
            "without an accuracy gain is judged a regression "
            "(alert SSLMemRegressionAgainstChampion).",
            width=12,
        )
        .unit("none")
        .decimals(4)
        .with_target(
            _query(
                DELTA,
                "A",
                LEGEND_VERSION,
            )
        )
        .with_target(
            _query(
                _policy("min_delta"),
                "B",
                "{{model}} min_delta",
            )
        )
        .override_by_query("B", _dashed())
    )
    fraction = (
        _timeseries(
            "Fraction of S_C above the policy threshold",
            "Share of candidate points whose raw SSLMem exceeds the model's policy threshold. "
            "Red dashed: the model's budget_fraction, if set.",
            width=12,
        )
        .unit(RATIO)
        .min(0)
        .max(1)
        .with_target(
            _query(
                FRACTION,
                "A",
                LEGEND_VERSION,
            )
        )
        .with_target(
            _query(
                _policy("budget_fraction"),
                "B",
                "{{model}} budget_fraction",
            )
        )
        .override_by_query("B", _dashed())
    )
    accuracy_delta = (
        _timeseries(
            "Δ downstream accuracy vs champion",
            "Candidate minus champion kNN and linear-probe accuracy. A memorisation increase "
            "that comes with an accuracy gain of at least the policy's accuracy_gain (green "
            "dashed) on every measured accuracy is not judged a regression.",
            width=12,
        )
        .unit(RATIO)
        .with_target(
            _query(
                "max by (model, version, alias, quantity) (sslmem_version_champion_delta"
                f'{{{JOB}, {MODEL}, quantity=~"knn_accuracy|linear_probe_accuracy"}})',
                "A",
                LEGEND_VERSION + " {{quantity}}",
            )
        )
        .with_target(
            _query(
                _policy("accuracy_gain"),
                "B",
                "{{model}} accuracy_gain",
            )
        )
        .override_by_query("B", _dashed("green"))
    )
    accuracy_columns = {
        "Value #A": "mean SSLMem (S_C)",
        "Value #B": "Δ mean SSLMem",
        "Value #C": "kNN accuracy",
        "Value #D": "linear-probe accuracy",
        "Value #E": "fraction above threshold",
    }
    versions_table = (
        table.Panel()
        .title("Memorisation vs downstream accuracy per version")
        .description(
            "One row per labelled version: memorisation (mean SSLMem of S_C, its Δ vs the "
            "champion, fraction above threshold) next to downstream accuracy (kNN, linear "
            "probe). Lower memorisation at equal accuracy is better."
        )
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .with_target(
            _query(
                MEAN,
                "A",
                instant=True,
                as_table=True,
            )
        )
        .with_target(
            _query(
                DELTA,
                "B",
                instant=True,
                as_table=True,
            )
        )
        .with_target(
            _query(
                f"{BY_VERSION} (sslmem_version_knn_accuracy{{{JOB}, {MODEL}}})",
                "C",
                instant=True,
                as_table=True,
            )
        )
        .with_target(
            _query(
                f"{BY_VERSION} (sslmem_version_linear_probe_accuracy{{{JOB}, {MODEL}}})",
                "D",
                instant=True,
                as_table=True,
            )
        )
        .with_target(
            _query(
                FRACTION,
                "E",
                instant=True,
                as_table=True,
            )
        )
        .with_transformation(_organize(["__name__"], {}))
        .with_transformation(_MERGE)
        .with_transformation(_organize(["Time"], accuracy_columns))
        .decimals(4)
    )
    scatter = (
        xychart.Panel()
        .title("Mean SSLMem vs kNN accuracy per version")
        .description(
            "Each point is a labelled version: x = downstream kNN accuracy, y = mean SSLMem of "
            "S_C. Good versions sit bottom-right (accurate, memorising little)."
        )
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .with_target(
            _query(
                f"{BY_VERSION} (sslmem_version_knn_accuracy{{{JOB}, {MODEL}}})",
                "A",
                instant=True,
                as_table=True,
            )
        )
        .with_target(
            _query(
                MEAN,
                "B",
                instant=True,
                as_table=True,
            )
        )
        .with_transformation(_organize(["__name__"], {}))
        .with_transformation(_MERGE)
        .series_mapping(xy_m.SeriesMapping.MANUAL)
        .series(
            [
                xychart.ScatterSeriesConfig()
                .name("versions")
                .x("Value #A")
                .y("Value #B")
                .show(xy_m.ScatterShow.POINTS)
            ]
        )
    )
    verdicts = (
        table.Panel()
        .title("Protocol verdicts")
        .description(
            "The controls of each scoring run (sslmem_version_verdict): failed or "
            "inconclusive means the measurement itself cannot be trusted "
            "(alert SSLMemMeasurementUntrusted)."
        )
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .with_target(
            _query(
                f"sslmem:version_verdict{{{MODEL}}} == 1",
                "A",
                instant=True,
                as_table=True,
            )
        )
        .with_transformation(_organize(["Time", "Value", "__name__"], {}))
    )
    judgements = (
        table.Panel()
        .title("Judgements against the champion")
        .description(
            "Outcome of each version's comparison with its model's champion "
            "(sslmem_version_judgement): regression, improvement, neutral or incomparable."
        )
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .with_target(
            _query(
                f"max by (model, version, alias, outcome) "
                f"(sslmem_version_judgement{{{JOB}, {MODEL}}}) == 1",
                "A",
                instant=True,
                as_table=True,
            )
        )
        .with_transformation(_organize(["Time", "Value", "__name__"], {}))
    )
    return [
        sslmem_mean,
        delta,
        versions_table,
        scatter,
        fraction,
        accuracy_delta,
        verdicts,
        judgements,
    ]


def alert_panels() -> list[Builder[dash_m.Panel]]:
    """The firing SSLMem alerts (their runbooks: docs/runbooks.md)."""
    firing = (
        table.Panel()
        .title("Firing SSLMem alerts")
        .description(
            "Alerts of deploy/prometheus/sslmem-rules.yaml firing now, for the selected models "
            "and service-wide (no model label). Each has a runbook_url (docs/runbooks.md)."
        )
        .datasource(DATASOURCE)
        .span(24)
        .height(6)
        .no_value("no SSLMem alert firing")
        .with_target(
            _query(
                'ALERTS{alertname=~"SSLMem.*", alertstate="firing", model=~"$model|"}',
                "A",
                instant=True,
                as_table=True,
            )
        )
        .with_transformation(_organize(["Time", "Value", "__name__", "alertstate"], {}))
    )
    return [firing]


def service_panels() -> list[Builder[dash_m.Panel]]:
    """What the platform team reads: is the service up, scoring, keeping up."""
    up = _stat(
        "Replicas up",
        "Scrape targets of job sslmem answering (alerts SSLMemServiceDown, SSLMemTargetMissing).",
        'sum(up{job="sslmem"})',
        "none",
    ).thresholds(_steps((None, "red"), (1, "green")))
    since = (
        _stat(
            "Time since last successful scoring",
            "Now minus the newest sslmem_last_success_timestamp_seconds of any replica "
            "(alert SSLMemScoringStalled when versions wait and this grows).",
            "time() - (sslmem:last_success_timestamp_seconds > 0)",
            SECONDS,
        )
        .no_value("never")
        .thresholds(_steps((None, "green"), (3600, "orange")))
    )
    queue = _stat(
        "Queue depth",
        "Versions waiting to be scored: the largest replica queue (each replica queues every "
        "pending version it sees; leases decide who scores). Alert SSLMemBacklogGrowing.",
        "sslmem:queue_depth",
        "none",
    ).thresholds(_steps((None, "green"), (10, "orange")))
    forged = _stat(
        "Refused webhook deliveries (range)",
        "Forged, unsigned or stale deliveries in the selected range (alert "
        "SSLMemForgedWebhookDeliveries): someone probes the endpoint, or MLflow's webhook "
        "secret differs from the service's.",
        "sum(increase(sslmem_webhook_deliveries_total"
        f'{{{JOB}, outcome=~"forged|unsigned|stale"}}[$__range]))',
        "none",
    ).thresholds(_steps((None, "green"), (1, "red")))
    throughput = (
        _timeseries(
            "Scoring throughput (versions/h)",
            "Versions scored per hour by model, all replicas.",
        )
        .unit("none")
        .with_target(
            _query(
                f"sum by (model) (rate(sslmem_versions_scored_total{{{JOB}, {MODEL}}}"
                "[$__rate_interval])) * 3600",
                "A",
                "{{model}}",
            )
        )
    )
    duration = _timeseries(
        "Scoring duration quantiles",
        "Wall time of scoring one version (load, score, record), all replicas.",
    ).unit(SECONDS)
    for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C")):
        duration = duration.with_target(
            _query(
                f"histogram_quantile({q}, sum by (le) "
                f"(rate(sslmem_scoring_duration_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                ref,
                f"p{round(q * 100)}",
            )
        )
    queue_series = (
        _timeseries("Queue depth per replica", "Versions waiting to be scored, per replica.")
        .unit("none")
        .with_target(
            _query(f"sum by (instance) (sslmem_queue_depth{{{JOB}}})", "A", "{{instance}}")
        )
    )
    failures = (
        _timeseries(
            "Scoring failures in the last 15 min by reason",
            "Versions whose scoring failed in the last 15 minutes, by model and reason "
            "(recording rule sslmem:versions_failed:increase15m, which also counts a reason's "
            "first failure; docs/service.md lists the reasons; alert SSLMemScoringFailures).",
        )
        .unit("none")
        .with_target(
            _query(
                f"sslmem:versions_failed:increase15m{{{MODEL}}}",
                "A",
                "{{model}} {{reason}}",
            )
        )
    )
    retries = (
        _timeseries(
            "Retries by reason",
            "Jobs re-queued after a backoff because MLflow (tracking) or the object store "
            "did not answer: an outage of a dependency, not of a version.",
        )
        .unit("none")
        .draw_style(common_m.GraphDrawStyle.BARS)
        .with_target(
            _query(
                f"sum by (reason) (increase(sslmem_scoring_retries_total{{{JOB}}}"
                "[$__rate_interval]))",
                "A",
                "{{reason}}",
            )
        )
    )
    webhooks = (
        _timeseries(
            "Webhook deliveries by outcome",
            "MLflow webhook deliveries per outcome: accepted starts scoring; forged, unsigned "
            "and stale are refused (alert SSLMemForgedWebhookDeliveries); duplicate is a "
            "redelivery.",
        )
        .unit("none")
        .draw_style(common_m.GraphDrawStyle.BARS)
        .with_target(
            _query(
                f"sum by (outcome) (increase(sslmem_webhook_deliveries_total{{{JOB}}}"
                "[$__rate_interval]))",
                "A",
                "{{outcome}}",
            )
        )
    )
    webhook_totals = (
        bargauge.Panel()
        .title("Webhook deliveries in range by outcome")
        .description("Deliveries per outcome over the selected time range.")
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .unit("none")
        .with_target(
            _query(
                f"sum by (outcome) (increase(sslmem_webhook_deliveries_total{{{JOB}}}[$__range]))",
                "A",
                "{{outcome}}",
                instant=True,
            )
        )
        .orientation(common_m.VizOrientation.HORIZONTAL)
        .display_mode(common_m.BarGaugeDisplayMode.BASIC)
    )
    return [
        up,
        since,
        queue,
        forged,
        throughput,
        duration,
        queue_series,
        failures,
        retries,
        webhooks,
        webhook_totals,
    ]


def _variables() -> list[Builder[dash_m.VariableModel]]:
    datasource = dash_b.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
    model = (
        dash_b.QueryVariable("model")
        .label("Model")
        .datasource(DATASOURCE)
        .query("label_values(sslmem_version_sslmem_mean, model)")
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    return [datasource, model]


def build() -> dash_m.Dashboard:
    """The dashboard model: three rows (memorisation, alerts, service)."""
    board = (
        dash_b.Dashboard(TITLE)
        .uid(UID)
        .description(
            "Memorisation (SSLMem) of registered encoder versions against their champion, and "
            "the health of the sslmem scoring service. Generated by deploy/grafana/dashboard.py."
        )
        .tags(TAGS)
        .editable()
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .time("now-7d", "now")
        .timezone("browser")
        .refresh("1m")
        .variables(_variables())
        .link(
            dash_b.DashboardLink("Runbooks")
            .type(dash_m.DashboardLinkType.LINK)
            .url("https://github.com/sslmem/sslmem/blob/main/docs/runbooks.md")
            .target_blank(True)
        )
    )
    for title, panels in (
        ("Alerts", alert_panels()),
        ("Memorisation", memorisation_panels()),
        ("Scoring service", service_panels()),
    ):
        board = board.with_row(dash_b.Row(title))
        for panel in panels:
            board = board.with_panel(panel)
    model = board.build()
    # Stable panel ids (Grafana would otherwise assign them on import).
    for number, built in enumerate(model.panels or [], start=1):
        built.id_val = number
    return model


def render() -> str:
    """The dashboard JSON text, deterministic: sorted keys, two-space indent, final newline."""
    return json.dumps(build(), cls=JSONEncoder, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write (default) or ``--check`` the committed dashboard JSON; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        action="append",
        help="write here instead of the committed copies (repeatable)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a committed copy differs from the generator's output",
    )
    args = parser.parse_args(argv)
    text = render()
    targets = tuple(args.out) if args.out else OUTPUTS
    if args.check:
        stale = [p for p in targets if not p.is_file() or p.read_text(encoding="utf-8") != text]
        for path in stale:
            print(
                f"{path} is missing or out of date; regenerate it with: "
                "python deploy/grafana/dashboard.py",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # atomic: a reader never sees half a dashboard
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
