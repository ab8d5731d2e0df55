"""The memorisation pipeline: split, train, evaluate, register, score (composition only).

Every step is a component over :mod:`sslmem.workflow`; candidate f and reference g train per
seed, in parallel.

Graph (inside one ``dsl.ExitHandler`` whose exit task is ``finalize-run``)::

    identify-code → resolve-config → prepare-split
      ├─ train-candidates: ParallelFor(candidate_seeds) train-encoder → evaluate-encoder
      └─ train-references: ParallelFor(reference_seeds) train-encoder → evaluate-encoder
      → register-model (Collected encoders + evaluations)
      → score-memorization (all candidates vs all references, resolved version), or with
        shard_size > 0: plan-score-shards → ParallelFor(ranges) score-shard
        → merge-score-shards (the same outputs, statistics and tags)
    finalize-run: marks every version of the run that was not scored as failed

(The per-role loops live in a sub-pipeline so that task outputs reach the loop body as
sub-pipeline inputs; this also works around a ``kfp.local`` bug with task-output parameters
inside ``ParallelFor``.)

Failure handling: the candidate version is registered with ``sslmem.status=training`` and only
the scoring step sets ``scored`` (after every summary tag). If any step fails, the exit task
marks the run's unscored versions ``failed`` with the reason; if even that cannot reach MLflow,
they stay ``training`` -- never ``scored``.

Caching: resolve, prepare, train and evaluate are cacheable, each keyed on the slice of the
config it depends on: the split on ``data``+``split``; a training task on the split artifact,
the split hash and the full training recipe (plus role and seed), so an encoder is reused only
when all match -- and a change of scoring settings re-scores without re-training. Every cached
step also takes the code version as an input (computed by ``identify-code``, the first step,
never cached: package version, digest of the installed sources, image digest when known; see
:mod:`sslmem.provenance`), so a code change never reuses work of older code.
Registration, scoring and the exit task never use the cache, and scoring takes the resolved
candidate version as an input, so a score always belongs to the version it tags.

Parameters are those of :class:`sslmem.pipeline_params.PipelineParams` (same names, types and
defaults; a test keeps them in sync). Platform settings come from
:mod:`sslmem.pipelines.platform`.
"""

from pathlib import Path
from typing import Any, NamedTuple

from kfp.dsl import Dataset, Input, Metrics, Model

from sslmem.components import DEFAULT_IMAGE, build_components
from sslmem.pipelines.platform import PlatformConfig, apply_platform
from sslmem.provenance import IMAGE_DIGEST_ENV, image_digest

PIPELINE_NAME = "sslmem-memorization"
PIPELINE_DESCRIPTION = (
    "Train candidate and reference SSL encoders on an SSLMem split, evaluate them downstream, "
    "register the candidate in MLflow and score its memorisation (SSLMem, Wang et al. 2024)."
)


class RoleOutputs(NamedTuple):
    """Outputs of the per-role sub-pipeline: every seed's encoder and evaluation."""

    models: list[Model]
    metrics: list[Metrics]


