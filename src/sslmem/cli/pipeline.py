r"""``sslmem pipeline``: compile the Kubeflow pipeline, or submit a run to a KFP server.

Examples::

    sslmem pipeline compile -o memorization.yaml --image ghcr.io/org/sslmem:0.1.0 \\
        --platform deploy/platform.example.yaml
    sslmem pipeline compile --pipeline curation --parallelism 4 -o curation.yaml
    SSLMEM_KFP_TOKEN=... sslmem pipeline submit --host http://localhost:8080 \\
        --experiment sslmem --config recipe.yaml --set training.epochs=200 \\
        --param candidate_seeds=[0,1,2]

The bearer token comes from ``--token``, ``--token-file FILE`` or ``SSLMEM_KFP_TOKEN`` (first
one given wins). ``--token`` leaves the token in the shell history and the process list:
prefer the file or the variable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sslmem.cli.common import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sslmem pipeline compile`` and ``sslmem pipeline submit``."""
    sub = parser.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)

    def common(action: argparse.ArgumentParser) -> None:
        action.add_argument(
            "--image",
            help="runtime image of every step (default ghcr.io/sslmem/sslmem:<sslmem version>, "
            "built from deploy/Dockerfile)",
        )
        action.add_argument(
            "--platform", type=Path, help="platform YAML (GPU, tolerations, secrets, resources)"
        )

    compile_parser = sub.add_parser(
        "compile", help="compile the pipeline to YAML (deterministic: same inputs, same bytes)"
    )
    compile_parser.add_argument("-o", "--output", type=Path, required=True, help="output YAML")
    compile_parser.add_argument(
        "--pipeline",
        choices=("memorization", "curation"),
        default="memorization",
        help="which pipeline: memorization (split, train, evaluate, register, score; default) "
        "or curation (a curation study of a scored candidate)",
    )
    compile_parser.add_argument(
        "--parallelism",
        type=int,
        default=None,
        help="curation: retrains running at once (default 8; 0: no limit)",
    )
    common(compile_parser)
    compile_parser.set_defaults(_action=_compile)

    submit = sub.add_parser("submit", help="validate the parameters and submit a run to KFP")
    submit.add_argument("--host", required=True, help="KFP API endpoint, http(s)://...")
    submit.add_argument("--experiment", required=True, help="KFP experiment name")
    submit.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline parameter, e.g. --param epochs=5 (repeatable; wins over --config/--set)",
    )
    add_config_arguments(submit)
    token = submit.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        help="bearer token for the KFP API (lands in shell history: prefer --token-file or "
        "SSLMEM_KFP_TOKEN)",
    )
    token.add_argument(
        "--token-file", type=Path, help="file holding the bearer token (default: SSLMEM_KFP_TOKEN)"
    )
    submit.add_argument("--namespace", help="Kubernetes namespace (multi-user KFP)")
    submit.add_argument("--run-name", help="run name")
    submit.add_argument(
        "--no-cache", action="store_true", help="disable caching for every task of this run"
    )
    submit.add_argument(
        "--connect-attempts", type=int, default=3, help="tries to reach the host (default 3)"
    )
    submit.add_argument(
        "--connect-timeout", type=float, default=5.0, help="seconds per try (default 5)"
    )
    submit.add_argument(
        "--dry-run", action="store_true", help="validate and print the parameters only"
    )
    common(submit)
    submit.set_defaults(_action=_submit)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the action."""
    from sslmem.components import DEFAULT_IMAGE

    args.image = args.image or DEFAULT_IMAGE
    code: int = args._action(args)
    return code


def _compile(args: argparse.Namespace) -> int:
    from sslmem.errors import ConfigError
    from sslmem.outputs import check_output_file
    from sslmem.pipelines import curation, memorization
    from sslmem.pipelines.platform import load_platform_config

    if args.parallelism is not None and args.pipeline != "curation":
        raise ConfigError(
            "--parallelism applies to --pipeline curation only",
            "the memorisation pipeline's fan-outs follow its seeds and shards",
        )
    check_output_file(args.output, what="compiled pipeline")
    platform = load_platform_config(args.platform)
    if args.pipeline == "curation":
        parallelism = curation.DEFAULT_PARALLELISM if args.parallelism is None else args.parallelism
        path = curation.compile_pipeline(
            args.output, image=args.image, platform=platform, parallelism=parallelism
        )
    else:
        path = memorization.compile_pipeline(args.output, image=args.image, platform=platform)
    print(f"wrote {path} ({args.pipeline} pipeline, image {args.image})")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from sslmem.components import check_image
    from sslmem.pipeline_params import (
        PipelineParams,
        build_params,
        load_run_config,
        parse_param_assignments,
    )
    from sslmem.pipelines.platform import load_platform_config

    base = (
        load_run_config(args.config, list(args.overrides))
        if args.config is not None or args.overrides
        else PipelineParams()
    )
    params = build_params({**base.arguments(), **parse_param_assignments(list(args.params))})
    params.resolve()  # every field checked before anything is contacted
    check_image(args.image)
    platform = load_platform_config(args.platform)
    if args.dry_run:
        print(json.dumps(params.arguments(), indent=2, sort_keys=True))
        return 0

    from sslmem.config import RuntimeSettings
    from sslmem.pipelines.submit import RetryBounds, resolve_token, submit_pipeline

    env_token = RuntimeSettings().kfp_token
    token = resolve_token(
        args.token, args.token_file, env_token.get_secret_value() if env_token else None
    )
    submitted = submit_pipeline(
        params,
        host=args.host,
        experiment=args.experiment,
        image=args.image,
        platform=platform,
        token=token,
        namespace=args.namespace,
        run_name=args.run_name,
        enable_caching=False if args.no_cache else None,
        bounds=RetryBounds(attempts=args.connect_attempts, timeout_s=args.connect_timeout),
    )
    print(f"submitted run {submitted.run_id}: {submitted.url}")
    return 0
