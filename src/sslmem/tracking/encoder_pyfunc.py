"""MLflow "models from code" definition of a registered sslmem encoder.

:func:`sslmem.tracking.register_encoder` logs this file as the model's code (``python_model``
given as a path), so nothing is pickled: the model artifact holds this source file, the
safetensors checkpoint (artifact ``"checkpoint"``) and optionally the augmentation spec as JSON
(artifact ``"augmentation"``). ``load_context`` rebuilds the encoder with
:func:`sslmem.models.load_checkpoint` (weights only).

This makes a registered encoder servable with ``mlflow.pyfunc.load_model`` by *trusted*
consumers. sslmem's own scoring never does that: it downloads the checkpoint artifact and loads
the weights itself (:func:`sslmem.tracking.load_registered_encoder`).

``predict`` maps images ``[N, C, H, W]`` to backbone features ``float32 [N, D]``: uint8 images
get the spec's clean preprocessing (resize, normalise); float images are taken as already
preprocessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class EncoderPyfunc(PythonModel):  # type: ignore[misc]
    """Backbone features of an sslmem encoder, loaded weights-only from its checkpoint."""

    def load_context(self, context: Any) -> None:
        """Load the checkpoint artifact (and the augmentation spec, if shipped)."""
        from sslmem.augment import AugmentationSpec
        from sslmem.models import load_checkpoint

        self._checkpoint = load_checkpoint(context.artifacts["checkpoint"])
        spec_path = context.artifacts.get("augmentation")
        if spec_path is not None:
            raw = json.loads(Path(spec_path).read_text())
        else:
            raw = self._checkpoint.metadata.get("augmentation")
        self._spec = AugmentationSpec.model_validate(raw if isinstance(raw, dict) else {})

    # A bare ``np.ndarray`` hint tells MLflow to pass the tensor input through unconverted.
    def predict(
        self,
        context: Any,
        model_input: np.ndarray,  # type: ignore[type-arg]
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:  # type: ignore[type-arg]
        """Backbone features ``float32 [N, D]`` of images ``[N, C, H, W]`` (uint8 or float)."""
        import torch

        from sslmem.evaluation.features import extract_features

        if isinstance(model_input, dict) and len(model_input) == 1:  # a named tensor input
            model_input = next(iter(model_input.values()))
        images = torch.from_numpy(np.ascontiguousarray(np.asarray(model_input)))
        encoder = self._checkpoint.encoder
        if images.dtype == torch.uint8:
            features = extract_features(encoder, images, augment_spec=self._spec)
        else:
            with torch.inference_mode():
                features = encoder.features(images.float())
        result: np.ndarray = features.detach().cpu().numpy().astype(np.float32)  # type: ignore[type-arg]
        return result


mlflow.models.set_model(EncoderPyfunc())
