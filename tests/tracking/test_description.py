"""A judged version's Markdown description, on a real ``mlflow server``.

Tiny encoders are scored for real (as the service scores them); the description is read back
through MLflow's API and its numbers are parsed and compared with the score run's
``summary.json`` and the ``sslmem.judgement_json`` tag -- the two sources it must agree with.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sslmem.config import RuntimeSettings
from sslmem.service.settings import ServiceSettings
from sslmem.tracking import configure_mlflow, set_alias
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.tracking.description import SET_LABELS
from sslmem.workflow.judge import judge_registered_version
from sslmem.workflow.register_external import register_external_encoder
from sslmem.workflow.score_version import score_registered_version
from tests.servers import MlflowServer, start_mlflow_server
from tests.service.scoring_setup import make_encoders, runtime_settings, service_settings

pytestmark = pytest.mark.slow

_FLOAT = r"[+-]?\d+\.\d+"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow-description")
    with start_mlflow_server(root, str(root / "artifacts")) as running:
        yield running


@dataclass(frozen=True)
class Scored:
    runtime: RuntimeSettings
    settings: ServiceSettings
    model: str
    first: str
    second: str


@pytest.fixture
def scored(server: MlflowServer, tmp_path: Path) -> Scored:
    """``enc`` v1 scored with no champion; v1 made champion; v2 scored (judged against v1)."""
    configure_mlflow(server.url)
    store = tmp_path / "store"
    encoders = make_encoders(store / "inputs")
    runtime = runtime_settings(server.url, store)
    settings = service_settings()
    model = f"enc-{tmp_path.name}"[:60]

    def register(path: Path, name: str, reference: str | None = None) -> str:
        registered = register_external_encoder(
            path, model_name=name, split_uri=encoders.split_uri, reference_uri=reference,
            settings=runtime,
        )  # fmt: skip
        return str(registered.version)

    register(encoders.reference, f"{model}-ref")
    first = register(encoders.candidate, model, f"models:/{model}-ref/1")
    assert score_registered_version(model, first, settings=settings, runtime=runtime).judgement
    set_alias(model, "champion", first)
    second = register(encoders.other_candidate, model, f"models:/{model}-ref/1")
    result = score_registered_version(model, second, settings=settings, runtime=runtime)
    assert result.outcome == "scored" and result.judgement is not None, result.reason
    return Scored(runtime, settings, model, first, second)


def _version(scored: Scored, version: str) -> tuple[str, str, dict[str, str]]:
    """The model name, description and tags of a version, read through MLflow's API."""
    mv = client().get_model_version(scored.model, version)
    return scored.model, mv.description or "", dict(mv.tags)


def _summary_json(run_id: str) -> dict[str, object]:
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(run_id=run_id, artifact_path="scoring/summary.json")
    document: dict[str, object] = json.loads(Path(local).read_text())
    return document


def _set_rows(description: str) -> dict[str, tuple[int, float, float, float]]:
    """``{label: (n, mean, ci low, ci high)}`` parsed from the description's set table."""
    rows = {}
    pattern = rf"^\| (S_\w [^|]*?) \| (\d+) \| ({_FLOAT}) \| \[({_FLOAT}), ({_FLOAT})\] \|"
    for match in re.finditer(pattern, description, flags=re.M):
        label, n, mean, low, high = match.groups()
        rows[label] = (int(n), float(mean), float(low), float(high))
    return rows


def test_the_description_carries_the_summary_and_the_judgement(
    scored: Scored, server: MlflowServer
) -> None:
    _, text, tags = _version(scored, scored.second)
    run_id = T.score_run_id(tags)
    assert run_id
    summary = _summary_json(run_id)
    sets = summary["sets"]
    assert isinstance(sets, dict)
    rows = _set_rows(text)
    assert set(rows) == {SET_LABELS[s] for s in sets}, text
    for set_name, stats in sets.items():
        n, mean, low, high = rows[SET_LABELS[set_name]]
        assert n == stats["n"]
        assert mean == pytest.approx(stats["mean"], abs=5e-5)
        assert (low, high) == pytest.approx((stats["ci95_low"], stats["ci95_high"]), abs=5e-5)
    verdict = summary["verdict"]
    assert isinstance(verdict, dict)
    assert f"Memorisation verdict: {verdict['outcome'].upper()}" in text

    judgement = json.loads(tags[T.JUDGEMENT_JSON])
    assert f"judgement: {judgement['outcome'].upper()}" in text
    assert f"against `champion` version {scored.first}" in text
    found = re.search(
        rf"Δ mean SSLMem\(S_C\) vs version {scored.first} = \*\*({_FLOAT})\*\* "
        rf"\(95 % CI \[({_FLOAT}), ({_FLOAT})\], paired t, p = ([0-9.e+-]+);",
        text,
    )
    assert found, text
    mean = judgement["mean"]
    expected = (mean["delta"], mean["ci95_low"], mean["ci95_high"])
    assert tuple(float(g) for g in found.groups()[:3]) == pytest.approx(expected, abs=5e-5)
    assert float(found.group(4)) == pytest.approx(mean["p_value"], rel=0.05)
    assert f"alpha {judgement['policy']['alpha']:g}" in text

    # The links lead to this version's score run and to files it really holds.
    experiment = client().get_run(run_id).info.experiment_id
    links = re.findall(r"\]\((#/[^)]+)\)", text)
    assert f"#/experiments/{experiment}/runs/{run_id}" in links
    prefix = f"#/experiments/{experiment}/runs/{run_id}/artifactPath/"
    linked = {link.removeprefix(prefix) for link in links if link.startswith(prefix)}
    held = {a.path for a in client().list_artifacts(run_id, "scoring")}
    assert linked and linked <= held, (linked, held)
    # The histogram shown inline is served by the UI's host (the source is relative to it).
    images = re.findall(r"!\[[^\]]*\]\((get-artifact\?[^)]+)\)", text)
    assert len(images) == 1, text
    with urllib.request.urlopen(f"{server.url}/{images[0]}", timeout=30) as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_description_is_rewritten_when_the_champion_moves(scored: Scored) -> None:
    name, before, _ = _version(scored, scored.first)
    assert "this version is the `champion`" not in before
    assert "not judged: no `champion` to compare with" in before  # scored before any champion

    set_alias(name, "champion", scored.second)
    judged = judge_registered_version(
        name, scored.first, settings=scored.settings, runtime=scored.runtime
    )
    assert judged is not None
    _, after, tags = _version(scored, scored.first)
    assert tags[T.JUDGED_AGAINST] == scored.second
    assert f"against `champion` version {scored.second}" in after
    assert f"Δ mean SSLMem(S_C) vs version {scored.second}" in after
    delta = json.loads(tags[T.JUDGEMENT_JSON])["mean"]["delta"]
    shown = re.search(rf"vs version {scored.second} = \*\*({_FLOAT})\*\*", after)
    assert shown and float(shown.group(1)) == pytest.approx(delta, abs=5e-5)

    # The new champion, re-judged, says that it is the champion.
    judge_registered_version(name, scored.second, settings=scored.settings, runtime=scored.runtime)
    _, champion, _ = _version(scored, scored.second)
    assert "this version is the `champion`" in champion
