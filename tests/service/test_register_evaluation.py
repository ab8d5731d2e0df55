"""``sslmem register --evaluation FILE``: a version is created with its downstream accuracies.

Against a real ``mlflow server`` (fixture ``webhook_mlflow``). The file is written by the real
``sslmem evaluate --out`` on the same checkpoint, so the expected tag values are what that command
measured and wrote, read straight from its JSON; bad files are refused before anything is
registered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sslmem.cli import main
from sslmem.tracking import configure_mlflow, get_version_tags
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from tests.servers import MlflowServer
from tests.service.scoring_setup import Encoders, make_encoders

pytestmark = pytest.mark.slow

#: Evaluation settings cheap enough for a test (the accuracies' values do not matter here).
CHEAP_EVALUATION = ["--set", "evaluation.probe_epochs=2", "--set", "evaluation.knn_k=5"]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code) if isinstance(exc.code, int) else 1


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Encoders, Path]:
    """Tiny encoders and the file ``sslmem evaluate --out`` wrote for the candidate."""
    root = tmp_path_factory.mktemp("register-evaluation")
    encoders = make_encoders(root / "enc")
    out = root / "candidate-eval.json"
    argv = ["evaluate", "--encoder", str(encoders.candidate), "--out", str(out), "--device", "cpu"]
    assert _run([*argv, *CHEAP_EVALUATION]) == 0
    return encoders, out


@dataclass(frozen=True)
class Register:
    """``sslmem register`` of a candidate of ``model`` (its reference is version 1 of -ref)."""

    model: str
    encoders: Encoders

    def __call__(self, *extra: str, encoder: Path | None = None) -> int:
        return _run(
            [
                "register", "--model", self.model, "--split", self.encoders.split_uri,
                "--encoder", str(encoder or self.encoders.candidate),
                "--reference", f"models:/{self.model}-ref/1", *extra,
            ]
        )  # fmt: skip


@pytest.fixture
def register(
    webhook_mlflow: MlflowServer,
    evaluated: tuple[Encoders, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Register:
    """``sslmem register`` for a fresh model (named after the test) with its reference."""
    encoders, _ = evaluated
    monkeypatch.setenv("SSLMEM_MLFLOW_TRACKING_URI", webhook_mlflow.url)
    monkeypatch.setenv("SSLMEM_STORE_URI", str(tmp_path / "store"))
    monkeypatch.setenv("SSLMEM_DEVICE", "cpu")
    configure_mlflow(webhook_mlflow.url)
    model = re.sub(r"\W", "-", request.node.name)
    common = ["register", "--model", f"{model}-ref", "--split", encoders.split_uri]
    assert _run([*common, "--encoder", str(encoders.reference), "--as-reference"]) == 0
    return Register(model, encoders)


def _versions(model: str) -> list[Any]:
    return list(client().search_model_versions(f"name='{model}'"))


def test_register_tags_the_accuracies_that_sslmem_evaluate_wrote(
    register: Register, evaluated: tuple[Encoders, Path]
) -> None:
    _, file = evaluated
    written = json.loads(file.read_text())
    assert register("--evaluation", str(file)) == 0
    tags = get_version_tags(register.model, "1")
    assert float(tags[T.KNN_ACCURACY]) == pytest.approx(written["knn_accuracy"], abs=1e-12)
    assert float(tags[T.LINEAR_PROBE_ACCURACY]) == pytest.approx(
        written["linear_probe_accuracy"], abs=1e-12
    )
    assert tags[T.STATUS] == "pending"


def test_without_evaluation_no_accuracy_tags(register: Register) -> None:
    assert register() == 0
    tags = get_version_tags(register.model, "1")
    assert T.KNN_ACCURACY not in tags and T.LINEAR_PROBE_ACCURACY not in tags


def _edited(file: Path, out: Path, **changes: Any) -> Path:
    record = json.loads(file.read_text())
    for key, value in changes.items():
        if value is None:
            del record[key]
        else:
            record[key] = value
    out.write_text(json.dumps(record))
    return out


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("missing", r"evaluation file \S+ does not exist"),
        ("not-json", r"evaluation file \S+ is not JSON"),
        ("list", r"evaluation file \S+ holds a JSON list"),
        ("knn-above-1", r"knn_accuracy: Input should be less than or equal to 1"),
        ("probe-negative", r"linear_probe_accuracy: Input should be greater than or equal to 0"),
        ("probe-missing", r"linear_probe_accuracy: Field required"),
        ("config-missing", r"missing probe_epochs"),
        ("other-checkpoint", r"is of another checkpoint .* than \S+f2\.safetensors"),
    ],
)
def test_a_bad_evaluation_is_refused_before_anything_is_registered(
    register: Register,
    evaluated: tuple[Encoders, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    says: str,
) -> None:
    encoders, good = evaluated
    bad = tmp_path / f"{case}.json"
    encoder = encoders.candidate
    if case == "not-json":
        bad.write_text("{knn_accuracy: 0.5")
    elif case == "list":
        bad.write_text("[0.5, 0.6]")
    elif case == "knn-above-1":
        _edited(good, bad, knn_accuracy=1.5)
    elif case == "probe-negative":
        _edited(good, bad, linear_probe_accuracy=-0.1)
    elif case == "probe-missing":
        _edited(good, bad, linear_probe_accuracy=None)
    elif case == "config-missing":
        _edited(good, bad, probe_epochs=None)
    elif case == "other-checkpoint":
        bad, encoder = good, encoders.other_candidate  # f's evaluation given for f2
    capsys.readouterr()
    assert register("--evaluation", str(bad), encoder=encoder) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(says, err), err
    assert str(bad) in err  # names the file
    assert "sslmem evaluate --encoder" in err  # and the fix
    assert _versions(register.model) == []
