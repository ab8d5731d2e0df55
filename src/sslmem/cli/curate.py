"""``sslmem curate``: the curation study of a scored candidate (Wang et al., ICLR 2024, Sec. 5).

Removes the k most memorised, k random and k least memorised candidates, retrains the candidate
encoder without them over several seeds, evaluates it downstream and re-scores the remaining
candidates against the same reference. This module parses and prints; the work is
:func:`sslmem.curation.curate.curate`, or with ``--local-pipeline`` the curation pipeline
through KFP's local runner (:func:`sslmem.pipelines.local.run_curation_locally`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sslmem.cli.common import (
    add_config_arguments,
    add_device_argument,
    device_name,
    experiment_config,
    path_arg,
)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _words(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem curate``."""
    parser.add_argument(
        "--scores",
        type=path_arg,
        metavar="DIR",
        help="the candidate's score report directory (sslmem score --out, or run's score/)",
    )
    parser.add_argument(
        "--split",
        type=str,
        metavar="MANIFEST",
        help="the split manifest the candidate was trained and scored on",
    )
    parser.add_argument(
        "--reference",
        type=path_arg,
        metavar="CKPT",
        help="the reference checkpoint the report was scored against",
    )
    parser.add_argument(
        "--version",
        metavar="MODEL_URI",
        help="instead of --scores/--split/--reference: a registered, scored candidate version "
        "(models:/NAME/N or models:/NAME@alias); its score report, split and reference are "
        "read from MLflow (tracking URI: SSLMEM_MLFLOW_TRACKING_URI or MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--out",
        type=path_arg,
        required=True,
        metavar="DIR",
        help="study directory (an interrupted study resumes here); with --local-pipeline the "
        "local pipeline's output directory (as sslmem run's --out: MLflow store, cache, logs)",
    )
    parser.add_argument(
        "--fractions",
        type=_floats,
        default=(0.1, 0.3),
        help="removal sizes as fractions of the scored candidates (default 0.1,0.3)",
    )
    parser.add_argument(
        "--strategies",
        type=_words,
        default=("top", "random", "bottom"),
        help="removals to compare (default top,random,bottom)",
    )
    parser.add_argument(
        "--seeds",
        type=_ints,
        default=(0, 1, 2),
        help="training seeds of every retrain (default 0,1,2)",
    )
    parser.add_argument(
        "--random-draws", type=int, default=2, help="random subsets per size and seed (default 2)"
    )
    parser.add_argument("--draw-seed", type=int, default=0, help="seed of the random subsets")
    parser.add_argument(
        "--budget",
        choices=("steps", "epochs"),
        default="steps",
        help="hold the optimiser steps (default: a smaller set trains more epochs) or the epochs",
    )
    parser.add_argument(
        "--exposure-quantile",
        type=float,
        default=0.9,
        help="exposure threshold as a quantile of the full encoder's SSLMem",
    )
    parser.add_argument(
        "--atypicality-k",
        type=int,
        default=10,
        help="neighbours of the kNN-distance atypicality (default 10)",
    )
    parser.add_argument(
        "--adopt",
        type=path_arg,
        nargs="+",
        default=(),
        metavar="DIR",
        help="finished retrain directories to reuse instead of retraining (e.g. another "
        "study's retrains/*/ of the same split, scores and recipe, to add seeds or sizes)",
    )
    parser.add_argument(
        "--experiment",
        help="also log the study to this MLflow experiment: a parent run, a nested run per "
        "retrain (tracking URI: SSLMEM_MLFLOW_TRACKING_URI or MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--local-pipeline",
        action="store_true",
        help="run the study as the Kubeflow curation pipeline through KFP's local runner (one "
        "task per retrain, cached; MLflow in OUT/mlflow.db, experiment --experiment or "
        "sslmem-curation), as sslmem run does the memorisation pipeline",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="with --local-pipeline: re-run every retrain (default: reuse the cached ones)",
    )
    add_config_arguments(parser)
    add_device_argument(parser)


