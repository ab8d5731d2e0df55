import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sslmem.augment import AugmentationSpec
from sslmem.config import EvaluationConfig, ScoringConfig
from sslmem.errors import CheckpointError, TrackingError, TrackingNotFoundError
from sslmem.evaluation import EvaluationResult, extract_features
from sslmem.memorization.scoring import ScoreReport, ScoreSummary
from sslmem.memorization.stats import summarize_scores
from sslmem.models import Encoder
from sslmem.tracking import (
    ModelVersionRef,
    TrackingTarget,
    find_or_create_run,
    get_model_version,
    get_version_tags,
    load_registered_encoder,
    mark_version_failed,
    missing_provenance,
    parse_model_uri,
    provenance_tags,
    register_encoder,
    resolve_alias,
    set_alias,
    set_version_tags,
    summarize_for_tags,
)
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.tracking.registry import CHECKPOINT_ARTIFACT_PATH

SHA = "ab" * 32


def _provenance(reference_version: str | int = 1) -> dict[str, str]:
    return provenance_tags(
        reference_version=reference_version,
        split_manifest_uri="s3://bucket/splits/split.json",
        split_manifest_sha256=SHA,
        augmentation=AugmentationSpec(),
        layer="backbone",
        seed=3,
    )


def _model_files(ref: ModelVersionRef, dst: Path) -> list[Path]:
    from mlflow.artifacts import download_artifacts

    root = Path(download_artifacts(artifact_uri=ref.uri, dst_path=str(dst)))
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _same_outputs(a: Encoder, b: Encoder) -> bool:
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x)) and torch.equal(a.features(x), b.features(x))


