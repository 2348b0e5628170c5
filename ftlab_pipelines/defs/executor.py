"""The Ray deployment profile (deploy/ray/): with FTLAB_RAY_ADDRESS set, each step of a lab's run is a Ray job on
that cluster, submitted by dagster-ray's executor. Steps ask Ray for what they use: the adapter the training
resources (through Ray Train's workers when the lab sets train.ray), every other step one CPU.

Why the executor rather than dagster-ray's run launcher or Pipes: a step per Ray job lets Ray place each step by
its own resources (data steps on any CPU node, training where the GPUs are), and the assets stay plain Dagster
assets. The run launcher alone would put the whole run in one job sized for its largest step; Pipes would turn
each asset into a launcher of an external script. The run launcher composes with it (deploy/ray/dagster.yaml).
"""

from __future__ import annotations

import json

from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.settings import ENV_VARS, Settings

RAY_CONFIG_TAG = "dagster-ray/config"  # dagster-ray reads a step's Ray resources from this op tag
# What a step needs from the environment of the run that submitted it (every node mounts FTLAB_HOME).
FORWARDED_ENV = [*ENV_VARS, "DAGSTER_HOME", "HF_HOME", "HF_HUB_OFFLINE", "HF_TOKEN", "TOKENIZERS_PARALLELISM",
                 "OMP_NUM_THREADS"]


def step_resources(lab: LabConfig, stage: str) -> dict:
    """The Ray resources of one step of `lab`."""
    if stage != "adapter":
        return {"num_cpus": 1}
    if lab.train.ray is not None:
        return {"num_cpus": 0}  # a driver only: Ray Train's workers reserve the CPUs and GPUs
    return {"num_cpus": lab.train.num_processes}


def ray_op_tags(lab: LabConfig, stage: str) -> dict:
    return {RAY_CONFIG_TAG: json.dumps(step_resources(lab, stage))}


def executor(settings: Settings):
    """dagster-ray's executor on settings.ray_address; None (Dagster's default) without the Ray profile."""
    if not settings.ray_address:
        return None
    from dagster_ray import ray_executor

    return ray_executor.configured({"ray": {"address": settings.ray_address, "env_vars": FORWARDED_ENV}},
                                   name="ftlab_ray_executor")
