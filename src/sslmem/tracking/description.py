"""The Markdown description of a judged model version (shown at the top of its MLflow page).

MLflow shows a model version's *description* above everything else on the version page, so
that is where a version says in a few lines what its score means: the protocol verdict
(Wang et al., ICLR 2024, Sec. 3: SSLMem of S_C against the S_I / S_E controls), SSLMem per set
with 95 % CIs, the judgement against the champion (Δ mean SSLMem(S_C), its CI and p), the
downstream accuracies, the policy that applied, and links to the score run and its figures.

The numbers come from the score run's ``summary.json`` (read by the one reader,
:mod:`sslmem.tracking.reports`) and from the judgement itself -- never recomputed here.
The description is written by whoever writes the judgement
(:func:`sslmem.workflow.judge.judge_registered_version`, under the version's claim), so it is
rewritten whenever the version is re-judged (e.g. the champion alias moved).

Links are relative to the MLflow UI (its router lives in the URL fragment), so they work on
any host the UI is served from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from sslmem.tracking import tags as T
from sslmem.tracking.connection import client, tracking_errors
from sslmem.tracking.runs import SCORING_ARTIFACT_DIR

if TYPE_CHECKING:
    from sslmem.memorization.judgement import Judgement
    from sslmem.memorization.scoring import ScoreSummary

__all__ = [
    "FIGURES",
    "SET_LABELS",
    "artifact_download",
    "artifact_link",
    "compare_versions_link",
    "render_version_description",
    "run_link",
    "version_link",
    "write_version_description",
]

#: The paper's names of the split's sets (S_S, S_C, S_I, S_E).
SET_LABELS = {
    "candidate": "S_C (candidate only)",
    "independent": "S_I (reference only)",
    "extra": "S_E (neither)",
    "shared": "S_S (both)",
}
#: Figures a score run logs under ``scoring/`` (:func:`sslmem.tracking.runs.log_score_report`).
FIGURES = {
    "histogram": "sslmem_histogram.png",
    "most / least memorised images": "memorised_grid.png",
}
#: MLflow's SQL store holds a version description of at most 5000 characters.
MAX_DESCRIPTION_CHARS = 4500
#: The judgement's reasons shown (each cut to :data:`MAX_REASON_CHARS`); all are in its JSON tag.
MAX_REASONS = 5
MAX_REASON_CHARS = 300
_MARKS = {"passed": "PASSED", "failed": "FAILED", "inconclusive": "INCONCLUSIVE"}


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _pts(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f} pt"


def _p(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.2g}"


def run_link(experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of a run, relative to the UI (``#/experiments/E/runs/R``)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def artifact_link(experiment_id: str, run_id: str, path: str) -> str:
    """The MLflow UI's artifact view of ``path`` in a run, relative to the UI."""
    return f"{run_link(experiment_id, run_id)}/artifactPath/{path}"


def artifact_download(run_id: str, path: str) -> str:
    """The tracking server's download of a run artifact, relative to the UI (an image source)."""
    return f"get-artifact?{urlencode({'path': path, 'run_uuid': run_id}, quote_via=quote)}"


def version_link(name: str, version: str) -> str:
    """The MLflow UI's page of a model version, relative to the UI."""
    return f"#/models/{quote(name, safe='')}/versions/{version}"


def compare_versions_link(name: str, runs: Mapping[str, str]) -> str:
    """The MLflow UI's *Compare* view of model versions, relative to the UI.

    Args:
        name: Registered model name.
        runs: ``{version: its source run id}`` (the UI compares the versions' source runs).

    """
    query = urlencode(
        {"name": json.dumps(name), "runs": json.dumps(dict(runs), separators=(",", ":"))},
        quote_via=quote,
    )
    return f"#/compare-model-versions?{query}"


