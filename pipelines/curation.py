"""The curation pipeline: a curation study of a scored candidate (composition only).

The study of :mod:`sslmem.curation` (issue 18) as a Kubeflow pipeline: its inputs are what a
run of the memorisation pipeline (``sslmem run``, or :mod:`.memorization` on a cluster) leaves
behind -- the candidate's score report directory (``score-memorization``'s ``scores``), the split
manifest (``prepare-split``'s ``split``) and the reference encoder (``train-encoder``'s
``model`` of the reference role) -- imported by their artifact URIs, plus the candidate's recipe
and the study's plan.

Graph::

    identify-code → resolve-config ┐
    importers: scores, split, reference → plan-curation (the retrains' names)
      → retrain-all: ParallelFor(names, parallelism) curation-retrain (one directory each)
      → curation-study (Collected retrains: adopt, analyse, report, log to MLflow)

Caching: resolve, plan and every retrain are cacheable and keyed on the code version (from
``identify-code``, never cached) and their inputs -- the imported artifacts, the full config,
the plan and the retrain's name -- so a rerun with one more seed or fraction trains only the new
retrains, and the split, reference and score report are never recomputed (they are imported).
The study step logs to MLflow and is never cached. A study costs
``len(seeds) * (1 + len(fractions) * (n_top + n_bottom + random_draws))`` retrains.

Parameters are those of :func:`build_pipeline`'s pipeline (see ``docs/pipeline.md``); the
parallelism of the fan-out is a compile-time setting (KFP takes it as a constant). Platform
settings come from :mod:`sslmem.pipelines.platform`: retrains take the ``train`` profile (GPU),
the plan the ``prepare`` one, the study the ``score`` one.
"""

from pathlib import Path
from typing import Any

from kfp.dsl import Artifact, Dataset, Input, Model

from sslmem.components import DEFAULT_IMAGE, build_components
from sslmem.pipelines.platform import PlatformConfig, apply_platform
from sslmem.provenance import IMAGE_DIGEST_ENV, image_digest

PIPELINE_NAME = "sslmem-curation"
PIPELINE_DESCRIPTION = (
    "Curation study of a scored candidate (Wang et al. 2024, Sec. 5): retrain it without its "
    "most memorised, random or least memorised candidates over several seeds, evaluate "
    "downstream, re-score against the same reference, report and log to MLflow."
)
#: Retrains that run at once on a cluster unless ``parallelism`` says otherwise (0: no limit).
DEFAULT_PARALLELISM = 8


