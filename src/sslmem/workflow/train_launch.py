"""Step 2 on several processes: the train step under ``torchrun`` when it holds N devices.

:func:`train_role_processes` is what the train component calls. With one process it is
:func:`~sslmem.workflow.train_role`; with N > 1 it runs this module under
``python -m torch.distributed.run --standalone --nproc-per-node N`` (see
:func:`sslmem.training.launch.torchrun_command`), where every process calls the same
:func:`~sslmem.workflow.train_role` and rank 0 writes the checkpoint, the MLflow run and a small
JSON result that the launching process reads back. Child processes take their runtime settings
(store, MLflow, device) from the environment they inherit.

On several nodes the ranks share no disk: ``--recipe``, ``--out`` and ``--result`` may then be
object-store URIs (``s3://...``), and rank 0 uploads the checkpoint and its result there.
:func:`train_across_nodes` is that exchange (stage the inputs under the step's prefix, run,
verify and fetch rank 0's checkpoint); how the nodes are started is its caller's (a Kubeflow
Trainer TrainJob built by :mod:`sslmem.pipelines.trainjob`, the adapter, and submitted with
:func:`sslmem.training.trainjob_client.submit_and_wait`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from sslmem.atomic import atomic_write_bytes
from sslmem.config import ExperimentConfig
from sslmem.config_text import training_recipe
from sslmem.data.splits import Role
from sslmem.data.store import read_bytes, write_bytes
from sslmem.errors import TrainingError
from sslmem.training.launch import check_nproc, run_processes, torchrun_command
from sslmem.workflow.train import TrainedEncoder, train_role

if TYPE_CHECKING:
    from sslmem.data.store import ObjectStore

#: The module every training process runs (this one).
TRAIN_MODULE = "sslmem.workflow.train_launch"
_ROLES: tuple[Role, ...] = ("candidate", "reference")


def train_role_processes(
    *,
    nproc: int,
    manifest_path: Path | str,
    recipe: ExperimentConfig | str,
    role: Role,
    seed: int,
    out_path: Path,
    expected_manifest_sha256: str | None = None,
    experiment: str | None = None,
    device: str | None = None,
    code_version: str = "",
) -> TrainedEncoder:
    """Train the ``role`` encoder in ``nproc`` processes on this node (DDP) or in this one.

    The global batch is ``training.batch_size`` whatever ``nproc`` is (each process takes
    ``batch_size / nproc`` images of every step), so the recipe -- and the step's cache key --
    mean the same on 1 or N devices.

    Args:
        nproc: Processes, one per accelerator; 1 trains in this process.
        manifest_path: The split manifest (path or store URI).
        recipe: The config, or its recipe JSON.
        role: ``"candidate"`` or ``"reference"``.
        seed: Training seed.
        out_path: Where rank 0 writes the checkpoint file.
        expected_manifest_sha256: Refuse a manifest with another hash.
        experiment: MLflow experiment of the training run (rank 0); ``None``: none.
        device: ``auto``/``cpu``/``cuda``; default ``SSLMEM_DEVICE`` (each rank takes
            ``cuda:LOCAL_RANK``).
        code_version: The pipeline's code identity, passed to every process so the resume
            state's key is the one ``identify-code`` computed (see :func:`train_role`).

    Returns:
        Rank 0's :class:`~sslmem.workflow.TrainedEncoder`.

    Raises:
        ConfigError: ``nproc`` is out of range, or the batch does not divide by it.
        TrainingError: A process failed (its error is in the log).

    """
    check_nproc(nproc)
    if nproc == 1:
        return train_role(
            manifest_path=manifest_path,
            recipe=recipe,
            role=role,
            seed=seed,
            out_path=out_path,
            expected_manifest_sha256=expected_manifest_sha256,
            experiment=experiment,
            device=device,
            code_version=code_version,
        )
    recipe_json = recipe if isinstance(recipe, str) else training_recipe(recipe)
    with tempfile.TemporaryDirectory(prefix=f"sslmem-launch-{role}-") as tmp:
        recipe_file, result_file = Path(tmp) / "recipe.json", Path(tmp) / "result.json"
        recipe_file.write_text(recipe_json, encoding="utf-8")
        args = launch_args(
            manifest_path=manifest_path,
            recipe_file=recipe_file,
            role=role,
            seed=seed,
            out_path=out_path,
            result_file=result_file,
            expected_manifest_sha256=expected_manifest_sha256,
            experiment=experiment,
            device=device,
            code_version=code_version,
        )
        run_processes(torchrun_command(nproc, TRAIN_MODULE, args))
        if not result_file.is_file():
            raise TrainingError(
                f"distributed training exited without rank 0's result {result_file}",
                "see the log above; every rank must finish train_role",
            )
        fields = json.loads(result_file.read_text(encoding="utf-8"))
    fields["checkpoint"] = Path(fields["checkpoint"])
    return TrainedEncoder(**fields)


def launch_args(
    *,
    manifest_path: Path | str,
    recipe_file: Path | str,
    role: Role,
    seed: int,
    out_path: Path | str,
    result_file: Path | str,
    expected_manifest_sha256: str | None = None,
    experiment: str | None = None,
    device: str | None = None,
    code_version: str = "",
) -> list[str]:
    """Arguments of this module's entry point (one process of a multi-process train step).

    The single-node launch (:func:`train_role_processes`) and the multi-node TrainJob
    (:func:`sslmem.pipelines.trainjob.build_train_job`) both run this module with them.
    """
    args = [
        f"--manifest={manifest_path}",
        f"--recipe={recipe_file}",
        f"--role={role}",
        f"--seed={seed}",
        f"--out={out_path}",
        f"--result={result_file}",
    ]
    if expected_manifest_sha256:
        args.append(f"--expected-manifest-sha256={expected_manifest_sha256}")
    if experiment is not None:
        args.append(f"--experiment={experiment}")
    if device is not None:
        args.append(f"--device={device}")
    if code_version:
        args.append(f"--code-version={code_version}")
    return args


#: Where multi-node steps exchange their inputs and rank 0's result in the object store.
STEP_PREFIX = "trainjob"


def step_prefix(
    *, split_sha256: str, recipe_json: str, role: str, seed: int, code_version: str
) -> str:
    """The store prefix of one train step's multi-node exchange, from the step's identity.

    The identity is the step's cache-key inputs (split hash, recipe, role, seed, code version),
    so two different steps never share a prefix and a retried step finds its own.
    """
    identity = json.dumps(
        {
            "code_version": code_version,
            "recipe": recipe_json,
            "role": role,
            "seed": seed,
            "split_sha256": split_sha256,
        },
        sort_keys=True,
    )
    return f"{STEP_PREFIX}/{hashlib.sha256(identity.encode('utf-8')).hexdigest()[:32]}"


def train_across_nodes(
    run: Callable[[str, list[str]], None],
    *,
    store: ObjectStore,
    manifest_path: Path | str,
    recipe_json: str,
    role: Role,
    seed: int,
    out_path: Path,
    expected_manifest_sha256: str,
    experiment: str | None,
    code_version: str,
) -> TrainedEncoder:
    """Train one encoder on processes that share no disk with this one; fetch rank 0's result.

    Stages the manifest and the recipe in ``store`` under the step's prefix
    (:func:`step_prefix`) and a fresh attempt below it (a retry never reads an earlier
    attempt's result), has ``run(attempt, args)`` run :data:`TRAIN_MODULE` with ``args`` on
    every node and wait for it (a Kubeflow Trainer TrainJob:
    :func:`sslmem.pipelines.trainjob.train_on_nodes`), then reads rank 0's checkpoint back
    (:func:`collect_result`).

    Raises:
        TrainingError: ``run``'s failure, or no (or a foreign) result.

    """
    prefix = step_prefix(
        split_sha256=expected_manifest_sha256,
        recipe_json=recipe_json,
        role=role,
        seed=seed,
        code_version=code_version,
    )
    attempt = uuid.uuid4().hex[:8]
    base = f"{prefix}/{attempt}"
    store.put_file(f"{base}/manifest.json", manifest_path)
    store.put_bytes(f"{base}/recipe.json", recipe_json.encode("utf-8"))
    args = launch_args(
        manifest_path=store.uri(f"{base}/manifest.json"),
        recipe_file=store.uri(f"{base}/recipe.json"),
        role=role,
        seed=seed,
        out_path=store.uri(f"{base}/encoder.safetensors"),
        result_file=store.uri(f"{base}/result.json"),
        expected_manifest_sha256=expected_manifest_sha256,
        experiment=experiment,
        code_version=code_version,
    )
    run(attempt, args)
    return collect_result(store, base, out_path)


def collect_result(store: ObjectStore, prefix: str, out_path: Path) -> TrainedEncoder:
    """Read rank 0's result and checkpoint from ``prefix`` in ``store`` into ``out_path``.

    Returns:
        Rank 0's :class:`~sslmem.workflow.TrainedEncoder`, its checkpoint at ``out_path``.

    Raises:
        TrainingError: No result (rank 0 never finished), or the checkpoint's SHA-256 is not
            the one rank 0 reported (a partial or foreign object).

    """
    from sslmem.models.checkpoint import file_sha256

    result_key, checkpoint_key = f"{prefix}/result.json", f"{prefix}/encoder.safetensors"
    if not store.exists(result_key):
        raise TrainingError(
            f"the TrainJob completed without rank 0's result {store.uri(result_key)}",
            "see the logs of its rank-0 pod; every node needs write access to the store",
        )
    fields = json.loads(store.get_bytes(result_key).decode("utf-8"))
    store.get_file(checkpoint_key, out_path)
    got = file_sha256(out_path)
    if got != fields["sha256"]:
        out_path.unlink(missing_ok=True)
        raise TrainingError(
            f"checkpoint {store.uri(checkpoint_key)} has SHA-256 {got}, rank 0 reported "
            f"{fields['sha256']}",
            "run the step again (the object was replaced or cut short)",
        )
    fields["checkpoint"] = out_path
    return TrainedEncoder(**fields)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__)
    parser.add_argument("--manifest", required=True)
    # Paths or store URIs (a URI is kept as text: Path() would fold its "//").
    parser.add_argument("--recipe", required=True, help="file or store URI of the recipe JSON")
    parser.add_argument("--role", required=True, choices=_ROLES)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True, help="checkpoint file or store URI (rank 0)")
    parser.add_argument("--result", required=True, help="rank 0's JSON result: file or URI")
    parser.add_argument("--expected-manifest-sha256")
    parser.add_argument("--experiment")
    parser.add_argument("--device")
    parser.add_argument("--code-version", default="")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """One process of :func:`train_role_processes` (run by torchrun, never by hand)."""
    from sslmem.runtime import apply_process_settings
    from sslmem.training.distributed import context_from_env

    args = _parser().parse_args(argv)
    apply_process_settings()
    role: Role = "candidate" if args.role == "candidate" else "reference"
    with tempfile.TemporaryDirectory(prefix="sslmem-rank-") as tmp:
        # A store URI: train into a local file, rank 0 uploads it (nodes share no disk).
        local_out = Path(tmp) / "encoder.safetensors" if is_uri(args.out) else Path(args.out)
        trained = train_role(
            manifest_path=args.manifest,
            recipe=_read_text(args.recipe),
            role=role,
            seed=args.seed,
            out_path=local_out,
            expected_manifest_sha256=args.expected_manifest_sha256,
            experiment=args.experiment,
            device=args.device,
            code_version=args.code_version,
        )
        if context_from_env().is_main:
            if is_uri(args.out):
                write_bytes(args.out, local_out.read_bytes())
            result = {**asdict(trained), "checkpoint": str(args.out)}
            payload = json.dumps(result).encode("utf-8")
            if is_uri(args.result):
                write_bytes(args.result, payload)
            else:
                atomic_write_bytes(Path(args.result), payload)
    return 0


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` is an object-store URI (``s3://``, ``file://``) rather than a path."""
    return "://" in str(location)


def _read_text(location: str) -> str:
    if is_uri(location):
        return read_bytes(location).decode("utf-8")
    return Path(location).read_text(encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