def render_version_description(
    *,
    version: str,
    summary: ScoreSummary,
    judgement: Judgement,
    judged_against: str,
    champion_alias: str,
    knn_accuracy: float | None,
    linear_probe_accuracy: float | None,
    score_run_id: str,
    experiment_id: str,
    artifacts: Collection[str] = (),
) -> str:
    """The Markdown description of a scored, judged version.

    Args:
        version: The version described.
        summary: Its score summary (``scoring/summary.json`` of ``score_run_id``).
        judgement: Its judgement against the champion (what ``sslmem.judgement_json`` holds).
        judged_against: The champion version number, or ``"none"``.
        champion_alias: The alias naming the champion (e.g. ``champion``).
        knn_accuracy: The version's downstream kNN accuracy (its tag), if measured.
        linear_probe_accuracy: Its linear-probe accuracy (its tag), if measured.
        score_run_id: The score run (holding the summary and the figures).
        experiment_id: The score run's experiment (for the links).
        artifacts: File names the score run holds under ``scoring/``: only those figures are
            linked, and the histogram is shown inline when present.

    Returns:
        Markdown, at most :data:`MAX_DESCRIPTION_CHARS` characters.

    """
    verdict = summary.verdict
    outcome = judgement.outcome.value
    # Without another version to compare with, "incomparable" says nothing: only a budget
    # breach (a regression on its own) is worth a headline then.
    alone = judged_against in (version, "none")
    shown = "" if alone and outcome == "incomparable" else f"**judgement: {outcome.upper()}** "
    lines = [
        f"**Memorisation verdict: {_MARKS.get(verdict.outcome, verdict.outcome.upper())}** "
        f"(alpha {verdict.alpha:g}) · {shown}"
        + _against_phrase(version, judged_against, champion_alias),
        "",
    ]
    lines += _judgement_lines(version, judgement, judged_against)
    lines += ["", "| set | n | mean SSLMem | 95 % CI | p (S_C > set) |", "|---|---:|---:|---|---:|"]
    for name, stats in summary.sets.items():
        test = summary.welch_tests.get(name)
        lines.append(
            f"| {SET_LABELS.get(name, name)} | {stats.n} | {_num(stats.mean)} | "
            f"[{_num(stats.ci95_low)}, {_num(stats.ci95_high)}] | "
            f"{_p(test.p_value) if test else '–'} |"
        )
    lines += ["", *_accuracy_lines(judgement, knn_accuracy, linear_probe_accuracy)]
    policy = judgement.policy
    budgets = ", ".join(
        f"{label} {value:g}"
        for label, value in (
            ("mean budget", policy.budget_mean),
            ("fraction budget", policy.budget_fraction),
        )
        if value is not None
    )
    lines += [
        "",
        f"Policy: alpha {policy.alpha:g}, min |Δ| {policy.min_delta:g}, accuracy gain "
        f"{policy.accuracy_gain:g}, threshold {policy.threshold:g}"
        + (f", {budgets}" if budgets else ", no budgets")
        + f"; estimator {summary.scoring.estimator}, {summary.scoring.views} views, layer "
        f"`{summary.scoring.layer}`, split `{summary.manifest_sha256[:12]}`.",
    ]
    links = [f"[score run]({run_link(experiment_id, score_run_id)})"]
    for label, file in (*FIGURES.items(), ("summary.json", "summary.json")):
        if file in artifacts:
            path = f"{SCORING_ARTIFACT_DIR}/{file}"
            links.append(f"[{label}]({artifact_link(experiment_id, score_run_id, path)})")
    lines += ["", " · ".join(links)]
    histogram = FIGURES["histogram"]
    if histogram in artifacts:  # served by the UI's own host (relative, like the links)
        src = artifact_download(score_run_id, f"{SCORING_ARTIFACT_DIR}/{histogram}")
        lines += ["", f"![SSLMem per set]({src})"]
    text = "\n".join(lines)
    if len(text) > MAX_DESCRIPTION_CHARS:  # a pathological set count; cut, never fail
        text = text[: MAX_DESCRIPTION_CHARS - 1] + "…"
    return text


