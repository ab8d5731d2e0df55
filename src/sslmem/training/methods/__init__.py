"""SSL methods, one module per method, registered by name.

Importing this package registers the built-in methods: ``simclr`` (Chen et al. 2020), ``byol``
(Grill et al. 2020), ``simsiam`` (Chen & He 2021), ``dino`` (Caron et al. 2021) and ``mae``
(He et al. 2022; ViT only).
"""

from sslmem.training.methods import byol as byol
from sslmem.training.methods import dino as dino
from sslmem.training.methods import mae as mae
from sslmem.training.methods import simclr as simclr
from sslmem.training.methods import simsiam as simsiam
from sslmem.training.methods.base import (
    MethodOptions,
    MethodSpec,
    SSLMethod,
    StepContext,
    available_methods,
    build_method,
    check_compatible,
    get_method_spec,
    register_method,
    validate_options,
)

__all__ = [
    "MethodOptions",
    "MethodSpec",
    "SSLMethod",
    "StepContext",
    "available_methods",
    "build_method",
    "check_compatible",
    "get_method_spec",
    "register_method",
    "validate_options",
]
