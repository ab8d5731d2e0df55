"""``sslmem run``: the whole job on this machine, one command.

The Kubeflow pipeline runs through KFP's local runner, with a local MLflow store, the bundled
real images and the CPU.

Examples::

    sslmem run                                   # the bundled CPU recipe
    sslmem run --config recipe.yaml --set training.epochs=5 --set pipeline.candidate_seeds=[0,1]

Without ``--config`` the bundled CPU recipe (``sslmem/recipes/bundled-cpu.yaml``) is the base.
Every pipeline parameter is reachable: experiment-config fields as ``section.field``, the
pipeline-only ones (seeds, alpha, names) as ``pipeline.<name>``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sslmem.cli.common import add_config_arguments, path_arg

if TYPE_CHECKING:
    from sslmem.pipelines.local import LocalRun
    from sslmem.workflow.champion import ChampionJudgement

DEFAULT_OUT = Path("sslmem-out")
#: The embedded default recipe (bundled images, CPU budget; see docs/training.md).
DEFAULT_RECIPE_NAME = "bundled-cpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem run``."""
    add_config_arguments(parser)
    parser.epilog = (
        "Without --config the bundled CPU recipe (sslmem/recipes/bundled-cpu.yaml) is the base. "
        "--set reaches every pipeline parameter: config fields as section.field, the "
        "pipeline-only ones as pipeline.<name> (candidate_seeds, reference_seeds, alpha, "
        "mlflow_experiment, model_name, reference_model_name)."
    )
    parser.add_argument(
        "--out",
        type=path_arg,
        default=DEFAULT_OUT,
        help=f"output directory (default ./{DEFAULT_OUT})",
    )
    parser.add_argument(
        "--device", default=None, help="device of the tasks (default SSLMEM_DEVICE, else cpu)"
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="re-run every step (default: reuse the split, encoders and evaluations of an "
        "earlier run with the same inputs and the same code version)",
    )


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Validate, run the pipeline locally, print the summary and how to open MLflow."""
    return run_once(args)[0]


def run_once(args: argparse.Namespace, extra_overrides: Sequence[str] = ()) -> tuple[int, LocalRun]:
    """One ``sslmem run`` (with ``extra_overrides`` after the user's): exit code and result."""
    from sslmem.config import RECIPES_DIR, RuntimeSettings
    from sslmem.outputs import check_output_dir
    from sslmem.pipeline_params import load_run_config
    from sslmem.pipelines.local import run_locally

    config = args.config
    if config is None:  # the shipped recipe itself, never a local file of the same name
        default = RECIPES_DIR / f"{DEFAULT_RECIPE_NAME}.yaml"
        config = default if default.is_file() else None
    params = load_run_config(config, [*args.overrides, *extra_overrides])
    check_output_dir(args.out)  # before the pipeline starts
    settings = RuntimeSettings()
    # The embedded default runs on the CPU unless --device or SSLMEM_DEVICE says otherwise.
    device = args.device or (settings.device if "device" in settings.model_fields_set else "cpu")
    print(f"running the memorisation pipeline locally into {args.out.resolve()} ...", flush=True)
    result = run_locally(
        params, args.out, device=device, cache=not args.no_cache, progress=_progress
    )
    print()
    if result.result is not None:
        print(result.result.format())
    if result.champion is not None:
        print()
        print(format_champion(result.champion))
    if result.error is not None:
        print(f"\nFAILED: {result.error}")
        print("(the exit handler marked the run's unscored model versions as failed)")
    print(f"\ntask logs: {result.log_file}")
    print(f"finished in {result.seconds:.0f} s; open the results in MLflow with:")
    print(f"  {result.mlflow_ui_command()}")
    print(f"then browse {result.mlflow_ui_url()}")
    for line in _version_links(result, UI_BASE):
        print(line)
    return (0 if result.ok else 1), result


#: Where the printed ``mlflow ui`` command serves the UI.
UI_BASE = "http://127.0.0.1:5000"


def format_champion(champion: ChampionJudgement) -> str:
    """The judgement of the run's version against the champion, for the terminal."""
    judgement = champion.judgement
    if champion.became_champion:
        return (
            f"version {champion.version} is now the champion (alias 'champion'): the next "
            "`sslmem run` into this directory is judged against it"
        )
    if judgement is None:
        return f"version {champion.version} was not judged (the champion is not scored)"
    if champion.champion == champion.version:
        return f"version {champion.version} is the champion"
    lines = [
        f"judgement against the champion (version {champion.champion}): "
        f"{judgement.outcome.value.upper()}"
    ]
    lines += [f"  {reason}" for reason in judgement.reasons]
    accuracy = judgement.accuracy
    if accuracy is not None:
        for label, this, other in (
            ("kNN", accuracy.knn_candidate, accuracy.knn_champion),
            ("linear probe", accuracy.linear_probe_candidate, accuracy.linear_probe_champion),
        ):
            if this is not None and other is not None:
                lines.append(
                    f"  {label} accuracy {100 * this:.1f}% vs {100 * other:.1f}% "
                    f"({100 * (this - other):+.1f} pt)"
                )
    return "\n".join(lines)


def _version_links(result: LocalRun, base: str) -> list[str]:
    """Links to this run's version page and the Compare view with the champion."""
    from sslmem.errors import SSLMemError
    from sslmem.tracking.description import compare_versions_link, version_link
    from sslmem.workflow.champion import source_runs

    if result.result is None:
        return []
    name, version = result.result.candidate.name, result.result.candidate.version
    lines = [f"version page: {base}/{version_link(name, version)}"]
    champion = result.champion.champion if result.champion is not None else None
    if champion is not None and champion != version:
        try:
            runs = source_runs(name, sorted({champion, version}, key=int))
        except SSLMemError:
            return lines
        lines.append(f"champion:     {base}/{version_link(name, champion)}")
        lines.append(f"compare:      {base}/{compare_versions_link(name, runs)}")
    return lines
