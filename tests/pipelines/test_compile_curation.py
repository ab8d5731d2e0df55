"""Compiling the curation pipeline: deterministic bytes, a golden file, the fan-out, caching.

Regenerate the golden file after an intended change of the pipeline or a component:

    SSLMEM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pipelines/test_compile_curation.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from sslmem.cli import main
from sslmem.pipelines.curation import DEFAULT_PARALLELISM, compile_pipeline
from sslmem.pipelines.platform import load_platform_config
from tests.pipelines.test_compile import PLATFORM_YAML

GOLDEN = Path(__file__).parent / "golden" / "curation.yaml"


def _load(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(path.read_text()))


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of every DAG, by name."""
    return {
        name: task
        for component in [spec["root"], *spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
    }


def test_compile_is_deterministic_and_matches_golden(tmp_path: Path) -> None:
    first = compile_pipeline(tmp_path / "a.yaml")
    second = compile_pipeline(tmp_path / "b.yaml")
    assert first.read_bytes() == second.read_bytes()
    if os.environ.get("SSLMEM_UPDATE_GOLDEN") == "1":
        GOLDEN.write_bytes(first.read_bytes())
    assert GOLDEN.is_file(), "no golden file: run with SSLMEM_UPDATE_GOLDEN=1 to create it"
    assert first.read_bytes() == GOLDEN.read_bytes(), (
        "the compiled curation pipeline differs from tests/pipelines/golden/curation.yaml; if "
        "the change is intended, regenerate it with SSLMEM_UPDATE_GOLDEN=1 pytest tests/pipelines"
    )


def test_the_compiled_spec_loads_back_through_kfp() -> None:
    # KFP's own loader parses the YAML into its PipelineSpec proto (unknown or malformed
    # fields fail here), as a KFP server does on upload.
    from kfp import components

    loaded = components.load_component_from_file(str(GOLDEN))
    inputs = loaded.component_spec.inputs
    assert {"scores_uri", "split_uri", "reference_uri", "config_yaml", "fractions", "seeds"} <= set(
        inputs
    )
    assert inputs["strategies"].default == ["top", "random", "bottom"]


def test_retrains_fan_out_over_the_plan_and_fan_in_to_the_study(tmp_path: Path) -> None:
    spec, _ = _load(compile_pipeline(tmp_path / "p.yaml", parallelism=3))
    components = spec["components"]
    root = spec["root"]["dag"]["tasks"]
    # The three inputs are imported by their artifact URIs (pipeline parameters).
    importers = [
        e["importer"] for e in spec["deploymentSpec"]["executors"].values() if "importer" in e
    ]
    kinds = sorted(i["typeSchema"]["schemaTitle"] for i in importers)
    assert kinds == ["system.Artifact", "system.Dataset", "system.Model"]
    assert all(i["artifactUri"] == {"runtimeParameter": "uri"} for i in importers)
    uris = {
        task["inputs"]["parameters"]["uri"]["componentInputParameter"]
        for name, task in root.items()
        if name.startswith("importer")
    }
    assert uris == {"scores_uri", "split_uri", "reference_uri"}
    # plan-curation's names feed a ParallelFor of curation-retrain, with the parallelism given.
    retrain_all = root["retrain-all"]
    assert retrain_all["inputs"]["parameters"]["names"]["taskOutputParameter"] == {
        "outputParameterKey": "names",
        "producerTask": "plan-curation",
    }
    (loop,) = components["comp-retrain-all"]["dag"]["tasks"].values()
    assert loop["iteratorPolicy"] == {"parallelismLimit": 3}
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--names"
    assert set(components[loop["componentRef"]["name"]]["dag"]["tasks"]) == {"curation-retrain"}
    # The study collects every retrain's directory.
    study = root["curation-study"]
    assert study["inputs"]["artifacts"]["retrains"]["taskOutputArtifact"]["producerTask"] == (
        "retrain-all"
    )
    outputs = components["comp-curation-study"]["outputDefinitions"]["artifacts"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in outputs.items()} == {
        "study": "system.Artifact",
        "metrics": "system.Metrics",
        "report": "system.Markdown",
    }


def test_retrains_are_cached_by_code_version_and_the_study_never(tmp_path: Path) -> None:
    spec, _ = _load(compile_pipeline(tmp_path / "p.yaml"))
    tasks = _tasks(spec)

    def cached(name: str) -> bool:
        return bool(tasks[name].get("cachingOptions", {}).get("enableCache", False))

    for name in ("resolve-config", "plan-curation", "curation-retrain"):
        assert cached(name), name
    assert not cached("identify-code") and not cached("curation-study")
    from_identify = {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "identify-code"}
    }
    for name in ("resolve-config", "plan-curation", "retrain-all"):
        assert tasks[name]["inputs"]["parameters"]["code_version"] == from_identify, name
    retrain = tasks["curation-retrain"]["inputs"]
    assert {"config_json", "plan_json", "name", "code_version"} <= set(retrain["parameters"])
    assert {"scores", "split", "reference"} <= set(retrain["artifacts"])
    # caching=False reaches the nested retrain task too.
    off = _tasks(_load(compile_pipeline(tmp_path / "q.yaml", caching=False))[0])
    assert not off["curation-retrain"].get("cachingOptions", {}).get("enableCache", False)


