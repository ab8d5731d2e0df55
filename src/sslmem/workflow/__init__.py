"""The steps of the memorisation pipeline, as library functions on paths, URIs and configs.

Kubeflow components (:mod:`sslmem.components`), the CLI and the scoring service call these
functions; the components only translate KFP artifacts (``.path``, ``.uri``, ``.metadata``)
into arguments. One function per step:

0. :func:`resolve_config` -- pipeline parameters to the experiment config and the slices of it
   each step depends on (the steps' cache keys).
1. :func:`prepare_split` -- the deterministic SSLMem split; manifest written to the step's
   output and, content-addressed, to the object store (``splits/<sha256>.json``).
2. :func:`train_role` -- one candidate (S_S ∪ S_C) or reference (S_S ∪ S_I) encoder per seed,
   with per-epoch metrics in a new MLflow run.
3. :func:`evaluate_role` -- downstream kNN and linear-probe accuracy of one encoder.
4. :func:`register_candidate` -- the reference and then the candidate as new model versions;
   the candidate carries full provenance (resolved reference version, manifest URI and hash,
   augmentation, layer, seed) and ``sslmem.status=training``.
5. :func:`score_pair` -- SSLMem of all candidate vs all reference encoders (the expectation
   over seeds); report logged; summary tags set on the version with ``sslmem.status=scored``
   written last. Sharded: :func:`plan_score_shards` (checks once, index ranges),
   :func:`score_pair_shard` per range, then :func:`score_pair` with ``shards`` merges.
6. :func:`finalize_pipeline_run` -- the exit step: every version of this pipeline run that is
   still ``training`` is marked ``failed`` with the reason (scoring marks its own failures).

A version therefore looks successfully scored only if scoring finished; a failure anywhere
leaves ``training`` (if even the finaliser cannot reach MLflow) or ``failed``.

One module per step (``resolve``, ``split``, ``train``, ``evaluate``, ``register``, ``score``,
``finalize``) plus ``result`` (reading a finished run back); every public name is re-exported
here, so adapters write ``from sslmem import workflow`` and ``workflow.score_pair(...)``.
"""

from sslmem.data.splits import manifest_dataset
from sslmem.workflow._common import (
    checkpoint_augmentation,
    loaded_checkpoint,
)
from sslmem.workflow.evaluate import EncoderEvaluation, evaluate_role
from sslmem.workflow.finalize import finalize_pipeline_run
from sslmem.workflow.register import (
    EncoderArtifact,
    Registration,
    collect_encoders,
    register_candidate,
    save_evaluation,
)
from sslmem.workflow.resolve import ResolvedConfig, resolve_config
from sslmem.workflow.result import RunResult, read_run_result
from sslmem.workflow.score import (
    SCORE_SUMMARY_ARTIFACT,
    finite_score_metrics,
    plan_score_shards,
    score_pair,
    score_pair_shard,
)
from sslmem.workflow.score_version import score_pair_claimed
from sslmem.workflow.split import SPLIT_STORE_PREFIX, PreparedSplit, prepare_split
from sslmem.workflow.train import TrainedEncoder, train_role
from sslmem.workflow.versions import VersionInfo

__all__ = [
    "SCORE_SUMMARY_ARTIFACT",
    "SPLIT_STORE_PREFIX",
    "EncoderArtifact",
    "EncoderEvaluation",
    "PreparedSplit",
    "Registration",
    "ResolvedConfig",
    "RunResult",
    "TrainedEncoder",
    "VersionInfo",
    "checkpoint_augmentation",
    "collect_encoders",
    "evaluate_role",
    "finalize_pipeline_run",
    "finite_score_metrics",
    "loaded_checkpoint",
    "manifest_dataset",
    "plan_score_shards",
    "prepare_split",
    "read_run_result",
    "register_candidate",
    "resolve_config",
    "save_evaluation",
    "score_pair",
    "score_pair_claimed",
    "score_pair_shard",
    "train_role",
]
