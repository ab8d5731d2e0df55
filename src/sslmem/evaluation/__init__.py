"""Downstream evaluation on frozen features: weighted kNN (InstDisc) and a linear probe.

:func:`evaluate_encoder` is the one entry point the CLI, KFP components and the service call.
"""

from sslmem.evaluation.checks import EvaluationError
from sslmem.evaluation.evaluate import (
    EvaluationFile,
    EvaluationResult,
    LabelledImages,
    evaluate_encoder,
    read_evaluation_file,
)
from sslmem.evaluation.features import extract_features
from sslmem.evaluation.knn import knn_accuracy, knn_class_scores, knn_predict
from sslmem.evaluation.linear_probe import linear_probe_accuracy

__all__ = [
    "EvaluationError",
    "EvaluationFile",
    "EvaluationResult",
    "LabelledImages",
    "evaluate_encoder",
    "extract_features",
    "knn_accuracy",
    "knn_class_scores",
    "knn_predict",
    "linear_probe_accuracy",
    "read_evaluation_file",
]
