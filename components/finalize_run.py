"""KFP component: the exit handler; fails every version of the run that was not scored."""

from kfp import dsl


def finalize_run(
    model_name: str,
    reference_model_name: str,
    pipeline_run_id: str,
    status: dsl.PipelineTaskFinalStatus,
) -> None:
    """Mark the versions this pipeline run registered but did not score as failed.

    Runs after the pipeline body whatever its outcome (dsl.ExitHandler).

    Args:
        model_name: Registered model of the candidates.
        reference_model_name: Registered model of the references ("" = <model_name>-reference).
        pipeline_run_id: The pipeline run.
        status: Final status of the pipeline body.

    """
    from sslmem import workflow
    from sslmem.pipeline_params import reference_model_for

    workflow.finalize_pipeline_run(
        model_names=[model_name, reference_model_for(model_name, reference_model_name)],
        pipeline_run_id=pipeline_run_id,
        state=str(status.state),
        error=str(status.error_message or ""),
    )
