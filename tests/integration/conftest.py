"""The whole alerting chain, really running on 127.0.0.1 with second-scale intervals.

``mlflow server`` (webhooks on, artifacts on SeaweedFS S3) -> ``sslmem serve`` (subprocess) ->
Prometheus (scrapes it every second, evaluates the shipped ``deploy/prometheus/sslmem-rules.yaml``)
-> Alertmanager (no clustering, own storage) -> a local webhook receiver recording every
notification.

**Scope.** :func:`alert_chain` is *package*-scoped: the chain is built once for every module in
``tests/integration`` (``test_alert_chain.py`` and the dashboard's ``test_dashboard_queries.py``),
not once per module, which would double its cost. The contract's interface is unchanged.

**Ordering.** The fixture never stops the service. A test that does (``stop_service()``) must be
marked ``@pytest.mark.stops_service``: :func:`pytest_collection_modifyitems` moves such tests
after every other test, whatever module they are in, so tests of other modules (collected later in
alphabetical order) still see a live service. A test that moves the champion alias is marked
``@pytest.mark.moves_champion`` and runs after the others but before those.

**Binaries.** Prometheus and Alertmanager come from the Debian packages ``prometheus`` and
``prometheus-alertmanager`` (``make test`` installs them). Without them the chain is skipped with
the reason locally; in CI (``CI`` set) their absence fails the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
import yaml
from pydantic import SecretStr

from sslmem.config import RuntimeSettings
from sslmem.data.store import open_store
from sslmem.evaluation import EvaluationResult
from sslmem.tracking import RetryPolicy, configure_mlflow, get_version_tags
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.tracking.webhooks import ensure_webhook
from sslmem.workflow.register_external import register_external_encoder
from tests.integration.encoders import ChainEncoders, make_chain_encoders
from tests.servers import (
    Receiver,
    S3Server,
    outlast_webhook_cache,
    sslmem_serve_env,
    start_alertmanager,
    start_mlflow_server,
    start_prometheus,
    start_receiver,
    start_sslmem_serve,
    system_binary,
    webhook_mlflow_env,
)
from tests.service.scoring_setup import FAST_SCORING

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "sslmem-rules.yaml"
#: Replaces every alerting rule's ``for:`` (minutes in production) so alerts fire in seconds.
SHORT_FOR = "1s"
MODEL = "chain-encoder"
#: The chain's model policy, γ (``sslmem.policy.accuracy_gain``): the team's policy is that a few
#: points of downstream accuracy do not justify the extra memorisation (privacy exposure of the
#: training points), so only a gain of 10 points in every accuracy would excuse it. The
#: regressing version gains about 4 (kNN) and 2 (probe) points (tests/integration/encoders.py):
#: far enough below γ that the judgement does not hinge on a point more or less.
ACCURACY_GAIN = 0.10
#: 8 views (not FAST_SCORING's 2): enough power for the paired test on 24 S_C points.
SCORING = [*FAST_SCORING, "scoring.views=8"]
SECRET = "chain-" + os.urandom(8).hex()

_T = TypeVar("_T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stops_service: stops the alert chain's service; runs after every other test"
    )
    config.addinivalue_line(
        "markers", "moves_champion: moves the chain's champion alias; runs after the others"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that move the champion, then those that stop the service, last (stable)."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("stops_service") is not None:
            return 2
        return 1 if item.get_closest_marker("moves_champion") is not None else 0

    items.sort(key=rank)


def _missing(reason: str) -> NoReturn:
    if os.environ.get("CI"):  # `make test` installs what is needed: in CI absence is a failure
        pytest.fail(reason)
    pytest.skip(reason)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"(no {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def shorten_for(rules: Path, out: Path) -> Path:
    """Copy the shipped rule file with only the alerting rules' ``for:`` values shortened.

    The shipped windows are minutes long; a test cannot wait that long. Expressions, labels,
    annotations, recording rules and group settings are left exactly as shipped.
    """
    document = yaml.safe_load(rules.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "alert" in rule and "for" in rule:
                rule["for"] = SHORT_FOR
    out.write_text(yaml.safe_dump(document, sort_keys=False))
    return out


@dataclass
class AlertChain:
    """The running chain and the versions registered in it (see the module docstring).

    Attributes:
        prometheus_url: ``http://127.0.0.1:PORT`` of the Prometheus that scrapes the service
            (job ``sslmem``) and evaluates the shipped rules.
        alertmanager_url: ``http://127.0.0.1:PORT`` of the Alertmanager.
        service_url: ``http://127.0.0.1:PORT`` of ``sslmem serve``.
        mlflow_url: ``http://127.0.0.1:PORT`` of the MLflow server.
        model: The registered model (label ``model``).
        champion_version: The version holding the ``champion`` alias.
        regressing_version: The version judged ``regression`` (memorises more, gains less
            accuracy than the model's policy γ asks for).
        neutral_version: The champion's weights registered again (judged ``neutral``).
        receiver: The webhook receiver Alertmanager notifies.
        service_log: The service's log file.
        accuracies: ``{version: (kNN, linear-probe accuracy)}`` each version was registered
            with (measured by the library's evaluation of its checkpoint).
        encoders: The chain's checkpoints.
        rules: The shipped rule file with shortened ``for:`` (what the chain's Prometheus runs).
        start_replica: Starts another ``sslmem serve`` replica on the same MLflow and store
            (name, then ``SSLMEM_SERVICE_*`` settings); yields its URL.
        register_version: Registers a checkpoint with its evaluation as a new version of the
            model and waits until it is judged; its version number.
    """

    prometheus_url: str
    alertmanager_url: str
    service_url: str
    mlflow_url: str
    model: str
    receiver: Receiver
    service_log: Path
    _stop: Callable[[], int | None]
    champion_version: str = ""
    regressing_version: str = ""
    neutral_version: str = ""
    _exit_code: list[int | None] = field(default_factory=list)
    accuracies: dict[str, tuple[float, float]] = field(default_factory=dict)
    encoders: ChainEncoders | None = None
    rules: Path | None = None
    start_replica: Callable[..., AbstractContextManager[str]] | None = None
    register_version: Callable[[Path, EvaluationResult], str] | None = None

    def payloads(self) -> list[dict[str, Any]]:
        """Every notification Alertmanager POSTed (webhook payload version 4), oldest first."""
        return [json.loads(recorded.body) for recorded in self.receiver.recorded()]

    def received_alerts(self) -> list[dict[str, Any]]:
        """The alerts of every notification (``status``, ``labels``, ``annotations``, ...)."""
        return [alert for payload in self.payloads() for alert in payload["alerts"]]

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        """Prometheus' pending and firing alerts (``/api/v1/alerts``)."""
        return list(_get_json(f"{self.prometheus_url}/api/v1/alerts")["data"]["alerts"])

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query against the chain's Prometheus; the result vector."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        body = _get_json(url)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def diagnostics(self) -> str:
        """What a failure message needs: receiver payloads, Prometheus alerts, service log."""
        try:
            alerts: object = self.prometheus_alerts()
        except OSError as exc:
            alerts = f"(Prometheus did not answer: {exc!r})"
        return (
            f"\n--- receiver payloads ---\n{json.dumps(self.payloads(), indent=1)}"
            f"\n--- Prometheus /api/v1/alerts ---\n{json.dumps(alerts, indent=1)}"
            f"\n--- last lines of {self.service_log} ---\n{_tail(self.service_log)}"
        )

    def wait(self, check: Callable[[], _T | None], timeout: float, what: str) -> _T:
        """Poll ``check`` every 0.25 s until it returns something truthy; fail with diagnostics."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what}" + self.diagnostics()
                )
            time.sleep(0.25)

    def received(
        self, alertname: str, status: str = "firing", **labels: str
    ) -> list[dict[str, Any]]:
        """Received alerts named ``alertname`` in ``status`` whose labels include ``labels``."""
        return [
            alert
            for alert in self.received_alerts()
            if alert["labels"].get("alertname") == alertname
            and alert["status"] == status
            and all(alert["labels"].get(key) == value for key, value in labels.items())
        ]

    def wait_for_alert(
        self, alertname: str, timeout: float = 120.0, **labels: str
    ) -> dict[str, Any]:
        """Wait until a firing ``alertname`` with ``labels`` reached the receiver; return it."""
        found = self.wait(
            lambda: self.received(alertname, **labels), timeout, f"{alertname} {labels} to arrive"
        )
        return found[0]

    def stop_service(self) -> int | None:
        """SIGTERM the service and wait for it to exit; its exit code (idempotent).

        Only tests marked ``stops_service`` may call this (they run last).
        """
        if not self._exit_code:
            self._exit_code.append(self._stop())
        return self._exit_code[0]


@pytest.fixture(scope="package")
def alert_chain(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AlertChain]:
    """The running chain after the champion, the neutral and the regressing version were scored.

    Returns once the regression alert has reached the receiver. Versions are registered in the
    order champion (then aliased), neutral, regressing: the neutral one is judged and scraped
    before the regressing one is registered, so by the time the regression alert arrives, any
    alert about the neutral version would have been sent as well (same rules, same ``for:``).
    """
    for name, package in (("prometheus", "prometheus"),
                          ("prometheus-alertmanager", "prometheus-alertmanager")):  # fmt: skip
        try:
            system_binary(name, package)
        except RuntimeError as exc:
            _missing(str(exc))
    if not RULES.is_file():
        _missing(f"{RULES.relative_to(REPO)} is missing (the shipped alerting rules)")
    root = tmp_path_factory.mktemp("alert-chain")
    encoders = make_chain_encoders(root / "encoders")
    rules = shorten_for(RULES, root / "sslmem-rules.short-for.yaml")
    bucket = s3_server.make_bucket("chain")
    store_uri = f"s3://{bucket}/sslmem"

    with (
        pytest.MonkeyPatch.context() as patch,
        start_receiver("/alerts") as receiver,
        start_alertmanager(root / "alertmanager", receiver.url) as alertmanager,
        start_mlflow_server(
            root / "mlflow", f"s3://{bucket}/mlflow/", env=webhook_mlflow_env(s3_server)
        ) as mlflow,
    ):
        _keep_mlflow_state(patch)
        runtime = RuntimeSettings(
            mlflow_tracking_uri=mlflow.url,
            store_uri=store_uri,
            s3_endpoint=s3_server.endpoint,
            s3_access_key=SecretStr(s3_server.access_key),
            s3_secret_key=SecretStr(s3_server.secret_key),
            s3_secure=False,
            device="cpu",
        )
        configure_mlflow(mlflow.url, retry=RetryPolicy(max_retries=2, timeout=30))
        # The service reads the split manifest from the object store.
        open_store(store_uri, runtime).put_bytes("splits/split.json", encoders.split.read_bytes())
        split_uri = f"{store_uri}/splits/split.json"
        env = sslmem_serve_env(
            root, mlflow=mlflow, s3=s3_server, store_uri=store_uri, webhook_secret=SECRET,
            replica="chain", config_overrides=SCORING, reconcile_interval_s="2",
        )  # fmt: skip
        with start_sslmem_serve(root, env, name="chain") as (service_url, proc):

            def stop() -> int | None:
                proc.send_signal(signal.SIGTERM)
                return proc.wait(timeout=60)

            @contextlib.contextmanager
            def start_replica(name: str, **settings: str) -> Iterator[str]:
                replica_env = sslmem_serve_env(
                    root, mlflow=mlflow, s3=s3_server, store_uri=store_uri,
                    webhook_secret=SECRET, replica=name, config_overrides=SCORING, **settings,
                )  # fmt: skip
                with start_sslmem_serve(root, replica_env, name=name) as (url, _):
                    yield url

            host_port = service_url.removeprefix("http://")
            with start_prometheus(
                root / "prometheus",
                {"sslmem": [host_port]},
                rule_files=[rules],
                alertmanager=alertmanager.address,
            ) as prometheus:
                chain = AlertChain(
                    prometheus_url=prometheus.url,
                    alertmanager_url=alertmanager.url,
                    service_url=service_url,
                    mlflow_url=mlflow.url,
                    model=MODEL,
                    receiver=receiver,
                    service_log=root / "serve-chain.log",
                    _stop=stop,
                    encoders=encoders,
                    rules=rules,
                    start_replica=start_replica,
                )
                ensure_webhook(f"{service_url}/v1/webhooks/mlflow", SecretStr(SECRET))
                outlast_webhook_cache()
                _run_scenario(chain, encoders, runtime, split_uri)
                yield chain


def _keep_mlflow_state(patch: pytest.MonkeyPatch) -> None:
    """Undo, when the chain is torn down, what configuring MLflow in this process changes."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    from sslmem.tracking import connection

    patch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    patch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    patch.setattr(connection, "_target", connection._target)
    for key in RetryPolicy().env():
        patch.delenv(key, raising=False)


def _judgement(model: str, version: str) -> str:
    return str(get_version_tags(model, version).get(T.JUDGEMENT, ""))


def _run_scenario(
    chain: AlertChain, encoders: ChainEncoders, runtime: RuntimeSettings, split: str
) -> None:
    """Register champion (aliased), neutral and regressing versions; wait for each judgement."""
    chain.wait(lambda: chain.query('up{job="sslmem"} == 1'), 60, "Prometheus to scrape the service")
    reference = register_external_encoder(
        encoders.reference, model_name=f"{MODEL}-ref", split_uri=split, settings=runtime
    )
    reference_uri = f"models:/{MODEL}-ref/{reference.version}"
    # The policy exists before any version of the model does, so every judgement applies it.
    client().create_registered_model(
        MODEL, tags={f"{T.POLICY_PREFIX}accuracy_gain": str(ACCURACY_GAIN)}
    )

    def register(checkpoint: Path, evaluation: EvaluationResult) -> str:
        version = register_external_encoder(
            checkpoint, model_name=MODEL, split_uri=split, reference_uri=reference_uri,
            evaluation=evaluation, settings=runtime,
        ).version  # fmt: skip
        chain.accuracies[version] = (evaluation.knn_accuracy, evaluation.linear_probe_accuracy)
        chain.wait(lambda: _judgement(MODEL, version), 240, f"version {version} to be judged")
        return str(version)

    chain.register_version = register

    chain.champion_version = register(encoders.champion, encoders.champion_evaluation)
    client().set_registered_model_alias(MODEL, "champion", chain.champion_version)
    # The same weights again: identical scores and accuracies under the same protocol, so
    # Δ = 0 everywhere (neutral).
    chain.neutral_version = register(encoders.champion, encoders.champion_evaluation)
    chain.regressing_version = register(encoders.regressing, encoders.regressing_evaluation)
    chain.wait_for_alert(
        "SSLMemRegressionAgainstChampion", 180, model=MODEL, version=chain.regressing_version
    )
