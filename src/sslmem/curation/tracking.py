"""A curation study in MLflow: one parent run, a nested run per retrain, plots over k.

The parent run holds the plan and inputs as parameters, the report files as artifacts, and the
accuracy of each strategy as a metric whose *step is k* (``knn_accuracy/top`` at steps 0, 9,
27, ...), so MLflow's metric charts draw accuracy against the number of removed candidates per
strategy. Each retrain is a nested run (MLflow's ``mlflow.parentRunId``) tagged with its
strategy, k, draw and seed, with its derived split manifest as an artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

from sslmem.atomic import atomic_write_bytes
from sslmem.curation.plan import FULL, StudyPlan
from sslmem.curation.study import RETRAINS_DIR, SPLIT_FILE, StudyResult
from sslmem.tracking import tags as T

#: The study directory's record of the MLflow run it was logged to (logged once).
RUN_FILE = "mlflow-run.json"
STUDY_STEP = "curation-study"
RETRAIN_STEP = "curation-retrain"


def logged_run(out_dir: Path) -> str | None:
    """The run id a study directory was logged to (``None``: not logged yet)."""
    try:
        value = json.loads((out_dir / RUN_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def log_study(result: StudyResult, plan: StudyPlan, *, experiment: str) -> str:
    """Log a finished study to ``experiment`` once; return the parent run's id.

    A study directory already logged returns its run id without logging again.

    Raises:
        TrackingError: MLflow is unreachable or refused.

    """
    from mlflow.entities import Param

    from sslmem.tracking import log_metrics
    from sslmem.tracking.connection import client, tracking_errors
    from sslmem.tracking.runs import step_run

    existing = logged_run(result.out_dir)
    if existing is not None:
        return existing
    inputs = json.loads((result.out_dir / "study-inputs.json").read_text())
    name = f"curation-{inputs['scores_sha256'][:8]}"
    with step_run(
        experiment,
        step=STUDY_STEP,
        run_name=name,
        tags={T.SPLIT_MANIFEST_SHA256: inputs["manifest_sha256"]},
    ) as parent:
        params = {f"plan.{key}": str(value) for key, value in plan.model_dump(mode="json").items()}
        params |= {
            "scores_sha256": inputs["scores_sha256"],
            "reference_sha256": inputs["reference_sha256"],
            "retrains": str(len(result.rows)),
        }
        with tracking_errors("log the study's parameters"):
            client().log_batch(parent, params=[Param(k, v) for k, v in params.items()])
        for row in result.rows:
            with step_run(
                experiment,
                step=RETRAIN_STEP,
                run_name=row.name,
                tags={
                    T.MLFLOW_PARENT_RUN: parent,
                    T.CURATION_STRATEGY: row.strategy,
                    T.CURATION_K: str(row.k),
                    T.CURATION_DRAW: str(row.draw),
                    T.SEED: str(row.seed),
                    T.SPLIT_MANIFEST_SHA256: row.manifest_sha256,
                },
            ) as child:
                log_metrics(
                    {
                        "knn_accuracy": row.knn_accuracy,
                        "linear_probe_accuracy": row.linear_probe_accuracy,
                        "mean_sslmem_remaining": row.mean_sslmem_remaining,
                        "mean_sslmem_removed": row.mean_sslmem_removed,
                        "final_loss": row.final_loss,
                        "epochs": float(row.epochs),
                        "steps": float(row.steps),
                        "num_train": float(row.num_train),
                    },
                    run_id=child,
                )
                manifest = result.out_dir / RETRAINS_DIR / row.name / SPLIT_FILE
                with tracking_errors(f"log the split of retrain {row.name}"):
                    client().log_artifact(child, str(manifest), "split")
        analysis = result.analysis
        strategies = sorted({a.strategy for a in analysis.arms} - {FULL})
        for arm in analysis.arms:
            # The full-data control is every strategy's k = 0 point.
            names = strategies if arm.strategy == FULL else [arm.strategy]
            for strategy in names:
                log_metrics({f"{arm.metric}/{strategy}": arm.mean}, step=arm.k, run_id=parent)
        for drop in analysis.drops:
            log_metrics(
                {
                    f"top_minus_{drop.control}/{drop.metric}": drop.test.mean_difference,
                    f"p_top_below_{drop.control}/{drop.metric}": drop.test.p_value,
                },
                step=drop.k,
                run_id=parent,
            )
        for onion in analysis.onion:
            log_metrics(
                {
                    f"onion_shift/{onion.strategy}": onion.mean_shift,
                    f"newly_exposed/{onion.strategy}": onion.newly_exposed,
                },
                step=onion.k,
                run_id=parent,
            )
        correlation = result.atypicality.correlation
        log_metrics(
            {
                "atypicality_spearman_rho": correlation.rho,
                "atypicality_spearman_ci95_low": correlation.ci95_low,
                "atypicality_spearman_ci95_high": correlation.ci95_high,
            },
            run_id=parent,
        )
        with tracking_errors("log the study's report"):
            for path in result.files.values():
                client().log_artifact(parent, str(path), "report")
    atomic_write_bytes(
        result.out_dir / RUN_FILE,
        (json.dumps({"run_id": parent, "experiment": experiment}) + "\n").encode(),
    )
    return parent
