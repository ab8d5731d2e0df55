"""The MLflow model registry for sslmem encoders, weights only.

Registering never pickles: an encoder version is an MLflow "models from code" pyfunc whose code
is :mod:`sslmem.tracking.encoder_pyfunc` (a source file shipped in this package) and whose
artifact ``checkpoint`` is the safetensors checkpoint. Loading for scoring never runs model code
from the registry: :func:`load_registered_encoder` downloads the checkpoint file, checks its
SHA-256 against the version's tag and rebuilds the encoder with
:func:`sslmem.models.load_checkpoint`.

Aliases are moved only explicitly (:func:`set_alias`), and anything stored (tags, provenance)
refers to resolved version numbers (:func:`resolve_alias`), never to a bare alias. Version tags
are set validated (:func:`set_version_tags`), with ``sslmem.status`` last where a status comes
with other tags (:func:`set_tags_status_last`), and searched (:func:`find_versions_by_tag`: the
versions one pipeline run registered).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch

from sslmem import __version__
from sslmem.augment import AugmentationSpec
from sslmem.errors import CheckpointError, TrackingError, TrackingNotFoundError
from sslmem.models.checkpoint import (
    CheckpointHeader,
    LoadedCheckpoint,
    file_sha256,
    load_checkpoint,
    read_checkpoint_metadata,
)
from sslmem.tracking import tags as T
from sslmem.tracking.connection import client, current_target, tracking_errors

#: The models-from-code file logged as every encoder version's ``python_model``.
ENCODER_PYFUNC_PATH = Path(__file__).with_name("encoder_pyfunc.py")
MODEL_ARTIFACT_NAME = "encoder"
CHECKPOINT_FILE = "checkpoint.safetensors"
AUGMENTATION_FILE = "augmentation.json"
#: Where a version's checkpoint lives inside its model artifact.
CHECKPOINT_ARTIFACT_PATH = f"artifacts/{CHECKPOINT_FILE}"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "sslmem" / "models"


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version.

    Attributes:
        name: Registered model name.
        version: Version number (as MLflow returns it, a string of digits).
        run_id: The run the model was logged from (``None`` if unknown).
        source: The version's source URI (``models:/m-...`` for a logged model).
        model_id: The MLflow 3 logged model behind the version (``m-...``; ``None`` if unknown).

    """

    name: str
    version: str
    run_id: str | None
    source: str
    model_id: str | None = None

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"


def _logged_model_id(version: Any) -> str | None:
    """The logged model behind a version: its ``model_id``, else its ``models:/m-...`` source.

    The SQL registry leaves ``ModelVersion.model_id`` empty; the source names the model.
    """
    if getattr(version, "model_id", None):
        return str(version.model_id)
    source = str(version.source or "")
    body = source.removeprefix("models:/")
    if body != source and body.startswith("m-") and "/" not in body:
        return body
    return None


def _ref(version: Any) -> ModelVersionRef:
    return ModelVersionRef(
        name=str(version.name),
        version=str(version.version),
        run_id=str(version.run_id) if version.run_id else None,
        source=str(version.source),
        model_id=_logged_model_id(version),
    )


def encoder_signature(representation: Mapping[str, int]) -> Any:
    """MLflow signature of an encoder: uint8 ``[-1, C, H, W]`` -> float32 ``[-1, D]``.

    Args:
        representation: The checkpoint's ``{"feature_dim", "in_channels", "image_size", ...}``.

    """
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    channels, size = int(representation["in_channels"]), int(representation["image_size"])
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, channels, size, size))]),
        outputs=Schema(
            [TensorSpec(np.dtype(np.float32), (-1, int(representation["feature_dim"])))]
        ),
    )


def _model_metadata(header: CheckpointHeader, sha256: str) -> dict[str, Any]:
    return {
        "sslmem": {
            "format": "sslmem.encoder",
            "format_version": header.format_version,
            "arch": header.arch,
            "representation": dict(header.representation),
            "output": "backbone features float32 [N, feature_dim]",
            "checkpoint_sha256": sha256,
            "checkpoint_artifact": CHECKPOINT_ARTIFACT_PATH,
            "sslmem_version": __version__,
        }
    }


def _pip_requirements() -> list[str]:
    import mlflow

    return [
        f"sslmem=={__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        "safetensors",
        f"mlflow=={mlflow.__version__}",
    ]


