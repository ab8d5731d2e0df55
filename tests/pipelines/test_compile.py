"""Compiling the pipeline: deterministic bytes, a golden file, platform settings in the spec.

Regenerate the golden file after an intended change of the pipeline or a component:

    SSLMEM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pipelines/test_compile.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sslmem.cli import main
from sslmem.pipelines.memorization import compile_pipeline
from sslmem.pipelines.platform import PlatformConfig, load_platform_config

GOLDEN = Path(__file__).parent / "golden" / "memorization.yaml"
PLATFORM_YAML = """
env: {SSLMEM_STORE_URI: "s3://sslmem/store"}
secrets:
  - name: mlflow-auth
    env: {MLFLOW_TRACKING_TOKEN: token}
  - name: minio-creds
    env: {SSLMEM_S3_ACCESS_KEY: access-key, AWS_ACCESS_KEY_ID: access-key}
    optional: true
train:
  accelerator: {type: nvidia.com/gpu, limit: 2}
  node_selector: {cloud.google.com/gke-accelerator: nvidia-l4}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  shared_memory: {size_limit: 16Gi}
  resources: {cpu_request: "8", memory_request: 32Gi, memory_limit: 48Gi}
  retries: 2
"""


def _load(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(path.read_text()))


def _executor_for(spec: dict[str, Any], component: str) -> str:
    """The executor label of a component (``comp-train-encoder`` -> ``exec-train-encoder``)."""
    label: str = spec["components"][component]["executorLabel"]
    return label


def test_compile_is_deterministic_and_matches_golden(tmp_path: Path) -> None:
    first = compile_pipeline(tmp_path / "a.yaml")
    second = compile_pipeline(tmp_path / "b.yaml")
    assert first.read_bytes() == second.read_bytes()
    if os.environ.get("SSLMEM_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_bytes(first.read_bytes())
    assert GOLDEN.is_file(), "no golden file: run with SSLMEM_UPDATE_GOLDEN=1 to create it"
    assert first.read_bytes() == GOLDEN.read_bytes(), (
        "the compiled pipeline differs from tests/pipelines/golden/memorization.yaml; if the "
        "change is intended, regenerate it with SSLMEM_UPDATE_GOLDEN=1 pytest tests/pipelines"
    )


def test_cli_compile_twice_gives_identical_bytes(tmp_path: Path) -> None:
    platform = tmp_path / "platform.yaml"
    platform.write_text(PLATFORM_YAML)
    outputs = []
    for name in ("a.yaml", "b.yaml"):
        out = tmp_path / name
        args = ["pipeline", "compile", "-o", str(out), "--image", "reg.example/sslmem:1.2"]
        assert main([*args, "--platform", str(platform)]) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert b"reg.example/sslmem:1.2" in outputs[0]


def test_platform_settings_reach_the_train_task(tmp_path: Path) -> None:
    platform = tmp_path / "platform.yaml"
    platform.write_text(PLATFORM_YAML)
    path = compile_pipeline(
        tmp_path / "p.yaml", image="reg.example/sslmem:1.2", platform=load_platform_config(platform)
    )
    pipeline_spec, platform_spec = _load(path)
    train = _executor_for(pipeline_spec, "comp-train-encoder")
    container = pipeline_spec["deploymentSpec"]["executors"][train]["container"]
    assert container["image"] == "reg.example/sslmem:1.2"
    resources = container["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "2"
    assert resources["resourceCpuRequest"] == "8"
    assert resources["resourceMemoryLimit"] == "48Gi"
    assert {"name": "SSLMEM_STORE_URI", "value": "s3://sslmem/store"} in container["env"]
    # Two GPUs reserved -> two training processes (torchrun) in the pod.
    assert {"name": "SSLMEM_TRAIN_NPROC_PER_NODE", "value": "2"} in container["env"]

    kubernetes = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"][train]
    assert kubernetes["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert kubernetes["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    assert kubernetes["emptyDirMounts"] == [
        {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi", "volumeName": "dshm"}
    ]
    secrets = {
        (entry["secretName"], item["secretKey"], item["envVar"])
        for entry in kubernetes["secretAsEnv"]
        for item in entry["keyToEnv"]
    }
    assert secrets == {
        ("mlflow-auth", "token", "MLFLOW_TRACKING_TOKEN"),
        ("minio-creds", "access-key", "SSLMEM_S3_ACCESS_KEY"),
        ("minio-creds", "access-key", "AWS_ACCESS_KEY_ID"),
    }


#: Credentials the compiling process holds; none may end up in the compiled spec.
_SECRET_ENV = {
    "SSLMEM_MLFLOW_TRACKING_URI": "http://alice:tracking-pw-6e1f@mlflow.example:5000",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-pw-0b7c",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-93d2",
    "SSLMEM_S3_ACCESS_KEY": "s3-access-5a41",
    "SSLMEM_S3_SECRET_KEY": "s3-secret-c08e",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-77f3",
    "SSLMEM_KFP_TOKEN": "kfp-token-1d9a",
}


def test_credentials_of_the_compiling_process_never_reach_the_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    platform = tmp_path / "platform.yaml"
    platform.write_text(PLATFORM_YAML)
    out = tmp_path / "p.yaml"
    assert main(["pipeline", "compile", "-o", str(out), "--platform", str(platform)]) == 0
    text = out.read_text()
    leaked = [name for name, value in _SECRET_ENV.items() if value in text]
    leaked += ["tracking-pw"] if "tracking-pw" in text else []
    assert not leaked, f"secret values of {leaked} are in the compiled pipeline"
    # ... while the references to the Kubernetes Secrets that provide them are.
    assert "mlflow-auth" in text and "minio-creds" in text


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SSLMEM_MLFLOW_TRACKING_URI": "http://alice:hunter2-pw@mlflow:5000"}, "TRACKING_URI"),
        ({"MLFLOW_TRACKING_PASSWORD": "hunter2-pw"}, "MLFLOW_TRACKING_PASSWORD"),
        ({"SSLMEM_S3_SECRET_KEY": "hunter2-pw"}, "SSLMEM_S3_SECRET_KEY"),
        ({"KFP_TOKEN": "hunter2-pw"}, "KFP_TOKEN"),
    ],
)
def test_a_credential_in_the_plain_platform_env_is_refused_without_echoing_it(
    tmp_path: Path, env: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Plain env values are written into the spec verbatim: a secret there would be public.
    platform = tmp_path / "platform.yaml"
    platform.write_text(yaml.safe_dump({"env": env}))
    out = tmp_path / "p.yaml"
    assert main(["pipeline", "compile", "-o", str(out), "--platform", str(platform)]) == 2
    err = capsys.readouterr().err
    assert named in err and "secrets:" in err
    assert "hunter2" not in err
    assert not out.exists()


def test_default_platform_gives_training_a_gpu_and_others_none(tmp_path: Path) -> None:
    pipeline_spec, platform_spec = _load(compile_pipeline(tmp_path / "p.yaml"))
    executors = pipeline_spec["deploymentSpec"]["executors"]
    kubernetes = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for component in pipeline_spec["components"]:
        if "executorLabel" not in pipeline_spec["components"][component]:
            continue  # a DAG
        label = _executor_for(pipeline_spec, component)
        resources = executors[label]["container"].get("resources", {})
        has_gpu = "accelerator" in resources
        assert has_gpu == component.startswith("comp-train-encoder"), component
        # One GPU: training stays in the component's own process (no torchrun).
        env_names = {e["name"] for e in executors[label]["container"].get("env", [])}
        assert "SSLMEM_TRAIN_NPROC_PER_NODE" not in env_names, component
        secret_names = {entry["secretName"] for entry in kubernetes[label]["secretAsEnv"]}
        assert secret_names == {"sslmem-mlflow", "sslmem-s3"}, component


def test_scoring_register_and_exit_tasks_are_never_cached(tmp_path: Path) -> None:
    pipeline_spec, _ = _load(compile_pipeline(tmp_path / "p.yaml"))
    # Every task of every DAG (the scoring tasks sit in the shard_size condition branches).
    tasks = {
        name: task
        for component in [pipeline_spec["root"], *pipeline_spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
    }

    def cached(name: str) -> bool:
        return bool(tasks[name].get("cachingOptions", {}).get("enableCache", False))

    assert cached("resolve-config") and cached("prepare-split")
    assert not cached("register-model") and not cached("score-memorization")
    # The sharded path claims the version too: none of its steps may come from the cache.
    for name in ("plan-score-shards", "score-shard", "merge-score-shards"):
        assert not cached(name), name
    assert not cached("finalize-run")
    # The code identity is computed in every run, so it must never come from the cache.
    assert not cached("identify-code")
    loop = pipeline_spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    assert loop["train-encoder"]["cachingOptions"]["enableCache"]
    assert "candidate_version" in tasks["score-memorization"]["inputs"]["parameters"]
    train_inputs = pipeline_spec["components"]["comp-train-encoder"]["inputDefinitions"]
    assert {"split_sha256", "recipe_json", "role", "seed"} <= set(train_inputs["parameters"])
    assert "split" in train_inputs["artifacts"]


def _code_version_source(task: dict[str, Any]) -> Any:
    return task["inputs"]["parameters"]["code_version"]


def test_every_cached_step_is_keyed_on_the_code_version(tmp_path: Path) -> None:
    pipeline_spec, _ = _load(compile_pipeline(tmp_path / "p.yaml"))
    components = pipeline_spec["components"]
    body = components["comp-exit-handler-1"]["dag"]["tasks"]
    from_identify = {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "identify-code"}
    }
    for name in ("resolve-config", "prepare-split"):
        assert _code_version_source(body[name]) == from_identify, name
    # The per-role sub-pipelines get it from identify-code and hand it to every loop task.
    for role_task in ("train-and-evaluate", "train-and-evaluate-2"):
        assert _code_version_source(body[role_task]) == from_identify, role_task
    # The role loops (the scoring shards' loop holds no training task).
    loops = [
        c
        for c in components
        if c.startswith("comp-for-loop-") and "train-encoder" in components[c]["dag"]["tasks"]
    ]
    assert len(loops) == 2
    for loop in loops:
        tasks = components[loop]["dag"]["tasks"]
        for name in ("train-encoder", "evaluate-encoder"):
            assert _code_version_source(tasks[name]) == {
                "componentInputParameter": "pipelinechannel--code_version"
            }, (loop, name)

    # Every cacheable task of the whole graph takes it (none was forgotten).
    def tasks_of(component: dict[str, Any]) -> dict[str, Any]:
        return component.get("dag", {}).get("tasks", {})

    cacheable = [
        name
        for component in [pipeline_spec["root"], *components.values()]
        for name, task in tasks_of(component).items()
        if task.get("cachingOptions", {}).get("enableCache")
        and "componentRef" in task
        and "executorLabel" in components[task["componentRef"]["name"]]
    ]
    assert set(cacheable) == {
        "resolve-config",
        "prepare-split",
        "train-encoder",
        "evaluate-encoder",
    }


def test_an_image_pinned_by_digest_names_the_code(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    path = compile_pipeline(tmp_path / "p.yaml", image=f"reg.example/sslmem@{digest}")
    pipeline_spec, _ = _load(path)
    identify = _executor_for(pipeline_spec, "comp-identify-code")
    container = pipeline_spec["deploymentSpec"]["executors"][identify]["container"]
    assert {"name": "SSLMEM_IMAGE_DIGEST", "value": digest} in container["env"]
    # A tag names no digest: the code version then rests on the installed sources alone.
    default_spec, _ = _load(compile_pipeline(tmp_path / "d.yaml"))
    default = default_spec["deploymentSpec"]["executors"][identify]["container"]
    assert all(item["name"] != "SSLMEM_IMAGE_DIGEST" for item in default.get("env", []))


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("train: {accelerator: {limit: 0}}", "train.accelerator.limit"),
        ("train: {resources: {memory_limit: lots}}", "train.resources.memory_limit"),
        ("train: {tolerations: [{effect: Sometimes}]}", "train.tolerations.0.effect"),
        ("secrets: [{name: Bad_Name, env: {X: y}}]", "secrets.0.name"),
        ("gpu: true", "gpu"),
        ("data_cache: {pvc_name: Data_Cache}", "data_cache.pvc_name"),
        ("data_cache: {pvc_name: cache, mount_path: relative/dir}", "data_cache.mount_path"),
        ("data_cache: {pvc_name: cache}\nenv: {SSLMEM_DATA_DIR: /x}", "remove SSLMEM_DATA_DIR"),
    ],
)
def test_invalid_platform_file_names_the_field(
    tmp_path: Path, content: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = tmp_path / "platform.yaml"
    platform.write_text(content)
    args = ["pipeline", "compile", "-o", str(tmp_path / "p.yaml"), "--platform", str(platform)]
    assert main(args) == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


def test_invalid_image_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.yaml"
    assert main(["pipeline", "compile", "-o", str(out), "--image", "Not An Image"]) == 2
    assert "--image" in capsys.readouterr().err


def test_processes_per_node_overrides_the_accelerator_count(tmp_path: Path) -> None:
    platform = tmp_path / "platform.yaml"
    platform.write_text(PLATFORM_YAML.replace("  retries: 2\n", "  processes_per_node: 3\n"))
    config = load_platform_config(platform)
    assert config.train.nproc() == 3
    pipeline_spec, _ = _load(compile_pipeline(tmp_path / "p.yaml", platform=config))
    train = _executor_for(pipeline_spec, "comp-train-encoder")
    env = pipeline_spec["deploymentSpec"]["executors"][train]["container"]["env"]
    assert {"name": "SSLMEM_TRAIN_NPROC_PER_NODE", "value": "3"} in env


def test_platform_defaults_are_valid() -> None:
    config = PlatformConfig()
    assert config.train.accelerator is not None and config.profile("score").accelerator is None


def test_shard_size_selects_one_pass_or_a_parallel_for_of_shards(tmp_path: Path) -> None:
    """``shard_size == 0``: score-memorization; else plan → ParallelFor(score-shard) → merge."""
    spec, _ = _load(compile_pipeline(tmp_path / "p.yaml"))
    assert spec["root"]["inputDefinitions"]["parameters"]["shard_size"]["defaultValue"] == 0
    components = spec["components"]
    body = components["comp-exit-handler-1"]["dag"]["tasks"]
    (branches,) = [
        t for t in body.values() if t["componentRef"]["name"].startswith("comp-condition-b")
    ]
    conditions = {
        task["componentRef"]["name"]: task["triggerPolicy"]["condition"]
        for task in components[branches["componentRef"]["name"]]["dag"]["tasks"].values()
    }
    one_pass = [c for c, cond in conditions.items() if cond.endswith("shard_size']) == 0")]
    sharded = [c for c, cond in conditions.items() if cond.startswith("!(")]
    assert len(one_pass) == len(sharded) == 1, conditions
    assert set(components[one_pass[0]]["dag"]["tasks"]) == {"score-memorization"}
    tasks = components[sharded[0]]["dag"]["tasks"]
    loops = [t for t in tasks.values() if "parameterIterator" in t]
    assert len(loops) == 1
    assert loops[0]["parameterIterator"]["items"]["inputParameter"].endswith(
        "plan-score-shards-Output"
    )
    loop_tasks = components[loops[0]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(loop_tasks) == {"score-shard"}
    merge = tasks["merge-score-shards"]
    assert merge["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] == next(
        n for n, t in tasks.items() if t is loops[0]
    )
    # The merge fills the same outputs as the one-pass step.
    outputs = components["comp-score-memorization"]["outputDefinitions"]
    assert components["comp-merge-score-shards"]["outputDefinitions"] == outputs


def test_data_cache_mounts_one_claim_as_the_data_dir_of_every_task(tmp_path: Path) -> None:
    platform = tmp_path / "platform.yaml"
    platform.write_text(PLATFORM_YAML + "data_cache: {pvc_name: sslmem-data-cache}\n")
    pipeline_spec, platform_spec = _load(
        compile_pipeline(tmp_path / "p.yaml", platform=load_platform_config(platform))
    )
    executors = pipeline_spec["deploymentSpec"]["executors"]
    kubernetes = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(executors) >= 6  # prepare, train, evaluate, register, score, finalize at least
    for name, executor in executors.items():
        env = executor["container"]["env"]
        assert {"name": "SSLMEM_DATA_DIR", "value": "/var/cache/sslmem/data"} in env, name
        assert kubernetes[name]["pvcMount"] == [
            {
                "constant": "sslmem-data-cache",
                "mountPath": "/var/cache/sslmem/data",
                "pvcNameParameter": {"runtimeValue": {"constant": "sslmem-data-cache"}},
            }
        ], name
    # Without it, no task mounts a claim or pins the data directory.
    pipeline_spec, platform_spec = _load(compile_pipeline(tmp_path / "q.yaml"))
    for name, executor in pipeline_spec["deploymentSpec"]["executors"].items():
        names = {item["name"] for item in executor["container"].get("env", [])}
        assert "SSLMEM_DATA_DIR" not in names, name
    for name, settings in platform_spec["platforms"]["kubernetes"]["deploymentSpec"][
        "executors"
    ].items():
        assert "pvcMount" not in settings, name


EXAMPLE_PLATFORM = Path(__file__).parents[2] / "deploy" / "platform.example.yaml"


def test_the_shipped_platform_example_and_its_commented_options_are_valid(tmp_path: Path) -> None:
    config = load_platform_config(EXAMPLE_PLATFORM)
    assert config.train.nodes == 1 and config.data_cache is None
    # Uncomment the optional settings the example shows as comments: they must be valid too.
    text = EXAMPLE_PLATFORM.read_text()
    options = r"processes_per_node|nodes|data_cache|  pvc_name|  mount_path"
    uncommented = re.sub(rf"(?m)^(\s*)# ({options}):", r"\1\2:", text)
    assert uncommented.count("\n") == text.count("\n") and uncommented != text
    path = tmp_path / "platform.yaml"
    path.write_text(uncommented)
    config = load_platform_config(path)
    assert config.train.nodes == 2 and config.train.nproc() == 4
    assert config.data_cache is not None and config.data_cache.pvc_name == "sslmem-data-cache"
    compile_pipeline(tmp_path / "p.yaml", image="reg.example/sslmem:1.2", platform=config)