#: The MLflow experiment of a local pipeline run without --experiment.
PIPELINE_EXPERIMENT = "sslmem-curation"


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the study and print where its report is."""
    from sslmem.config import RuntimeSettings
    from sslmem.curation.curate import curate
    from sslmem.curation.plan import Retrain, study_plan

    settings = RuntimeSettings()
    plan = study_plan(
        fractions=args.fractions,
        strategies=args.strategies,
        seeds=args.seeds,
        random_draws=args.random_draws,
        draw_seed=args.draw_seed,
        budget=args.budget,
        exposure_quantile=args.exposure_quantile,
        atypicality_k=args.atypicality_k,
    )
    if args.local_pipeline:
        return _run_pipeline(args, plan.model_dump(mode="json"), device_name(args, settings))

    def announce(position: int, total: int, retrain: Retrain) -> None:
        print(f"[{position + 1}/{total}] retraining {retrain.name}", file=sys.stderr, flush=True)

    outcome = curate(
        report_dir=args.scores,
        manifest_path=args.split,
        reference_path=args.reference,
        version=args.version,
        config=experiment_config(args),
        plan=plan,
        out_dir=args.out,
        device=device_name(args, settings),
        settings=settings,
        experiment=args.experiment,
        on_retrain=announce,
        done_dirs=args.adopt,
    )
    result = outcome.result
    print(result.files["report"].read_text())
    print(
        f"report: {result.files['report']} ({result.trained} retrains run now, "
        f"{len(result.rows) - result.trained} found done)"
    )
    return 0


def _local_path(text: str, flag: str) -> str:
    """An input of the local pipeline as the absolute path its importer takes."""
    from sslmem.errors import ConfigError

    if "://" in text and not text.startswith("file://"):
        raise ConfigError(
            f"{flag} {text}: the local pipeline imports local files only",
            "download it first, or run without --local-pipeline (which reads store URIs)",
        )
    path = Path(text.removeprefix("file://")).expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"{flag} {text}: no such file or directory", "check the path")
    return str(path)


def _run_pipeline(args: argparse.Namespace, plan: dict[str, Any], device: str) -> int:
    """The study through the curation pipeline on KFP's local runner; print the report."""
    from sslmem.config_text import config_to_yaml
    from sslmem.curation.report import REPORT_FILE
    from sslmem.errors import ConfigError
    from sslmem.pipelines.local import run_curation_locally

    if args.adopt:
        raise ConfigError(
            "--adopt does not apply to --local-pipeline",
            "the pipeline reuses finished retrains from its cache: rerun into the same --out",
        )
    if args.version is not None or None in (args.scores, args.split, args.reference):
        raise ConfigError(
            "--local-pipeline takes the score report, split and reference as local files",
            "pass --scores, --split and --reference (not --version)",
        )
    arguments: dict[str, object] = {
        "scores_uri": _local_path(str(args.scores), "--scores"),
        "split_uri": _local_path(str(args.split), "--split"),
        "reference_uri": _local_path(str(args.reference), "--reference"),
        "config_yaml": config_to_yaml(experiment_config(args)),
        **{key: list(value) if isinstance(value, tuple) else value for key, value in plan.items()},
        "mlflow_experiment": args.experiment or PIPELINE_EXPERIMENT,
    }
    print(f"running the curation pipeline locally into {args.out.resolve()} ...", flush=True)
    result = run_curation_locally(
        arguments,
        args.out,
        device=device,
        cache=not args.no_cache,
        progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
    )
    if result.study_dir is not None:
        print((result.study_dir / REPORT_FILE).read_text())
        print(f"study: {result.study_dir}")
    if result.error is not None:
        print(f"\nFAILED: {result.error}")
    print(f"task logs: {result.log_file}")
    print(f"finished in {result.seconds:.0f} s; MLflow store: {result.tracking_uri}")
    return 0 if result.ok else 1
