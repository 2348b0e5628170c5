"""Scale-out on Ray: the lab section, the Dagster wiring and the deployment profile. The two-node cluster tests are
tests/ray_cluster/, run by tests/test_ray_two_nodes.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, tiny_lab, write_labs
from pydantic import ValidationError

from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.training import distributed, ray_train
from ftlab_pipelines.defs.executor import FORWARDED_ENV


def lab_with(**train) -> dict:
    raw = tiny_lab("sms_spam")
    raw["train"].update(train)
    return {**raw, "name": "sms_spam"}


def test_train_ray_and_num_processes_are_exclusive():
    assert LabConfig.model_validate(lab_with(ray={"num_workers": 2})).train.ray.num_workers == 2
    with pytest.raises(ValidationError, match="not both"):
        LabConfig.model_validate(lab_with(ray={"num_workers": 2}, num_processes=2))


def test_without_train_ray_nothing_imports_ray():
    code = ("import sys; import ftlab_pipelines.definitions, ftlab_pipelines.cli; "
            "from ftlab_pipelines.core.stages import adapter; from ftlab_pipelines.core.training import recipe; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        k: v for k, v in os.environ.items() if k != "FTLAB_RAY_ADDRESS"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_auto_address_outside_a_cluster_and_an_unreachable_address_fail_before_ray_starts(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ray_train.RayClusterUnavailable, match="RAY_ADDRESS is unset"):
        ray_train.resolve_address("auto")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert ray_train.resolve_address("auto") == "10.0.0.5:6379"
    with pytest.raises(distributed.DistributedTrainingError, match="no Ray cluster at train.ray.address '127.0.0.1:9'"):
        ray_train.require_reachable("127.0.0.1:9")


def test_steps_ask_ray_for_their_resources_and_the_ray_profile_selects_the_executor(tmp_path, monkeypatch):
    """Data steps: 1 CPU; the adapter: 0 CPUs with train.ray (its Ray Train workers reserve theirs), else one CPU
    per training process. Without FTLAB_RAY_ADDRESS, Dagster's default executor; with it, the in-process one (the
    run's Ray job runs every step), or dagster-ray's with FTLAB_RAY_STEP_JOBS=1."""
    from ftlab_pipelines.definitions import build_definitions

    labs = write_labs(tmp_path / "labs", {"on_ray": lab_with(ray={"num_workers": 4}),
                                          "ddp": lab_with(num_processes=2)})
    monkeypatch.delenv("FTLAB_RAY_ADDRESS", raising=False)
    defs = build_definitions(str(labs))
    assert defs.executor is None
    asked = {}
    for asset in defs.assets:
        for key in asset.keys:
            asked[key.to_user_string()] = json.loads(asset.op.tags["dagster-ray/config"])
    assert asked["on_ray/adapter"] == {"num_cpus": 0} and asked["ddp/adapter"] == {"num_cpus": 2}
    assert {k: v for k, v in asked.items() if not k.endswith("/adapter")} == {
        f"{lab}/{stage}": {"num_cpus": 1} for lab in ("on_ray", "ddp")
        for stage in ("raw_dataset", "validated_dataset", "splits", "tokenized", "evaluation", "published_adapter")}

    monkeypatch.setenv("FTLAB_RAY_ADDRESS", "http://127.0.0.1:8265")
    monkeypatch.delenv("FTLAB_RAY_STEP_JOBS", raising=False)
    assert build_definitions(str(labs)).resolve_job_def("on_ray_pipeline").executor_def.name == "in_process"
    monkeypatch.setenv("FTLAB_RAY_STEP_JOBS", "1")
    defs = build_definitions(str(labs))
    assert defs.executor.name == "ftlab_ray_executor"
    assert defs.resolve_job_def("on_ray_pipeline").executor_def.name == "ftlab_ray_executor"
    assert Settings.from_env().ray_address == "http://127.0.0.1:8265" and Settings.from_env().ray_step_jobs


def test_the_ray_profile_loads_through_dagsters_schema(monkeypatch, tmp_path):
    """deploy/ray/dagster.yaml is a valid instance config, and its run launcher is dagster-ray's, on FTLAB_RAY_ADDRESS."""
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes import ConfigurableClassData
    from dagster_ray import RayRunLauncher

    for name, value in {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "ftlab",
                        "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": "dagster",
                        "FTLAB_RAY_ADDRESS": "http://ray-head:8265"}.items():
        monkeypatch.setenv(name, value)
    config, _ = dagster_instance_config(str(REPO / "deploy" / "ray"), "dagster.yaml")
    launcher = config["run_launcher"]
    launcher = ConfigurableClassData(launcher["module"], launcher["class"], yaml.safe_dump(launcher["config"]))
    instance = launcher.rehydrate(RayRunLauncher)
    assert isinstance(instance, RayRunLauncher) and instance.address == "http://ray-head:8265"
    assert "postgres" in config["storage"]
    # The run's Ray job sees everything the settings and the steps read in the process that launched it.
    assert set(FORWARDED_ENV) <= set(instance.env_vars)


def test_the_kuberay_cluster_matches_the_installed_ray_and_shares_ftlab_home_on_every_pod():
    import ray

    docs = list(yaml.safe_load_all((REPO / "deploy" / "ray" / "raycluster.yaml").read_text()))
    (cluster,) = [d for d in docs if d["kind"] == "RayCluster"]
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["spec"]["rayVersion"] == ray.__version__
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        home = {e["name"]: e["value"] for e in container["env"]}["FTLAB_HOME"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["ftlab-home"] == home
        assert {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]} == {
            "ftlab-home": claim["metadata"]["name"]}
    gpu = [g for g in cluster["spec"]["workerGroupSpecs"]
           if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu and gpu[0]["rayStartParams"]["num-gpus"] == "1"
    head = cluster["spec"]["headGroupSpec"]
    assert {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]} >= {6379, 8265}