def test_register_writes_no_pickle_and_describes_the_encoder(
    local_mlflow: TrackingTarget, checkpoint: tuple[Encoder, Path], tmp_path: Path
) -> None:
    encoder, path = checkpoint
    run_id = find_or_create_run("p1", step="train")
    ref = register_encoder(
        path, model_name="enc", run_id=run_id, tags=_provenance(), augmentation=AugmentationSpec()
    )
    assert (ref.name, ref.version, ref.run_id) == ("enc", "1", run_id)
    assert ref.uri == "models:/enc/1"

    files = _model_files(ref, tmp_path / "model")
    names = {f.name for f in files}
    assert not [f for f in files if f.suffix in (".pkl", ".pickle")], files
    assert "python_model.pkl" not in names
    assert Path(CHECKPOINT_ARTIFACT_PATH) in files
    assert {"MLmodel", "encoder_pyfunc.py", "augmentation.json"} <= names

    mlmodel = yaml.safe_load((tmp_path / "model" / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert flavor["artifacts"]["checkpoint"]["path"] == CHECKPOINT_ARTIFACT_PATH
    meta = mlmodel["metadata"]["sslmem"]
    assert meta["representation"] == {
        "feature_dim": encoder.feature_dim,
        "head_dim": 8,
        "in_channels": 1,
        "image_size": 28,
    }
    inputs = json.loads(mlmodel["signature"]["inputs"])[0]["tensor-spec"]
    outputs = json.loads(mlmodel["signature"]["outputs"])[0]["tensor-spec"]
    assert inputs == {"dtype": "uint8", "shape": [-1, 1, 28, 28]}
    assert outputs == {"dtype": "float32", "shape": [-1, encoder.feature_dim]}

    tags = get_version_tags("enc", 1)
    assert tags[T.STATUS] == "training"
    assert tags[T.CHECKPOINT_SHA256] == meta["checkpoint_sha256"]
    assert tags[T.REFERENCE_VERSION] == "1"
    assert missing_provenance(tags) == []


def test_register_without_a_run_creates_one(
    local_mlflow: TrackingTarget, checkpoint: tuple[Encoder, Path]
) -> None:
    import mlflow

    _, path = checkpoint
    ref = register_encoder(path, model_name="enc")
    assert ref.run_id is not None and mlflow.active_run() is None
    assert client().get_run(ref.run_id).info.status == "FINISHED"
    second = register_encoder(path, model_name="enc")
    assert second.version == "2"


def test_load_registered_encoder_is_weights_only_and_cached(
    local_mlflow: TrackingTarget,
    checkpoint: tuple[Encoder, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    encoder, path = checkpoint
    ref = register_encoder(path, model_name="enc")
    set_alias("enc", "champion", ref.version)

    def no_pyfunc(*_: object, **__: object) -> None:
        raise AssertionError("scoring must not load registry models as pyfunc")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", no_pyfunc)
    cache = tmp_path / "cache"
    loaded = load_registered_encoder("models:/enc@champion", cache_dir=cache)
    assert _same_outputs(loaded.encoder, encoder)
    assert loaded.path.is_relative_to(cache)
    assert loaded.sha256 == get_version_tags("enc", 1)[T.CHECKPOINT_SHA256]
    assert not loaded.encoder.training

    # A cached file is reused; a corrupted one is detected and fetched again.
    stamp = loaded.path.stat().st_mtime_ns
    assert load_registered_encoder(ref.uri, cache_dir=cache).path.stat().st_mtime_ns == stamp
    loaded.path.write_bytes(b"garbage")
    again = load_registered_encoder(ref.uri, cache_dir=cache)
    assert _same_outputs(again.encoder, encoder)


def test_load_refuses_a_checkpoint_that_does_not_match_its_tag(
    local_mlflow: TrackingTarget, checkpoint: tuple[Encoder, Path], tmp_path: Path
) -> None:
    _, path = checkpoint
    ref = register_encoder(path, model_name="enc")
    client().set_model_version_tag("enc", ref.version, T.CHECKPOINT_SHA256, SHA)
    with pytest.raises(CheckpointError, match="modified after registration"):
        load_registered_encoder(ref.uri, cache_dir=tmp_path)


def test_trusted_pyfunc_serving_matches_the_feature_extractor(
    local_mlflow: TrackingTarget, checkpoint: tuple[Encoder, Path]
) -> None:
    import mlflow

    encoder, path = checkpoint
    spec = AugmentationSpec(mean=(0.3,), std=(0.2,))
    ref = register_encoder(path, model_name="enc", augmentation=spec)
    model = mlflow.pyfunc.load_model(ref.uri)
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    served = model.predict(images.numpy())
    expected = extract_features(encoder, images, augment_spec=spec).numpy()
    assert served.dtype == np.float32 and served.shape == (3, encoder.feature_dim)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)


def test_aliases_resolve_to_numbers_and_are_explicit(
    local_mlflow: TrackingTarget, checkpoint: tuple[Encoder, Path]
) -> None:
    _, path = checkpoint
    register_encoder(path, model_name="enc")
    register_encoder(path, model_name="enc")
    set_alias("enc", "champion", "2")
    assert resolve_alias("enc", "champion") == "2"
    assert get_model_version("models:/enc@champion").version == "2"
    set_alias("enc", "champion", 1)
    assert resolve_alias("enc", "champion") == "1"
    for alias in ("latest", "7", ""):
        with pytest.raises(TrackingError, match="invalid alias"):
            set_alias("enc", alias, 1)
    with pytest.raises(TrackingError, match="resolved version number"):
        set_alias("enc", "champion", "champion")
    with pytest.raises(TrackingNotFoundError, match="has no alias 'nope'"):
        resolve_alias("enc", "nope")  # typed not-found (MLflow says INVALID_PARAMETER_VALUE)


def test_tags_never_store_a_bare_alias(
    local_mlflow: TrackingTarget, checkpoint: tuple[Encoder, Path]
) -> None:
    _, path = checkpoint
    with pytest.raises(TrackingError, match="resolved version number"):
        _provenance(reference_version="champion")
    with pytest.raises(TrackingError, match="resolved version number"):
        register_encoder(path, model_name="enc", tags={T.REFERENCE_VERSION: "champion"})
    ref = register_encoder(path, model_name="enc")
    with pytest.raises(TrackingError, match="resolved version number"):
        set_version_tags("enc", ref.version, {T.REFERENCE_VERSION: "@champion"})
    with pytest.raises(TrackingError, match=T.STATUS):
        set_version_tags("enc", ref.version, {T.STATUS: "done"})
    with pytest.raises(TrackingError, match="SHA-256"):
        set_version_tags("enc", ref.version, {T.SPLIT_MANIFEST_SHA256: "abc"})
    assert set_version_tags("enc", ref.version, {T.REFERENCE_VERSION: 3, "x": 0.5}) == {
        T.REFERENCE_VERSION: "3",
        "x": "0.5",
    }


def test_mark_version_failed(
    local_mlflow: TrackingTarget, checkpoint: tuple[Encoder, Path]
) -> None:
    _, path = checkpoint
    ref = register_encoder(path, model_name="enc")
    mark_version_failed("enc", ref.version, "x" * 10_000)
    tags = get_version_tags("enc", ref.version)
    assert tags[T.STATUS] == "failed"
    assert len(tags[T.FAILURE_REASON]) == T.MAX_REASON_CHARS
    assert tags[T.FAILURE_REASON].endswith("...")


def test_unknown_versions_and_bad_checkpoints_are_clear_errors(
    local_mlflow: TrackingTarget, tmp_path: Path
) -> None:
    with pytest.raises(TrackingError, match="get model version"):
        load_registered_encoder("models:/missing/1", cache_dir=tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        register_encoder(tmp_path / "none.safetensors", model_name="enc")
    (tmp_path / "empty").mkdir()
    client().create_registered_model("other")
    client().create_model_version("other", source=str(tmp_path / "empty"))
    with pytest.raises(TrackingError, match="no sslmem checkpoint artifact"):
        load_registered_encoder("models:/other/1", cache_dir=tmp_path / "cache")
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        register_encoder(tmp_path / "bad.safetensors", model_name="enc")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/enc/3", ("enc", "3", None)),
        ("models:/enc@champion", ("enc", None, "champion")),
        ("models:/team.enc/12", ("team.enc", "12", None)),
    ],
)
def test_parse_model_uri(uri: str, expected: tuple[str, str | None, str | None]) -> None:
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize(
    "uri", ["models:/enc/latest", "models:/enc", "runs:/abc/encoder", "enc/1", "models:/enc/0"]
)
def test_parse_model_uri_rejects_other_forms(uri: str) -> None:
    with pytest.raises(TrackingError, match="unsupported model URI"):
        parse_model_uri(uri)


def _report() -> ScoreReport:
    rng = np.random.default_rng(0)
    by_set = {
        "candidate": rng.normal(0.3, 0.05, 30),
        "independent": rng.normal(-0.2, 0.05, 30),
        "extra": rng.normal(0.0, 0.05, 30),
    }
    sets, tests, verdict = summarize_scores(by_set, alpha=0.01)
    summary = ScoreSummary(
        sets=sets,
        welch_tests=tests,
        verdict=verdict,
        candidates=[],
        references=[],
        manifest_sha256=SHA,
        dataset={},
        augmentation=AugmentationSpec(),
        scoring=ScoringConfig(layer="backbone.stage2"),
        normalization="raw",
        sslmem_version="0.1.0",
        torch_version=torch.__version__,
        device="cpu",
        seconds=1.0,
        points_per_second=90.0,
    )
    return ScoreReport(columns={}, summary=summary)


def test_summarize_for_tags_is_short() -> None:
    report = _report()
    evaluation = EvaluationResult(
        knn_accuracy=0.71,
        linear_probe_accuracy=0.74,
        num_train=10,
        num_test=10,
        num_classes=2,
        feature_dim=8,
        knn_k_used=5,
        config=EvaluationConfig(),
        augment_spec=AugmentationSpec(),
    )
    tags = summarize_for_tags(report, evaluation)
    summary = report.summary
    assert set(tags) == {
        "sslmem.status",
        "sslmem.verdict",
        "sslmem.sslmem_mean.candidate",
        "sslmem.split_manifest_sha256",
        "sslmem.knn_accuracy",
        "sslmem.linear_probe_accuracy",
    }
    assert tags[T.STATUS] == "scored"
    assert tags[T.VERDICT] == ("passed" if summary.verdict.passed else "failed") == "passed"
    assert float(tags[T.sslmem_mean_key("candidate")]) == pytest.approx(
        summary.sets["candidate"].mean, rel=1e-9
    )
    assert tags[T.KNN_ACCURACY] == "0.71" and tags[T.LINEAR_PROBE_ACCURACY] == "0.74"
    assert tags[T.SPLIT_MANIFEST_SHA256] == SHA
    assert T.KNN_ACCURACY not in summarize_for_tags(report)
    assert all(isinstance(v, str) for v in tags.values())
    assert T.scoring_provenance(report)["scoring"]["layer"] == "backbone.stage2"


def test_provenance_tags_round_trip() -> None:
    tags = provenance_tags(
        reference_version=4,
        split_manifest_uri="s3://bucket/splits/split.json",
        split_manifest_sha256=SHA,
        augmentation=AugmentationSpec(output_size=16),
        layer="backbone",
        seed=3,
        extra={"candidate_checkpoints_sha256": [SHA, SHA], "code_version": "9.9"},
    )
    assert set(tags) == {
        "sslmem.role",
        "sslmem.reference_version",
        "sslmem.split_manifest_uri",
        "sslmem.split_manifest_sha256",
        "sslmem.provenance",
        "sslmem.status",
    }
    assert tags[T.REFERENCE_VERSION] == "4"
    provenance = json.loads(tags[T.PROVENANCE])  # plain JSON, readable by any client
    assert provenance["schema"] == 1 and provenance["seed"] == 3
    assert provenance["layer"] == "backbone" and provenance["code_version"] == "9.9"
    assert provenance["candidate_checkpoints_sha256"] == [SHA, SHA]
    assert T.provenance_augmentation(tags) == AugmentationSpec(output_size=16)
    assert T.parse_provenance(tags) == provenance
    assert missing_provenance(tags) == []


def test_missing_provenance_names_what_is_absent() -> None:
    assert missing_provenance({T.STATUS: "training"}) == list(T.REQUIRED_PROVENANCE)
    tags = _provenance()
    no_layer = json.loads(tags[T.PROVENANCE])
    del no_layer["layer"]
    broken = {**tags, T.PROVENANCE: json.dumps(no_layer)}
    assert missing_provenance(broken) == ["sslmem.provenance.layer"]
    assert missing_provenance({**tags, T.PROVENANCE: "{not json"}) == ["sslmem.provenance"]


@pytest.mark.parametrize(
    ("value", "message"),
    [("{not json", "not valid JSON"), ("[1]", "JSON object"), ('{"schema": 2}', "schema 2")],
)
def test_bad_provenance_is_a_clear_error(value: str, message: str) -> None:
    with pytest.raises(TrackingError, match=message):
        T.parse_provenance({T.PROVENANCE: value})
    with pytest.raises(TrackingError, match=message):
        T.validate_version_tags({T.PROVENANCE: value})


def test_merge_provenance_adds_keys() -> None:
    tags = _provenance()
    merged = json.loads(T.merge_provenance(tags, {"score_run_id": "r1"}))
    assert merged["score_run_id"] == "r1" and merged["seed"] == 3 and merged["schema"] == 1