def build_pipeline(
    *,
    image: str = DEFAULT_IMAGE,
    platform: PlatformConfig | None = None,
    caching: bool = True,
    parallelism: int = DEFAULT_PARALLELISM,
) -> Any:
    """Build the curation pipeline for a runtime image and platform config.

    Args:
        image: Container image of every step (built from ``deploy/Dockerfile``).
        platform: Kubernetes settings (default :class:`PlatformConfig`); ignored by the local
            runner.
        caching: ``False`` turns caching off for every task, nested ones included.
        parallelism: Retrains running at once (``0``: as many as the cluster schedules).

    Returns:
        The pipeline (a KFP graph component).

    Raises:
        ConfigError: Invalid image reference, or a negative ``parallelism``.

    """
    from kfp import dsl

    from sslmem.errors import ConfigError

    if parallelism < 0:
        raise ConfigError(
            f"--parallelism must be 0 (no limit) or more, got {parallelism}",
            "pass the number of retrains to run at once",
        )
    ops = build_components(image)
    settings = platform if platform is not None else PlatformConfig()
    digest = image_digest(image)

    def cacheable(task: Any) -> None:
        if not caching:
            task.set_caching_options(False)

    @dsl.pipeline(name="retrain-all")  # type: ignore[untyped-decorator]
    def retrain_all(
        scores: Input[Artifact],
        split: Input[Dataset],
        reference: Input[Model],
        config_json: str,
        plan_json: str,
        names: list,  # type: ignore[type-arg]
        code_version: str,
    ) -> list[Artifact]:
        """Every retrain of the plan, in parallel; return their directories."""
        with dsl.ParallelFor(names, parallelism=parallelism) as name:
            retrain = ops.curation_retrain(
                scores=scores,
                split=split,
                reference=reference,
                config_json=config_json,
                plan_json=plan_json,
                name=name,
                code_version=code_version,
            )
            retrain.set_display_name("curation-retrain")
            cacheable(retrain)
            apply_platform(retrain, "train", settings, image=image)
        return dsl.Collected(retrain.outputs["retrain"])  # type: ignore[no-any-return]

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)  # type: ignore[untyped-decorator]
    def curation(
        scores_uri: str,
        split_uri: str,
        reference_uri: str,
        config_yaml: str = "",
        fractions: list[float] = [0.1, 0.3],  # noqa: B006 - KFP needs a literal default
        strategies: list[str] = ["top", "random", "bottom"],  # noqa: B006
        seeds: list[int] = [0, 1, 2],  # noqa: B006
        random_draws: int = 2,
        draw_seed: int = 0,
        budget: str = "steps",
        exposure_quantile: float = 0.9,
        atypicality_k: int = 10,
        mlflow_experiment: str = "sslmem-curation",
    ) -> None:
        # Never cached: it must run in every pipeline run to see the code of this image.
        identify = ops.identify_code()
        identify.set_display_name("identify-code").set_caching_options(False)
        apply_platform(identify, "prepare", settings)
        if digest is not None:
            identify.set_env_variable(IMAGE_DIGEST_ENV, digest)
        code_version = identify.output
        resolve = ops.resolve_config(config_yaml=config_yaml, code_version=code_version)
        resolve.set_display_name("resolve-config")
        cacheable(resolve)
        apply_platform(resolve, "prepare", settings)

        imported = {}
        for key, uri, kind in (
            ("scores", scores_uri, Artifact),
            ("split", split_uri, Dataset),
            ("reference", reference_uri, Model),
        ):
            importer = dsl.importer(artifact_uri=uri, artifact_class=kind, reimport=False)
            importer.set_display_name(f"import-{key}")
            imported[key] = importer.output

        plan = ops.plan_curation(
            scores=imported["scores"],
            fractions=fractions,
            strategies=strategies,
            seeds=seeds,
            random_draws=random_draws,
            draw_seed=draw_seed,
            budget=budget,
            exposure_quantile=exposure_quantile,
            atypicality_k=atypicality_k,
            code_version=code_version,
        )
        plan.set_display_name("plan-curation")
        cacheable(plan)
        apply_platform(plan, "prepare", settings)

        retrains = retrain_all(
            **imported,
            config_json=resolve.outputs["config_json"],
            plan_json=plan.outputs["plan_json"],
            names=plan.outputs["names"],
            code_version=code_version,
        ).set_display_name("retrain-all")
        cacheable(retrains)

        study = ops.curation_study(
            **imported,
            retrains=retrains.output,
            config_json=resolve.outputs["config_json"],
            plan_json=plan.outputs["plan_json"],
            mlflow_experiment=mlflow_experiment,
        )
        study.set_display_name("curation-study").set_caching_options(False)
        apply_platform(study, "score", settings)

    return curation


def compile_pipeline(
    path: Path | str,
    *,
    image: str = DEFAULT_IMAGE,
    platform: PlatformConfig | None = None,
    caching: bool = True,
    parallelism: int = DEFAULT_PARALLELISM,
) -> Path:
    """Compile the curation pipeline to a YAML file (same inputs, same bytes).

    Raises:
        ConfigError: Invalid image reference or parallelism.

    """
    from kfp import compiler

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(
        image=image, platform=platform, caching=caching, parallelism=parallelism
    )
    compiler.Compiler().compile(pipeline, str(target))
    return target
