"""Kubeflow Trainer v2.3.0's TrainJob CRD schema (tests/pipelines/fixtures), checked strictly.

An unknown field is an error, as with ``kubectl apply --validate=strict``: no Kubernetes API
server runs in the tests, so TrainJobs and the statuses a controller would write are validated
with the CRD's own openAPIV3Schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

CRD = json.loads((Path(__file__).parent / "fixtures" / "trainjob-v2.3.0.schema.json").read_text())


def _strict(schema: Any) -> Any:
    """The structural schema with unknown fields refused (the API server prunes them)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def validate_train_job(job: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` where the API server would refuse ``job``."""
    jsonschema.Draft7Validator(_strict(CRD["openAPIV3Schema"])).validate(job)
