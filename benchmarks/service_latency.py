"""Registration → judged and registration → alert latency, two replicas, a real Prometheus.

Starts the stack of ``benchmarks/service_load.py`` (SeaweedFS, ``mlflow server`` with webhooks,
tiny encoders, a reference), two ``sslmem serve`` replicas (one registry webhook each, reconcile
hourly) and two Prometheus servers scraping both replicas' ``/metrics`` every second (job
``sslmem``, evaluation every second): one with the shipped rules
(``deploy/prometheus/sslmem-rules.yaml``), one with a copy whose ``for:`` windows are all 0.

Then registers, one every ``--spacing`` seconds (unsaturated, so latency is not queueing):

* ``--versions`` versions of model ``latency`` whose registered-model tag
  ``sslmem.policy.budget_mean`` is far below any score: each is judged a regression (budget
  broken) and ``SSLMemRegressionAgainstChampion`` fires for it (one alert per version);
* ``--failures`` versions, each of its own opted-in model ``latency-fail-<i>``, created through
  MLflow's API with the creation tags of a good version (registered before the replicas
  start) but ``sslmem.knn_accuracy = 1.5``: MLflow stores any text (``sslmem register``
  refuses it), so a tool writing a bad tag at creation; each ends ``failed`` and
  ``SSLMemScoringFailures`` fires for its model (the alert is per model and reason).

A poller reads MLflow (the ``sslmem.judgement_json`` / ``sslmem.status`` tags) and both
Prometheus' ``/api/v1/alerts`` every ``--poll`` seconds and keeps the first time it saw each
judgement, failure and firing alert. Latencies are from the version's ``creation_timestamp``
(MLflow's clock, the same machine). It measures; it asserts nothing.

    python benchmarks/service_latency.py [--versions 10] [--failures 5] [--spacing 8]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ helpers (real servers)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # service_load's helpers

from service_load import _quantile, load_stack

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "sslmem-rules.yaml"
REGRESSION = "SSLMemRegressionAgainstChampion"
FAILURES = "SSLMemScoringFailures"


def _rules_without_for(path: Path) -> Path:
    """A copy of the shipped rules with every ``for:`` window set to 0 (fires at once)."""
    text, count = re.subn(r"(?m)^(\s+)for: \S+$", r"\1for: 0s", RULES.read_text())
    if count == 0:
        raise SystemExit(f"no `for:` found in {RULES}: the rules changed, update this script")
    path.write_text(text)
    return path


def _firing(prometheus_url: str) -> list[dict[str, str]]:
    """The labels of every alert firing now."""
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/alerts", timeout=10) as answer:
        alerts = json.load(answer)["data"]["alerts"]
    return [a["labels"] for a in alerts if a["state"] == "firing"]


class Poller(threading.Thread):
    """Keeps the first time each judgement, failure and firing alert was seen."""

    def __init__(self, client: Any, prometheus: dict[str, str], every: float) -> None:
        super().__init__(daemon=True)
        self.client, self.prometheus, self.every = client, prometheus, every
        self.first: dict[tuple[str, ...], float] = {}
        self.errors = 0
        self.stop = threading.Event()

    def _see(self, key: tuple[str, ...], now: float) -> None:
        self.first.setdefault(key, now)

    def run(self) -> None:
        from sslmem.tracking import tags as T

        while not self.stop.wait(self.every):
            try:
                now = time.time()
                found = self.client.search_model_versions("name LIKE 'latency%'", max_results=1000)
                for v in found:
                    if v.tags.get(T.JUDGEMENT_JSON):
                        self._see(("judged", v.name, str(v.version)), now)
                    if v.tags.get(T.STATUS) == "failed":
                        self._see(("failed", v.name, str(v.version)), now)
                for rules, url in self.prometheus.items():
                    now = time.time()
                    for labels in _firing(url):
                        if labels.get("alertname") == REGRESSION:
                            key = (rules, REGRESSION, labels["model"], labels["version"])
                            self._see(key, now)
                        elif labels.get("alertname") == FAILURES:
                            self._see((rules, FAILURES, labels["model"]), now)
            except Exception:  # a slow or busy server: count it, try again next tick
                self.errors += 1


def _stats(values: list[float], expected: int) -> dict[str, Any]:
    """p50/p95/max of ``values``; ``n`` of ``expected`` were seen (the rest never were)."""
    if not values:
        return {"n": 0, "of": expected}
    return {
        "n": len(values),
        "of": expected,
        "p50_s": round(statistics.median(values), 2),
        "p95_s": round(_quantile(values, 0.95), 2),
        "max_s": round(max(values), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10, help="budget-regression versions")
    parser.add_argument("--failures", type=int, default=5, help="out-of-range-accuracy models")
    parser.add_argument("--spacing", type=float, default=8.0, help="seconds between versions")
    parser.add_argument("--poll", type=float, default=0.25, help="poll interval, s")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="after the last version: wait for alerts, s"
    )
    args = parser.parse_args()

    from mlflow import MlflowClient
    from pydantic import SecretStr

    from sslmem.tracking import tags as T
    from sslmem.tracking.webhooks import ensure_webhook
    from sslmem.workflow.register_external import register_external_encoder
    from sslmem.workflow.scope import opt_in_model
    from tests.servers import start_prometheus
    from tests.service.test_service_e2e import SECRET, serve

    root = Path(tempfile.mkdtemp(prefix="sslmem-service-latency-"))
    with load_stack(root) as loaded:
        client = MlflowClient(loaded.stack[0].url)
        # Creation tags of a good candidate, read before any replica runs (nothing added yet).
        template = register_external_encoder(
            loaded.encoders.candidate, model_name="latency-template", split_uri=loaded.split_uri,
            reference_uri=loaded.reference_uri, settings=loaded.runtime,
        )  # fmt: skip
        good = client.get_model_version(template.name, template.version)
        # Out of range on purpose: the service must fail the version with a reason.
        bad_tags = {**good.tags, T.KNN_ACCURACY: "1.5"}
        # The same logged model (weights) as the good version; MLflow wants its id with it.
        logged_model = good.model_id or str(good.source).removeprefix("models:/")
        # A per-model budget no encoder meets: every version of `latency` breaks it.
        client.create_registered_model("latency", tags={"sslmem.policy.budget_mean": "-1000"})
        with (
            serve(root, loaded.stack, loaded.s3, "lat-a", reconcile_interval_s="3600") as (a, _),
            serve(root, loaded.stack, loaded.s3, "lat-b", reconcile_interval_s="3600") as (b, _),
        ):
            hooks = [
                ensure_webhook(f"{url}/v1/webhooks/mlflow", SecretStr(SECRET), name=f"lat-{n}")
                for n, url in (("a", a), ("b", b))
            ]
            targets = {"sslmem": [u.removeprefix("http://") for u in (a, b)]}
            for0 = _rules_without_for(root / "rules-for0.yaml")
            with (
                start_prometheus(root / "prom-shipped", targets, rule_files=[RULES]) as shipped,
                start_prometheus(root / "prom-for0", targets, rule_files=[for0]) as zero,
            ):
                poller = Poller(client, {"shipped": shipped.url, "for0": zero.url}, args.poll)
                poller.start()
                created: dict[tuple[str, str], float] = {}
                plan = ["latency"] * args.versions
                plan += [f"latency-fail-{i}" for i in range(args.failures)]
                for model in plan:
                    if model == "latency":
                        info = register_external_encoder(
                            loaded.encoders.candidate, model_name=model,
                            split_uri=loaded.split_uri, reference_uri=loaded.reference_uri,
                            settings=loaded.runtime,
                        )  # fmt: skip
                        mv = client.get_model_version(model, str(info.version))
                    else:
                        opt_in_model(model)
                        mv = client.create_model_version(
                            model,
                            good.source,
                            run_id=good.run_id,
                            tags=bad_tags,
                            model_id=logged_model,
                        )
                    created[(model, str(mv.version))] = mv.creation_timestamp / 1000
                    time.sleep(args.spacing)
                wanted: set[tuple[str, ...]] = {
                    ("shipped", REGRESSION, m, v) for m, v in created if m == "latency"
                }
                wanted |= {("shipped", FAILURES, m) for m, _ in created if m != "latency"}
                deadline = time.time() + args.timeout
                while time.time() < deadline and not wanted <= poller.first.keys():
                    time.sleep(1)
                poller.stop.set()
                poller.join()
            for hook in hooks:
                client.delete_webhook(hook.webhook_id)
    first = poller.first
    results: dict[str, Any] = {"poll_s": args.poll, "poll_errors": poller.errors}
    good = [(m, v) for m, v in created if m == "latency"]
    failing = [(m, v) for m, v in created if m != "latency"]
    results["registration_to_judged"] = _stats(
        [first[("judged", m, v)] - created[(m, v)] for m, v in good if ("judged", m, v) in first],
        len(good),
    )
    results["registration_to_failed"] = _stats(
        [
            first[("failed", m, v)] - created[(m, v)]
            for m, v in failing
            if ("failed", m, v) in first
        ],
        len(failing),
    )
    for rules in ("for0", "shipped"):
        key = f"registration_to_{REGRESSION}_{rules}"
        results[key] = _stats(
            [
                first[(rules, REGRESSION, m, v)] - created[(m, v)]
                for m, v in good
                if (rules, REGRESSION, m, v) in first
            ],
            len(good),
        )
        key = f"registration_to_{FAILURES}_{rules}"
        results[key] = _stats(
            [
                first[(rules, FAILURES, m)] - created[(m, v)]
                for m, v in failing
                if (rules, FAILURES, m) in first
            ],
            len(failing),
        )
    print(json.dumps(results, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