def test_retrains_get_the_train_profile_gpu_and_nothing_else_does(tmp_path: Path) -> None:
    platform = tmp_path / "platform.yaml"
    platform.write_text(PLATFORM_YAML)
    spec, platform_spec = _load(
        compile_pipeline(
            tmp_path / "p.yaml",
            image="reg.example/sslmem:1.2",
            platform=load_platform_config(platform),
        )
    )
    executors = spec["deploymentSpec"]["executors"]
    kubernetes = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for component, body in spec["components"].items():
        if "executorLabel" not in body or component.startswith("comp-importer"):
            continue
        label = body["executorLabel"]
        container = executors[label]["container"]
        assert container["image"] == "reg.example/sslmem:1.2", component
        has_gpu = "accelerator" in container.get("resources", {})
        assert has_gpu == (component == "comp-curation-retrain"), component
        secrets = {entry["secretName"] for entry in kubernetes[label]["secretAsEnv"]}
        assert {"mlflow-auth", "minio-creds"} <= secrets, component
    retrain = executors[spec["components"]["comp-curation-retrain"]["executorLabel"]]
    assert retrain["container"]["resources"]["accelerator"]["resourceCount"] == "2"
    label = spec["components"]["comp-curation-retrain"]["executorLabel"]
    assert kubernetes[label]["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4"
    }


def test_cli_compiles_either_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.yaml"
    args = ["pipeline", "compile", "--pipeline", "curation", "-o", str(out)]
    assert main([*args, "--parallelism", "2"]) == 0
    assert "curation pipeline" in capsys.readouterr().out
    spec, _ = _load(out)
    assert spec["pipelineInfo"]["name"] == "sslmem-curation"
    assert "parallelismLimit: 2" in out.read_text()
    default = tmp_path / "d.yaml"
    assert main(["pipeline", "compile", "--pipeline", "curation", "-o", str(default)]) == 0
    assert f"parallelismLimit: {DEFAULT_PARALLELISM}" in default.read_text()
    # The memorisation pipeline stays the default; --parallelism is the curation's only.
    memorization = tmp_path / "m.yaml"
    assert main(["pipeline", "compile", "-o", str(memorization)]) == 0
    assert _load(memorization)[0]["pipelineInfo"]["name"] == "sslmem-memorization"
    capsys.readouterr()
    bad = tmp_path / "bad.yaml"
    assert main(["pipeline", "compile", "-o", str(bad), "--parallelism", "2"]) == 2
    assert "--parallelism" in capsys.readouterr().err
    assert main([*args[:-1], str(bad), "--parallelism", "-1"]) == 2
    assert "--parallelism" in capsys.readouterr().err
    assert not bad.exists()
