"""A curation study of a registered, scored version (issue 18): inputs read from MLflow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sslmem.cli import main
from sslmem.data.splits import load_manifest
from sslmem.models.checkpoint import file_sha256
from sslmem.tracking import TrackingTarget, get_version_tags
from sslmem.tracking import tags as T
from sslmem.tracking.reports import read_score_report
from sslmem.workflow.register_external import register_external_encoder
from sslmem.workflow.score_version import score_registered_version
from tests.service.scoring_setup import make_encoders, runtime_settings, service_settings

pytestmark = pytest.mark.slow

#: The recipe of the service tests' tiny registered encoders, made fast.
TINY = [
    "--set", "model.arch_kwargs={widths: [8, 8, 8]}",
    "--set", "model.head_hidden_dim=16",
    "--set", "model.head_output_dim=8",
    "--set", "training.epochs=1",
    "--set", "training.batch_size=8",
    "--set", "evaluation.probe_epochs=2",
    "--set", "scoring.views=2",
    "--device", "cpu",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_a_study_reads_a_scored_versions_report_split_and_reference_from_mlflow(
    local_mlflow: TrackingTarget,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    encoders = make_encoders(tmp_path / "store" / "enc")
    runtime = runtime_settings(local_mlflow.tracking_uri, tmp_path / "store")
    register_external_encoder(
        encoders.reference, model_name="enc-ref", split_uri=encoders.split_uri, settings=runtime
    )
    for checkpoint in (encoders.candidate, encoders.other_candidate):
        register_external_encoder(
            checkpoint,
            model_name="enc",
            split_uri=encoders.split_uri,
            reference_uri="models:/enc-ref/1",
            settings=runtime,
        )
    score_registered_version("enc", "1", settings=service_settings(), runtime=runtime)
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", local_mlflow.tracking_uri)
    monkeypatch.setenv("SSLMEM_STORE_URI", str(tmp_path / "store"))
    plan = ["--fractions", "0.25", "--strategies", "top", "--seeds", "0", "--random-draws", "1"]

    out = tmp_path / "study"
    assert main(["curate", "--version", "models:/enc/1", "--out", str(out), *plan, *TINY]) == 0
    # The study was computed from the version's own report, split and reference.
    run_id = T.score_run_id(get_version_tags("enc", "1"))
    assert run_id is not None
    report = read_score_report(run_id)
    inputs = json.loads((out / "study-inputs.json").read_text())
    assert inputs["reference_sha256"] == file_sha256(encoders.reference)
    assert inputs["manifest_sha256"] == load_manifest(encoders.split_uri).manifest_sha256
    candidates = [
        (float(score), int(index))
        for index, name, score in zip(
            report.columns["sample_index"],
            report.columns["set"],
            report.columns["sslmem_raw"],
            strict=True,
        )
        if name == "candidate"
    ]
    k = round(0.25 * len(candidates))
    top = sorted(i for _, i in sorted(candidates, key=lambda c: (-c[0], c[1]))[:k])
    derived = load_manifest(out / "retrains" / f"top-k{k}-s0" / "split.json")
    assert derived.derivation is not None and list(derived.derivation.removed) == top
    capsys.readouterr()
    # Resuming downloads the same report again: same hash, nothing retrained.
    assert main(["curate", "--version", "models:/enc/1", "--out", str(out), *plan, *TINY]) == 0
    assert "0 retrains run now, 2 found done" in capsys.readouterr().out

    # A version that is not scored, and inputs given twice, are refused before any work.
    assert main(["curate", "--version", "models:/enc/2", "--out", str(tmp_path / "b"), *plan,
                 *TINY]) == 2  # fmt: skip
    assert "models:/enc/2 is not scored (status 'pending')" in capsys.readouterr().err
    assert main(["curate", "--version", "models:/enc/1", "--scores", str(tmp_path),
                 "--out", str(tmp_path / "c"), *plan, *TINY]) == 2  # fmt: skip
    assert "either a registered version or the score report" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