def _against_phrase(version: str, judged_against: str, alias: str) -> str:
    if judged_against == version:
        return f"this version is the `{alias}`."
    if judged_against == "none":
        return f"not judged: no `{alias}` to compare with."
    return f"against `{alias}` version {judged_against}."


def _judgement_lines(version: str, judgement: Judgement, judged_against: str) -> list[str]:
    mean = judgement.mean
    lines: list[str] = []
    if mean is not None:
        how = "paired t" if mean.test == "paired_t" else "Welch t"
        lines.append(
            f"Δ mean SSLMem(S_C) vs version {judged_against} = **{_num(mean.delta)}** "
            f"(95 % CI [{_num(mean.ci95_low)}, {_num(mean.ci95_high)}], {how}, "
            f"p = {_p(mean.p_value)}; {_num(mean.candidate_mean)} vs "
            f"{_num(mean.champion_mean)})."
        )
    reasons = [r for r in judgement.reasons if judged_against != version or "no champion" not in r]
    for reason in reasons[:MAX_REASONS]:
        cut = reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"
        lines.append(f"- {cut}")
    return lines


def _accuracy_lines(judgement: Judgement, knn: float | None, probe: float | None) -> list[str]:
    accuracy = judgement.accuracy
    if accuracy is None:
        return [
            "| downstream accuracy | this version |",
            "|---|---:|",
            f"| kNN top-1 | {_pct(knn)} |",
            f"| linear probe top-1 | {_pct(probe)} |",
        ]
    return [
        "| downstream accuracy | this version | champion | Δ |",
        "|---|---:|---:|---:|",
        f"| kNN top-1 | {_pct(accuracy.knn_candidate)} | {_pct(accuracy.knn_champion)} | "
        f"{_pts(accuracy.knn_delta)} |",
        f"| linear probe top-1 | {_pct(accuracy.linear_probe_candidate)} | "
        f"{_pct(accuracy.linear_probe_champion)} | {_pts(accuracy.linear_probe_delta)} |",
    ]


def write_version_description(
    name: str,
    version: str,
    *,
    summary: ScoreSummary,
    judgement: Judgement,
    judged_against: str,
    champion_alias: str,
    tags: Mapping[str, str],
) -> str:
    """Render and set the description of a judged version (replacing the previous one).

    Args:
        name: Registered model name.
        version: Version number.
        summary: The version's score summary (from its score run).
        judgement: The judgement just made.
        judged_against: The champion version number, or ``"none"``.
        champion_alias: The champion alias.
        tags: The version's tags (its score run and accuracies).

    Returns:
        The description set.

    Raises:
        TrackingError: MLflow is unreachable, or the version names no score run.

    """
    from sslmem.errors import TrackingError

    run_id = T.score_run_id(tags)
    if not run_id:
        raise TrackingError(
            f"model {name!r} version {version} names no score run in its {T.PROVENANCE}",
            "score the version before judging it",
        )
    knn = T.parse_accuracy(tags, T.KNN_ACCURACY)
    probe = T.parse_accuracy(tags, T.LINEAR_PROBE_ACCURACY)
    with tracking_errors(f"describe model {name!r} version {version}"):
        mlflow_client = client()
        experiment_id = mlflow_client.get_run(run_id).info.experiment_id
        held = [
            PurePosixPath(item.path).name
            for item in mlflow_client.list_artifacts(run_id, SCORING_ARTIFACT_DIR)
        ]
        text = render_version_description(
            version=version,
            summary=summary,
            judgement=judgement,
            judged_against=judged_against,
            champion_alias=champion_alias,
            knn_accuracy=knn,
            linear_probe_accuracy=probe,
            score_run_id=run_id,
            experiment_id=str(experiment_id),
            artifacts=held,
        )
        mlflow_client.update_model_version(name, version, description=text)
    return text
