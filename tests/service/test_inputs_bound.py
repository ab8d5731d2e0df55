"""Inputs bound to the version, on a real ``mlflow server`` and a real SeaweedFS object store.

What a version's tags (editable by anyone with registry access) make the service read or
export is checked before it is used:

* accuracies that are not finite numbers in [0, 1] (``nan``, text, ``inf``, ``-5``) end the
  version ``failed`` with a reason naming the tag and the range, never the value, and are never
  exported as gauges;
* a split manifest or weights location outside the configured stores (another bucket, a local
  file) ends ``failed`` naming ``SSLMEM_SERVICE_ALLOWED_URI_PREFIXES``, before anything is read,
  and the content of what was pointed at never reaches ``sslmem.failure_reason``;
* a score run is used (judging, metrics, the read API) only once it is shown to have scored
  the version's checkpoint.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from sslmem.config import RuntimeSettings
from sslmem.data.splits import SplitManifest, _body_hash, load_manifest
from sslmem.data.store import open_store
from sslmem.service.metrics import LabelPolicy
from sslmem.service.state import read_model, read_version_state, version_records
from sslmem.tracking import RetryPolicy, configure_mlflow, get_version_tags
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client
from sslmem.workflow.judge import judge_registered_version
from sslmem.workflow.register_external import register_external_encoder
from sslmem.workflow.score_version import VersionResult, score_registered_version
from tests.servers import MlflowServer, S3Server
from tests.service.scoring_setup import Encoders, make_encoders, service_settings

pytestmark = [pytest.mark.slow, pytest.mark.s3]

SETTING = "SSLMEM_SERVICE_ALLOWED_URI_PREFIXES"
#: Stands for content a tag must not be able to smuggle into a failure reason.
CONTENT = "TOP-SECRET-" + secrets.token_hex(6)


@dataclass(frozen=True)
class Stack:
    """MLflow, the object store (``store`` bucket) and a bucket outside it (``foreign``)."""

    runtime: RuntimeSettings
    encoders: Encoders
    foreign: str
    reference_uri: str


@pytest.fixture(scope="module")
def stack(
    webhook_mlflow: MlflowServer, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    bucket = s3_server.make_bucket("bound")
    foreign = s3_server.make_bucket("foreign")
    runtime = RuntimeSettings(
        mlflow_tracking_uri=webhook_mlflow.url,
        store_uri=f"s3://{bucket}/sslmem",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=SecretStr(s3_server.access_key),
        s3_secret_key=SecretStr(s3_server.secret_key),
        s3_secure=False,
        device="cpu",
    )
    configure_mlflow(webhook_mlflow.url, retry=RetryPolicy(max_retries=2, timeout=30))
    local = make_encoders(tmp_path_factory.mktemp("bound-enc"))
    open_store(runtime.store_uri, runtime).put_bytes(
        "splits/split.json", Path(local.split_uri).read_bytes()
    )
    split = f"{runtime.store_uri}/splits/split.json"
    encoders = Encoders(split, local.candidate, local.other_candidate, local.reference)
    ref_model = f"bound-ref-{secrets.token_hex(3)}"
    reference = register_external_encoder(
        encoders.reference, model_name=ref_model, split_uri=split, settings=runtime
    )
    yield Stack(runtime, encoders, foreign, f"models:/{ref_model}/{reference.version}")


@pytest.fixture(autouse=True)
def _client(webhook_mlflow: MlflowServer) -> None:
    configure_mlflow(webhook_mlflow.url, retry=RetryPolicy(max_retries=2, timeout=30))


def _candidate(stack: Stack, model: str, checkpoint: Path | None = None) -> str:
    return str(register_external_encoder(
        checkpoint or stack.encoders.candidate, model_name=model,
        split_uri=stack.encoders.split_uri, reference_uri=stack.reference_uri,
        settings=stack.runtime,
    ).version)  # fmt: skip


def _score(stack: Stack, model: str, version: str) -> VersionResult:
    return score_registered_version(
        model, version, settings=service_settings(), runtime=stack.runtime
    )


def _assert_failed(model: str, version: str, result: VersionResult, *needles: str) -> str:
    """The version ends ``failed`` (status and reason tags) with ``needles`` in the reason."""
    assert (result.outcome, result.failure) == ("failed", "data"), result
    tags = get_version_tags(model, version)
    assert tags[T.STATUS] == "failed"
    reason = str(tags[T.FAILURE_REASON])
    for needle in needles:
        assert needle in reason, reason
    assert CONTENT not in reason
    return reason


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (T.KNN_ACCURACY, "nan"),
        (T.KNN_ACCURACY, "abc"),
        (T.LINEAR_PROBE_ACCURACY, "inf"),
        (T.KNN_ACCURACY, "-5"),
        (T.LINEAR_PROBE_ACCURACY, "1.5"),
    ],
)
def test_invalid_accuracy_fails_the_version_without_echoing_it(
    stack: Stack, key: str, value: str
) -> None:
    model = f"acc-{secrets.token_hex(3)}"
    version = _candidate(stack, model)
    # Anyone with registry access can edit a tag; MLflow stores any text.
    client().set_model_version_tag(model, version, key, value)
    result = _score(stack, model, version)
    reason = _assert_failed(model, version, result, key, "[0, 1]")
    assert f"={value}" not in reason and f" {value}" not in reason
    assert T.score_run_id(get_version_tags(model, version)) is None  # nothing was scored
    # The failed version exports nothing; and a second pass does not raise or retry.
    assert version_records(read_model(model), LabelPolicy()) == []
    assert _score(stack, model, version).outcome == "skipped"


def test_uris_outside_the_store_fail_naming_the_setting(
    stack: Stack, s3_server: S3Server, tmp_path: Path
) -> None:
    # What the tags point at holds content that must not leak into the (public) reason.
    foreign_store = s3_server.s3_store(stack.foreign)
    foreign_store.put_bytes("splits/split.json", f'{{"{CONTENT}": 1}}'.encode())
    local = tmp_path / "secret.json"
    local.write_text(json.dumps({"token": CONTENT}))
    model = f"uri-{secrets.token_hex(3)}"
    for uri in (
        f"s3://{stack.foreign}/splits/split.json",  # another bucket
        str(local),  # a local file the pod can read
        f"file://{local}",
        f"{stack.runtime.store_uri}/../../{stack.foreign}/splits/split.json",  # `..` escape
    ):
        version = _candidate(stack, model)
        client().set_model_version_tag(model, version, T.SPLIT_MANIFEST_URI, uri)
        result = _score(stack, model, version)
        reason = _assert_failed(model, version, result, SETTING, T.SPLIT_MANIFEST_URI)
        assert stack.foreign not in reason and str(local) not in reason


def test_invalid_manifest_content_is_not_echoed(stack: Stack) -> None:
    # Inside the store, but not a manifest: the validation error names fields, not content.
    store = open_store(stack.runtime.store_uri, stack.runtime)
    store.put_bytes(
        "splits/bad.json",
        json.dumps({"manifest_sha256": CONTENT, "seed": CONTENT, "dataset": [CONTENT]}).encode(),
    )
    model = f"manifest-{secrets.token_hex(3)}"
    version = _candidate(stack, model)
    bad = f"{stack.runtime.store_uri}/splits/bad.json"
    client().set_model_version_tag(model, version, T.SPLIT_MANIFEST_URI, bad)
    reason = _assert_failed(model, version, _score(stack, model, version), "malformed")
    assert CONTENT not in reason


def test_dataset_outside_the_store_fails_before_it_is_read(stack: Stack) -> None:
    # A valid manifest (hash and all) naming an s3:// dataset in another bucket.
    manifest = load_manifest(stack.encoders.split_uri, stack.runtime)
    body = manifest.model_dump(mode="json", exclude={"manifest_sha256"})
    body["dataset"]["name"] = f"s3://{stack.foreign}/images/"
    forged = SplitManifest.model_validate({**body, "manifest_sha256": _body_hash(body)})
    store = open_store(stack.runtime.store_uri, stack.runtime)
    store.put_bytes("splits/forged.json", forged.to_json())
    model = f"dataset-{secrets.token_hex(3)}"
    version = _candidate(stack, model)
    client().set_model_version_tag(
        model, version, T.SPLIT_MANIFEST_URI, f"{stack.runtime.store_uri}/splits/forged.json"
    )
    client().set_model_version_tag(model, version, T.SPLIT_MANIFEST_SHA256, forged.manifest_sha256)
    reason = _assert_failed(model, version, _score(stack, model, version), SETTING, "dataset")
    assert stack.foreign not in reason


def test_weights_stored_outside_the_store_fail_instead_of_running_forever(
    stack: Stack,
) -> None:
    model = f"source-{secrets.token_hex(3)}"
    good = _candidate(stack, model)
    # A version whose source is an s3:// location in another bucket, with valid provenance.
    tags = {k: v for k, v in get_version_tags(model, good).items() if k != T.STATUS}
    tags[T.STATUS] = "pending"
    outside = (
        client()
        .create_model_version(model, f"s3://{stack.foreign}/models/encoder", tags=tags)
        .version
    )
    result = _score(stack, model, str(outside))
    reason = _assert_failed(model, str(outside), result, SETTING, "weights")
    assert stack.foreign not in reason


def test_score_run_of_another_version_is_never_used(stack: Stack) -> None:
    model = f"bind-{secrets.token_hex(3)}"
    first = _candidate(stack, model)
    second = _candidate(stack, model, stack.encoders.other_candidate)
    for version in (first, second):
        assert _score(stack, model, version).outcome == "scored"
    state = read_version_state(model, first)
    assert state.summary is not None  # bound: its own run
    labelled = {r.version for r in version_records(read_model(model), LabelPolicy())}
    assert labelled == {first, second}

    # A hand edit points the first version's provenance at the second version's score run.
    tags = get_version_tags(model, first)
    other_run = T.score_run_id(get_version_tags(model, second))
    forged = T.merge_provenance(tags, {T.SCORE_RUN: other_run})
    client().set_model_version_tag(model, first, T.PROVENANCE, forged)

    assert read_version_state(model, first).summary is None  # the read API shows no numbers
    records = version_records(read_model(model), LabelPolicy())
    assert {r.version for r in records} == {second}  # no gauges with another's numbers
    with pytest.raises(T.InvalidInputError, match=T.CHECKPOINT_SHA256):
        judge_registered_version(model, first, settings=service_settings(), runtime=stack.runtime)


def test_invalid_accuracy_of_a_scored_version_is_never_exported(stack: Stack) -> None:
    model = f"gauge-{secrets.token_hex(3)}"
    version = _candidate(stack, model)
    client().set_model_version_tag(model, version, T.KNN_ACCURACY, "0.75")
    assert _score(stack, model, version).outcome == "scored"
    (record,) = version_records(read_model(model), LabelPolicy())
    assert record.knn_accuracy == 0.75
    for value in ("inf", "-5", "nan", "abc"):
        client().set_model_version_tag(model, version, T.KNN_ACCURACY, value)
        (record,) = version_records(read_model(model), LabelPolicy())
        assert record.knn_accuracy is None, value
        # Judging it again refuses the value instead of judging with it (NaN compares false).
        with pytest.raises(T.InvalidInputError, match=T.KNN_ACCURACY):
            judge_registered_version(
                model, version, settings=service_settings(), runtime=stack.runtime
            )