def build_pipeline(
    *, image: str = DEFAULT_IMAGE, platform: PlatformConfig | None = None, caching: bool = True
) -> Any:
    """Build the pipeline for a runtime image and platform config.

    Args:
        image: Container image of every step (built from ``deploy/Dockerfile``).
        platform: Kubernetes settings (default :class:`PlatformConfig`); ignored by the local
            runner.
        caching: ``False`` turns caching off for every task, nested ones included (KFP's
            ``Client(enable_caching=False)`` reaches only the top-level tasks).

    Returns:
        The pipeline (a KFP graph component): compile it, submit it, or call it under
        ``kfp.local``.

    Raises:
        ConfigError: Invalid image reference.

    """
    from kfp import dsl

    ops = build_components(image)
    settings = platform if platform is not None else PlatformConfig()
    digest = image_digest(image)  # an image pinned by digest names its code exactly

    def cacheable(task: Any) -> None:
        if not caching:
            task.set_caching_options(False)

    @dsl.pipeline(name="train-and-evaluate")  # type: ignore[untyped-decorator]
    def train_and_evaluate(
        split: Input[Dataset],
        split_sha256: str,
        recipe_json: str,
        evaluation_json: str,
        role: str,
        seeds: list[int],
        mlflow_experiment: str,
        code_version: str,
    ) -> RoleOutputs:
        """Train and evaluate one encoder per seed, in parallel; return them all."""
        with dsl.ParallelFor(seeds) as seed:
            train = ops.train_encoder(
                split=split,
                split_sha256=split_sha256,
                recipe_json=recipe_json,
                role=role,
                seed=seed,
                mlflow_experiment=mlflow_experiment,
                code_version=code_version,
            )
            train.set_display_name("train-encoder")
            cacheable(train)
            apply_platform(train, "train", settings, image=image)
            evaluate = ops.evaluate_encoder(
                model=train.outputs["model"],
                evaluation_json=evaluation_json,
                code_version=code_version,
            )
            evaluate.set_display_name("evaluate-encoder")
            cacheable(evaluate)
            apply_platform(evaluate, "evaluate", settings)
        return RoleOutputs(
            models=dsl.Collected(train.outputs["model"]),
            metrics=dsl.Collected(evaluate.outputs["metrics"]),
        )

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)  # type: ignore[untyped-decorator]
    def memorization(
        config_yaml: str = "",
        dataset: str = "",
        data_root: str = "",
        split_shared: float = 0.0,
        split_candidate: float = 0.0,
        split_independent: float = 0.0,
        split_extra: float = 0.0,
        split_seed: int = -1,
        pool_size: int = 0,
        method: str = "",
        arch: str = "",
        epochs: int = 0,
        batch_size: int = 0,
        lr: float = 0.0,
        views: int = 0,
        layer: str = "",
        candidate_seeds: list[int] = [0],  # noqa: B006 - KFP needs a literal default
        reference_seeds: list[int] = [0],  # noqa: B006
        alpha: float = 0.01,
        shard_size: int = 0,
        mlflow_experiment: str = "sslmem",
        model_name: str = "sslmem-encoder",
        reference_model_name: str = "",
    ) -> None:
        finalize = ops.finalize_run(
            model_name=model_name,
            reference_model_name=reference_model_name,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        finalize.set_display_name("finalize-run").set_caching_options(False)
        apply_platform(finalize, "finalize", settings)

        with dsl.ExitHandler(finalize, name="sslmem-memorization-body"):
            # Never cached: it must run in every pipeline run to see the code of this image.
            identify = ops.identify_code()
            identify.set_display_name("identify-code").set_caching_options(False)
            apply_platform(identify, "prepare", settings)
            if digest is not None:
                identify.set_env_variable(IMAGE_DIGEST_ENV, digest)
            code_version = identify.output
            resolve = ops.resolve_config(
                config_yaml=config_yaml,
                dataset=dataset,
                data_root=data_root,
                split_shared=split_shared,
                split_candidate=split_candidate,
                split_independent=split_independent,
                split_extra=split_extra,
                split_seed=split_seed,
                pool_size=pool_size,
                method=method,
                arch=arch,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                views=views,
                layer=layer,
                code_version=code_version,
            )
            resolve.set_display_name("resolve-config")
            cacheable(resolve)
            apply_platform(resolve, "prepare", settings)
            prepare = ops.prepare_split(
                split_json=resolve.outputs["split_json"], code_version=code_version
            )
            prepare.set_display_name("prepare-split")
            cacheable(prepare)
            apply_platform(prepare, "prepare", settings)

            roles = {}
            for role, seeds in (("candidate", candidate_seeds), ("reference", reference_seeds)):
                roles[role] = train_and_evaluate(
                    split=prepare.outputs["split"],
                    split_sha256=prepare.outputs["split_sha256"],
                    recipe_json=resolve.outputs["recipe_json"],
                    evaluation_json=resolve.outputs["evaluation_json"],
                    role=role,
                    seeds=seeds,
                    mlflow_experiment=mlflow_experiment,
                    code_version=code_version,
                ).set_display_name(f"train-{role}s")
                cacheable(roles[role])

            register = ops.register_model(
                candidate_models=roles["candidate"].outputs["models"],
                reference_models=roles["reference"].outputs["models"],
                candidate_metrics=roles["candidate"].outputs["metrics"],
                reference_metrics=roles["reference"].outputs["metrics"],
                split=prepare.outputs["split"],
                split_uri=prepare.outputs["split_uri"],
                config_json=resolve.outputs["config_json"],
                candidate_seeds=candidate_seeds,
                reference_seeds=reference_seeds,
                model_name=model_name,
                reference_model_name=reference_model_name,
                mlflow_experiment=mlflow_experiment,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            register.set_display_name("register-model").set_caching_options(False)
            apply_platform(register, "register", settings)

            scoring_inputs = dict(
                candidate_models=roles["candidate"].outputs["models"],
                reference_models=roles["reference"].outputs["models"],
                split=prepare.outputs["split"],
                config_json=resolve.outputs["config_json"],
            )
            version_inputs = dict(
                model_name=model_name,
                candidate_version=register.outputs["candidate_version"],
                reference_model_name=reference_model_name,
                reference_version=register.outputs["reference_version"],
            )
            tracking_inputs = dict(
                alpha=alpha,
                mlflow_experiment=mlflow_experiment,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            with dsl.If(shard_size == 0, name="score-unsharded"):
                score = ops.score_memorization(
                    **scoring_inputs, **version_inputs, **tracking_inputs
                )
                score.set_display_name("score-memorization").set_caching_options(False)
                apply_platform(score, "score", settings)
            with dsl.Else(name="score-sharded"):
                # Every check once, then one scoring pod per index range, then one merge.
                plan = ops.plan_score_shards(
                    **scoring_inputs, **version_inputs, shard_size=shard_size
                )
                plan.set_display_name("plan-score-shards").set_caching_options(False)
                apply_platform(plan, "prepare", settings)
                with dsl.ParallelFor(plan.output, name="score-shards") as shard:
                    part = ops.score_shard(**scoring_inputs, shard=shard)
                    part.set_display_name("score-shard").set_caching_options(False)
                    apply_platform(part, "score", settings)
                merge = ops.merge_score_shards(
                    **scoring_inputs,
                    **version_inputs,
                    **tracking_inputs,
                    shards=dsl.Collected(part.outputs["table"]),
                )
                merge.set_display_name("merge-score-shards").set_caching_options(False)
                apply_platform(merge, "score", settings)

    return memorization


def compile_pipeline(
    path: Path | str,
    *,
    image: str = DEFAULT_IMAGE,
    platform: PlatformConfig | None = None,
    caching: bool = True,
) -> Path:
    """Compile the pipeline to a YAML file (same inputs, same bytes).

    Args:
        path: Output file (``.yaml``).
        image: Container image of every step.
        platform: Kubernetes settings.
        caching: ``False`` compiles every task with caching off.

    Returns:
        The path written.

    Raises:
        ConfigError: Invalid image reference.

    """
    from kfp import compiler

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(image=image, platform=platform, caching=caching)
    compiler.Compiler().compile(pipeline, str(target))
    return target
