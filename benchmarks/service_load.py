"""Scoring service under a burst: N versions registered at once, two replicas, one result each.

Starts SeaweedFS (S3) and an ``mlflow server`` (webhooks on, artifacts on S3) on 127.0.0.1, then
for each intake mode starts two ``sslmem serve`` replicas sharing them, registers ``--versions``
tiny-encoder versions as fast as it can, and waits until every one is scored and judged:

* ``webhook``: one registry webhook per replica (every replica hears every event, as behind a
  Service without session affinity; leases decide), reconcile pass hourly (only its start-up pass);
* ``reconcile``: no webhook; a reconcile pass every ``--interval`` seconds;
* ``burst``: no webhook, reconcile hourly; ``--burst-versions`` versions (default 10) are
  registered, then ``--deliveries`` signed deliveries (default 1,000) are posted at once over
  the two replicas: ``deliveries / 2`` delivery ids spread over the versions, each id sent to
  *both* replicas (as MLflow retries land behind a Service), 32 at a time. Reports the intake
  outcomes (each id accepted exactly once across the replicas), the request latency, the score
  jobs and runs per version (exactly one), and how many log lines of the replicas are JSON
  objects carrying a ``delivery_id`` and a ``job_id``.

Reports per mode: exactly-once (sum of the replicas' ``sslmem_versions_scored_total`` and score
runs per version), latency from registration (version ``creation_timestamp``) to scored (the score
run's ``end_time``) p50/p95/max, throughput (versions / (last scored - first registered)), and each
replica's RSS before and after.

    python benchmarks/service_load.py [--versions 100] [--interval 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ helpers (real servers)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class LoadStack:
    """The shared servers of a load run and what is registered on them before any replica."""

    s3: Any  # tests.servers.S3Server
    stack: tuple[Any, str]  # (tests.servers.MlflowServer, bucket)
    runtime: Any  # sslmem.config.RuntimeSettings
    encoders: Any  # tests.service.scoring_setup.Encoders
    split_uri: str  # the split manifest in the store
    reference_uri: str  # models:/load-ref/1


@contextlib.contextmanager
def load_stack(root: Path) -> Iterator[LoadStack]:
    """SeaweedFS + ``mlflow server`` (webhooks on, artifacts on S3), tiny encoders, a reference."""
    from cryptography.fernet import Fernet

    from sslmem.data.store import open_store
    from sslmem.tracking import RetryPolicy, configure_mlflow
    from sslmem.workflow.register_external import register_external_encoder
    from tests.servers import WEBHOOK_SERVER_ENV, start_mlflow_server, start_seaweedfs
    from tests.service.scoring_setup import make_encoders
    from tests.service.test_service_e2e import _runtime

    with start_seaweedfs(root / "s3") as s3:
        bucket = s3.make_bucket("load")
        env = {
            **WEBHOOK_SERVER_ENV,
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            **s3.artifact_env(),
        }
        with start_mlflow_server(root / "mlflow", f"s3://{bucket}/mlflow/", env=env) as server:
            stack = (server, bucket)
            runtime = _runtime(stack, s3)
            configure_mlflow(server.url, retry=RetryPolicy(max_retries=3, timeout=60))
            local = make_encoders(root / "enc")
            split = f"s3://{bucket}/sslmem/splits/split.json"
            open_store(f"s3://{bucket}/sslmem", runtime).put_bytes(
                "splits/split.json", Path(local.split_uri).read_bytes()
            )
            register_external_encoder(
                local.reference, model_name="load-ref", split_uri=split, settings=runtime
            )
            yield LoadStack(s3, stack, runtime, local, split, "models:/load-ref/1")


def _burst(
    root: Path,
    stack: Any,
    s3: Any,
    n_versions: int,
    n_deliveries: int,
    local: Any,
    split: str,
    runtime: Any,
) -> dict[str, Any]:
    """The ``burst`` mode: signed deliveries posted straight at two replicas (see the docstring)."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow import MlflowClient

    from sslmem.service.webhooks import sign
    from sslmem.workflow.register_external import register_external_encoder
    from tests.service.http import metric, request, scrape
    from tests.service.test_service_e2e import SECRET, serve

    model = "load-burst"
    client = MlflowClient(stack[0].url)
    tmp = root / "burst"
    tmp.mkdir()
    with (
        serve(tmp, stack, s3, "burst-a", reconcile_interval_s="3600", log_format="json") as (a, _),
        serve(tmp, stack, s3, "burst-b", reconcile_interval_s="3600", log_format="json") as (b, _),
    ):
        versions = [
            register_external_encoder(
                local.candidate, model_name=model, split_uri=split,
                reference_uri="models:/load-ref/1", settings=runtime,
            ).version
            for _ in range(n_versions)
        ]  # fmt: skip
        posts = []
        for i in range(n_deliveries // 2):
            version = versions[i % len(versions)]
            data = {"name": model, "version": str(version), "source": "s", "run_id": "r"}
            payload = {"entity": "model_version", "action": "created", "timestamp": "t"}
            body = json.dumps({**payload, "data": {**data, "tags": {}}}).encode()
            delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
            headers = {
                "X-MLflow-Delivery-Id": delivery,
                "X-MLflow-Timestamp": stamp,
                "X-MLflow-Signature": sign(SECRET, delivery, stamp, body),
            }
            posts += [(f"{url}/v1/webhooks/mlflow", body, headers) for url in (a, b)]

        def post(item: tuple[str, bytes, dict[str, str]]) -> tuple[float, int, dict[str, Any]]:
            began = time.perf_counter()
            status, answer = request("POST", *item)
            return time.perf_counter() - began, status, answer

        started = time.time()
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(post, posts))
        intake_s = time.time() - started
        deadline = time.time() + 3600
        while time.time() < deadline:  # every version scored (or failed): the jobs are done
            found = client.search_model_versions(f"name = '{model}'", max_results=1000)
            done = sum(1 for v in found if v.tags.get("sslmem.status") in ("scored", "failed"))
            if done >= len(versions):
                break
            time.sleep(2)
        time.sleep(3)  # let both replicas finish counting
        scored = [
            metric(scrape(u), "sslmem_versions_scored_total", model=model) or 0.0 for u in (a, b)
        ]
        done_s = time.time() - started
    experiment = client.get_experiment_by_name("sslmem").experiment_id
    score_runs, with_metrics = [], []
    for v in versions:
        # The score step's runs of every claim (service/<model>/<version>/g<lease generation>).
        found_runs = client.search_runs(
            [experiment],
            filter_string=(
                f"tags.`sslmem.pipeline_run_id` LIKE 'service/{model}/{v}/%' "
                "AND tags.`sslmem.step` = 'score'"
            ),
        )
        score_runs.append(len(found_runs))
        with_metrics.append(sum(1 for r in found_runs if r.data.metrics))
    outcomes = [answer.get("outcome") for _, _, answer in answers]
    latencies = [seconds for seconds, _, _ in answers]
    parsed, not_json = [], 0
    for name in ("burst-a", "burst-b"):
        for line in (tmp / f"serve-{name}.log").read_text(errors="replace").splitlines():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                not_json += 1
    return {
        "versions": len(versions),
        "deliveries": len(posts),
        "statuses": sorted({status for _, status, _ in answers}),
        "accepted": outcomes.count("accepted"),
        "duplicate": outcomes.count("duplicate"),
        "jobs_queued": sum(1 for _, _, answer in answers if answer.get("queued")),
        "scored_by_replicas": scored,
        "score_runs_per_version": sorted(set(score_runs)),
        "score_runs_with_metrics_per_version": sorted(set(with_metrics)),
        "intake_s": round(intake_s, 1),
        "deliveries_per_s": round(len(posts) / intake_s, 1),
        "request_p50_ms": round(1000 * statistics.median(latencies), 1),
        "request_p95_ms": round(1000 * _quantile(latencies, 0.95), 1),
        "all_scored_s": round(done_s, 1),
        "json_log_lines": len(parsed),
        "other_log_lines": not_json,
        "with_delivery_id": sum(1 for p in parsed if "delivery_id" in p),
        "with_job_id": sum(1 for p in parsed if "job_id" in p),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--interval", type=float, default=5.0, help="reconcile-only interval, s")
    parser.add_argument("--modes", nargs="+", default=["webhook", "reconcile"])
    parser.add_argument("--burst-versions", type=int, default=10)
    parser.add_argument("--deliveries", type=int, default=1000)
    args = parser.parse_args()

    from mlflow import MlflowClient
    from pydantic import SecretStr

    from sslmem.tracking import tags as T
    from sslmem.tracking.webhooks import ensure_webhook
    from sslmem.workflow.register_external import register_external_encoder
    from tests.service.http import metric, scrape
    from tests.service.test_service_e2e import SECRET, serve

    root = Path(tempfile.mkdtemp(prefix="sslmem-service-load-"))
    with load_stack(root) as loaded:
        s3, stack, runtime = loaded.s3, loaded.stack, loaded.runtime
        local, split = loaded.encoders, loaded.split_uri
        client = MlflowClient(stack[0].url)
        results = {}
        for mode in args.modes:
            if mode == "burst":
                burst = _burst(
                    root, stack, s3, args.burst_versions, args.deliveries, local, split, runtime
                )
                print(json.dumps({"burst": burst}), flush=True)
                continue
            model = f"load-{mode}"
            interval = "3600" if mode == "webhook" else str(args.interval)
            tmp = root / mode
            tmp.mkdir()
            with (
                serve(tmp, stack, s3, f"{mode}-a", reconcile_interval_s=interval) as (a, pa),
                serve(tmp, stack, s3, f"{mode}-b", reconcile_interval_s=interval) as (b, pb),
            ):
                hooks = []
                if mode == "webhook":
                    for name, url in (("a", a), ("b", b)):
                        hooks.append(
                            ensure_webhook(
                                f"{url}/v1/webhooks/mlflow",
                                SecretStr(SECRET),
                                name=f"load-{name}",
                            ).webhook_id
                        )
                rss_before = [_rss_mib(pa.pid), _rss_mib(pb.pid)]
                started = time.time()
                versions = [
                    register_external_encoder(
                        local.candidate, model_name=model, split_uri=split,
                        reference_uri="models:/load-ref/1", settings=runtime,
                    ).version
                    for _ in range(args.versions)
                ]  # fmt: skip
                registered_s = time.time() - started
                deadline = time.time() + 3600
                while time.time() < deadline:
                    found = client.search_model_versions(f"name = '{model}'", max_results=1000)
                    if sum(1 for v in found if v.tags.get(T.JUDGEMENT)) >= len(versions):
                        break
                    time.sleep(2)
                time.sleep(3)  # let both replicas finish counting
                counts = [
                    metric(scrape(u), "sslmem_versions_scored_total", model=model) or 0.0
                    for u in (a, b)
                ]
                rss_after = [_rss_mib(pa.pid), _rss_mib(pb.pid)]
                for hook in hooks:
                    client.delete_webhook(hook)
            experiment = client.get_experiment_by_name("sslmem").experiment_id
            latencies, ends, runs_per_version = [], [], []
            created = []
            for version in versions:
                mv = client.get_model_version(model, version)
                runs = client.search_runs(
                    [experiment],
                    # The score step's runs of every claim (.../g<lease generation>).
                    filter_string=(
                        f"tags.`sslmem.pipeline_run_id` LIKE 'service/{model}/{version}/%' "
                        "AND tags.`sslmem.step` = 'score'"
                    ),
                )
                runs_per_version.append(len(runs))
                end = max(r.info.end_time for r in runs) / 1000
                latencies.append(end - mv.creation_timestamp / 1000)
                ends.append(end)
                created.append(mv.creation_timestamp / 1000)
            results[mode] = {
                "versions": len(versions),
                "scored_by_replicas": counts,
                "runs_per_version": sorted(set(runs_per_version)),
                "register_burst_s": round(registered_s, 1),
                "latency_p50_s": round(statistics.median(latencies), 1),
                "latency_p95_s": round(_quantile(latencies, 0.95), 1),
                "latency_max_s": round(max(latencies), 1),
                "throughput_per_min": round(60 * len(versions) / (max(ends) - min(created)), 1),
                "rss_mib_before": [round(x) for x in rss_before],
                "rss_mib_after": [round(x) for x in rss_after],
            }
            print(json.dumps({mode: results[mode]}), flush=True)
    header = (
        "mode",
        "versions",
        "scored by A + B",
        "runs/version",
        "p50 s",
        "p95 s",
        "max s",
        "versions/min",
        "RSS MiB before → after (A, B)",
    )
    print("\n| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for mode, r in results.items():
        cells = (
            mode,
            r["versions"],
            " + ".join(f"{c:g}" for c in r["scored_by_replicas"]),
            r["runs_per_version"],
            r["latency_p50_s"],
            r["latency_p95_s"],
            r["latency_max_s"],
            r["throughput_per_min"],
            f"{r['rss_mib_before']} → {r['rss_mib_after']}",
        )
        print("| " + " | ".join(str(c) for c in cells) + " |")
    os.environ.pop("SSLMEM_SERVICE_WEBHOOK_SECRET", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