@contextlib.contextmanager
def _run_for(run_id: str | None, run_name: str) -> Iterator[str]:
    """Make ``run_id`` (or a new run, if none is given or active) the active run."""
    import mlflow

    from sslmem.tracking.runs import get_or_create_experiment

    active = mlflow.active_run()
    if run_id is None and active is not None:
        yield str(active.info.run_id)
        return
    if run_id is not None and active is not None and active.info.run_id == run_id:
        yield run_id
        return
    with tracking_errors("start a run to log the encoder in"):
        if run_id is None:
            experiment_id = get_or_create_experiment()
            run = mlflow.start_run(
                experiment_id=experiment_id, run_name=run_name, nested=active is not None
            )
        else:
            run = mlflow.start_run(run_id=run_id, nested=active is not None)
    status = "FAILED"
    try:
        yield str(run.info.run_id)
        status = "FINISHED"
    finally:
        with tracking_errors("end the run"):
            mlflow.end_run(status)


def register_encoder(
    checkpoint_path: str | os.PathLike[str],
    *,
    model_name: str,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    augmentation: AugmentationSpec | None = None,
    await_registration_s: int = 300,
    logged_model_name: str = MODEL_ARTIFACT_NAME,
    logged_model_params: Mapping[str, str] | None = None,
) -> ModelVersionRef:
    """Register an encoder checkpoint as a new version of ``model_name``, without pickling.

    The checkpoint is validated (header only), logged as the ``checkpoint`` artifact of a
    models-from-code pyfunc (:data:`ENCODER_PYFUNC_PATH`) with a tensor signature and the
    representation spec in the model metadata, and registered. The version is tagged with
    ``tags`` plus ``sslmem.checkpoint_sha256`` and, unless given, ``sslmem.status=training``.

    Args:
        checkpoint_path: A checkpoint written by :func:`sslmem.models.save_checkpoint`.
        model_name: Registered model name (created if needed).
        run_id: Run to log the model in; default the active run, else a new run in the
            ``sslmem`` experiment.
        tags: Version tags (see :mod:`sslmem.tracking.tags`; e.g. from
            :func:`~sslmem.tracking.tags.provenance_tags`).
        augmentation: The preprocessing spec, shipped as JSON for pyfunc serving.
        await_registration_s: Seconds to wait for the version to become READY.
        logged_model_name: Name of the MLflow 3 logged model (the experiment's model table
            lists logged models by this name, e.g. ``candidate-encoder``).
        logged_model_params: Params of the logged model (shown on its page).

    Returns:
        The new version.

    Raises:
        CheckpointError: The file is missing or not an sslmem checkpoint.
        TrackingError: Invalid tags (e.g. an alias as reference version), or MLflow is
            unreachable or refused.

    """
    import mlflow

    source = Path(checkpoint_path)
    header = read_checkpoint_metadata(source)
    sha256 = file_sha256(source)
    version_tags = T.validate_version_tags({T.STATUS: "training", **(tags or {})})
    version_tags[T.CHECKPOINT_SHA256] = sha256
    with tempfile.TemporaryDirectory(prefix="sslmem-register-") as tmp:
        staged = Path(tmp) / CHECKPOINT_FILE
        shutil.copyfile(source, staged)
        if file_sha256(staged) != sha256:
            raise CheckpointError(f"{source} changed while it was being registered")
        artifacts = {"checkpoint": str(staged)}
        if augmentation is not None:
            spec_file = Path(tmp) / AUGMENTATION_FILE
            spec_file.write_text(augmentation.model_dump_json())
            artifacts["augmentation"] = str(spec_file)
        with (
            _run_for(run_id, f"register-{model_name}") as rid,
            tracking_errors(f"register {source} as model {model_name!r}"),
            warnings.catch_warnings(),
        ):
            # No input example on purpose: logging one would run the model at registration.
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            info = mlflow.pyfunc.log_model(
                name=logged_model_name,
                params=dict(logged_model_params or {}),
                model_type="sslmem-encoder",
                python_model=str(ENCODER_PYFUNC_PATH),
                artifacts=artifacts,
                signature=encoder_signature(header.representation),
                metadata=_model_metadata(header, sha256),
                pip_requirements=_pip_requirements(),
            )
            version = mlflow.register_model(
                info.model_uri,
                model_name,
                await_registration_for=await_registration_s,
                tags=version_tags,
            )
            ref = _ref(version)
            if ref.run_id is None or ref.model_id is None:
                ref = ModelVersionRef(
                    ref.name, ref.version, ref.run_id or rid, ref.source, info.model_id
                )
    return ref


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/<name>/<version>`` or ``models:/<name>@<alias>``.

    Returns:
        ``(name, version, alias)`` with exactly one of ``version`` / ``alias`` set.

    Raises:
        TrackingError: Any other form (``latest``, stages and run URIs are not accepted).

    """
    prefix = "models:/"
    body = model_uri[len(prefix) :] if model_uri.startswith(prefix) else ""
    if "@" in body:
        name, _, alias = body.rpartition("@")
        if name and alias and "/" not in alias:
            return name, None, alias
    elif "/" in body:
        name, _, version = body.rpartition("/")
        if name and version.isdigit() and int(version) > 0:
            return name, version, None
    raise TrackingError(
        f"unsupported model URI {model_uri!r}",
        "use models:/<name>/<version> or models:/<name>@<alias>",
    )


def resolve_alias(name: str, alias: str) -> str:
    """The version number ``alias`` points to (store this, never the alias).

    Raises:
        TrackingNotFoundError: No such model or alias.
        TrackingError: MLflow is unreachable (a ``TrackingUnavailableError``) or refused.

    """
    # Read from the model's aliases: MLflow answers a missing alias with INVALID_PARAMETER_VALUE,
    # which must not be told apart from other refusals by its text.
    with tracking_errors(f"resolve alias {alias!r} of model {name!r}"):
        aliases = dict(client().get_registered_model(name).aliases or {})
    if alias not in aliases:
        raise TrackingNotFoundError(
            f"model {name!r} has no alias {alias!r}",
            "set the alias on a version of the model first",
        )
    return T.check_version_number(str(aliases[alias]))


def get_model_version(model_uri: str) -> ModelVersionRef:
    """The version a ``models:/`` URI refers to, with an alias resolved to its number.

    Raises:
        TrackingError: Bad URI, no such version or alias, or MLflow is unreachable.

    """
    name, version, alias = parse_model_uri(model_uri)
    if alias is not None:
        version = resolve_alias(name, alias)
    with tracking_errors(f"get model version {name!r} {version}"):
        return _ref(client().get_model_version(name, version))


def get_version_tags(name: str, version: str | int) -> dict[str, str]:
    """The tags of a model version.

    Raises:
        TrackingError: No such version, or MLflow is unreachable.

    """
    number = T.check_version_number(version)
    with tracking_errors(f"read the tags of model {name!r} version {number}"):
        return dict(client().get_model_version(name, number).tags)


def _cache_path(cache_dir: Path, name: str, version: str) -> Path:
    key = f"{current_target().tracking_uri}\n{name}\n{version}".encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    return cache_dir / f"{quote(name, safe='')}-v{version}-{digest}" / CHECKPOINT_FILE


def _download_checkpoint(name: str, version: str, target: Path) -> None:
    from mlflow.artifacts import download_artifacts

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as tmp:
        uri = f"models:/{name}/{version}/{CHECKPOINT_ARTIFACT_PATH}"
        try:
            with tracking_errors(f"download the checkpoint of model {name!r} version {version}"):
                local = download_artifacts(artifact_uri=uri, dst_path=tmp)
        except TrackingNotFoundError as exc:  # typed by status/code, never by message text
            raise TrackingNotFoundError(
                f"model {name!r} version {version} has no sslmem checkpoint artifact "
                f"({CHECKPOINT_ARTIFACT_PATH})",
                "register encoders with sslmem.tracking.register_encoder",
            ) from exc
        os.replace(local, target)


def load_registered_encoder(
    model_uri: str,
    *,
    map_location: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadedCheckpoint:
    """Download a registered encoder's checkpoint and load it weights-only.

    No model code from the registry runs and nothing is unpickled: only the safetensors file is
    fetched, its SHA-256 is checked against the version's ``sslmem.checkpoint_sha256`` tag
    (when present) and the encoder is rebuilt by :func:`sslmem.models.load_checkpoint`.
    Downloaded files are cached per (tracking URI, name, version) and re-verified on every load.

    Args:
        model_uri: ``models:/<name>/<version>`` or ``models:/<name>@<alias>``.
        map_location: Device for the encoder.
        cache_dir: Download cache (default ``~/.cache/sslmem/models``).

    Returns:
        The loaded checkpoint (``path`` is the cached local file).

    Raises:
        TrackingError: Bad URI, unknown version or alias, no checkpoint artifact, or MLflow is
            unreachable.
        CheckpointError: The file's hash does not match the version's tag, or it is not a valid
            sslmem checkpoint.

    """
    ref = get_model_version(model_uri)
    expected = get_version_tags(ref.name, ref.version).get(T.CHECKPOINT_SHA256)
    path = _cache_path(Path(cache_dir or DEFAULT_CACHE_DIR), ref.name, ref.version)
    if not path.is_file() or (expected is not None and file_sha256(path) != expected):
        _download_checkpoint(ref.name, ref.version, path)
    loaded = load_checkpoint(path, map_location=map_location)
    if expected is not None and loaded.sha256 != expected:
        raise CheckpointError(
            f"checkpoint of {ref.uri} has SHA-256 {loaded.sha256}, but the version is tagged "
            f"{T.CHECKPOINT_SHA256}={expected}",
            "the artifact was modified after registration; re-register the encoder",
        )
    return loaded


def set_version_tags(name: str, version: str | int, tags: Mapping[str, Any]) -> dict[str, str]:
    """Set (validated) tags on a model version.

    Returns:
        The tags as set (string values).

    Raises:
        TrackingError: An invalid tag value (e.g. an alias as reference version), no such
            version, or MLflow is unreachable.

    """
    number = T.check_version_number(version)
    values = T.validate_version_tags(tags)
    with tracking_errors(f"tag model {name!r} version {number}"):
        mlflow_client = client()
        for key, value in values.items():
            mlflow_client.set_model_version_tag(name, number, key, value)
    return values


def set_tags_status_last(name: str, version: str | int, tags: Mapping[str, Any]) -> dict[str, str]:
    """Set version tags, writing ``sslmem.status`` after every other tag.

    A reader that sees the new status therefore sees all the tags that come with it; a failure
    midway leaves the previous status.

    Returns:
        The tags as set.

    Raises:
        TrackingError: Invalid tags, no such version, or MLflow is unreachable.

    """
    others = {k: v for k, v in tags.items() if k != T.STATUS}
    written = set_version_tags(name, version, others) if others else {}
    if T.STATUS in tags:
        written.update(set_version_tags(name, version, {T.STATUS: tags[T.STATUS]}))
    return written


def find_versions_by_tag(name: str, key: str, value: str) -> list[tuple[str, dict[str, str]]]:
    """Versions of registered model ``name`` whose tag ``key`` equals ``value``.

    Returns:
        ``[(version number, tags)]`` sorted by version number; empty if the model does not
        exist.

    Raises:
        TrackingError: A quote in the arguments, or MLflow is unreachable.

    """
    for what, text in (("model name", name), ("tag key", key), ("tag value", value)):
        if any(c in text for c in "'\"`\\"):
            raise TrackingError(f"{what} must not contain quotes or backslashes, got {text!r}")
    query = f"name = '{name}' and tags.`{key}` = '{value}'"
    with tracking_errors(f"search versions of model {name!r} by tag {key}"):
        found = client().search_model_versions(query)
    versions = [(str(v.version), dict(v.tags)) for v in found]
    return sorted(versions, key=lambda item: int(item[0]))


def set_alias(name: str, alias: str, version: str | int) -> None:
    """Point ``alias`` (e.g. ``champion``) of ``name`` at a version number, explicitly.

    Raises:
        TrackingError: ``version`` is not a number, no such version, or MLflow is unreachable.

    """
    number = T.check_version_number(version)
    if not alias or alias.isdigit() or alias.lower() == "latest":
        raise TrackingError(
            f"invalid alias {alias!r}", "use a name such as 'champion' (not digits or 'latest')"
        )
    with tracking_errors(f"set alias {alias!r} of model {name!r} to version {number}"):
        client().set_registered_model_alias(name, alias, number)


def delete_version_tags(name: str, version: str | int, keys: Iterable[str]) -> None:
    """Delete tags of a version (e.g. a stale ``sslmem.failure_reason``); absent ones are fine.

    Raises:
        TrackingError: No such version, or MLflow is unreachable.

    """
    number = T.check_version_number(version)
    for key in keys:
        try:
            with tracking_errors(f"delete tag {key} of model {name!r} version {number}"):
                client().delete_model_version_tag(name, number, key)
        except TrackingNotFoundError:
            continue  # already gone: the end state is the same


def mark_version_failed(name: str, version: str | int, reason: str) -> None:
    """Tag a version ``sslmem.status=failed`` with ``sslmem.failure_reason`` (truncated).

    Raises:
        TrackingError: No such version, or MLflow is unreachable.

    """
    text = reason.strip() or "unspecified failure"
    if len(text) > T.MAX_REASON_CHARS:
        text = text[: T.MAX_REASON_CHARS - 3] + "..."
    set_version_tags(name, version, {T.STATUS: "failed", T.FAILURE_REASON: text})
