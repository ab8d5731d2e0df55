"""SSL training of candidate and reference encoders.

:func:`train_encoder` trains f on S_S ∪ S_C or g on S_S ∪ S_I of an SSLMem split (Wang et al.,
ICLR 2024) with one of the registered methods (:mod:`sslmem.training.methods`) in the loop of
:mod:`sslmem.training.loop` (device-side augmentation, DDP, exact resume).
"""

from sslmem.training.callbacks import EpochCallback, JsonlMetricsLogger, TrainBeginCallback
from sslmem.training.loop import FitResult, fit, plan_steps
from sslmem.training.methods import (
    SSLMethod,
    StepContext,
    available_methods,
    build_method,
    check_compatible,
    get_method_spec,
    register_method,
)
from sslmem.training.schedule import lr_factor
from sslmem.training.train import ENCODER_FILE, RESUME_FILE, TrainResult, train_encoder

__all__ = [
    "ENCODER_FILE",
    "RESUME_FILE",
    "EpochCallback",
    "FitResult",
    "JsonlMetricsLogger",
    "SSLMethod",
    "StepContext",
    "TrainBeginCallback",
    "TrainResult",
    "available_methods",
    "build_method",
    "check_compatible",
    "fit",
    "get_method_spec",
    "lr_factor",
    "plan_steps",
    "register_method",
    "train_encoder",
]
