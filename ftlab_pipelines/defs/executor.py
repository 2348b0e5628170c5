"""The Ray deployment profile (deploy/ray/): with FTLAB_RAY_ADDRESS set, dagster-ray's run launcher
(deploy/ray/dagster.yaml) submits each run of a lab as one Ray job on that cluster, and the run executes its steps
in that job's process. The adapter step asks Ray for the training resources itself: with train.ray it drives Ray
Train workers, which reserve their CPUs or GPUs on whichever nodes have them.

Why the run launcher, with steps in the run's process, by default: a lab's data, evaluation and release steps are
light next to training, and the one step that needs a cluster's resources already gets them from Ray Train. One
Ray job per run pays the interpreter start and the imports once: measured here, a tiny sms_spam chain took 55-65 s as
one job against 105-122 s as seven (a step's own job costs 7-10 s before it does any work).

FTLAB_RAY_STEP_JOBS=1 adds dagster-ray's executor: each step its own Ray job, sized by `step_resources` (data
steps 1 CPU, the adapter what its training takes), so that Ray can place each step on its own node. Pipes was not
chosen: it would turn each asset into a launcher of an external script.
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
    """None (Dagster's default) without the Ray profile. With it: the in-process executor (the run's Ray job runs
    every step), or dagster-ray's executor on settings.ray_address with FTLAB_RAY_STEP_JOBS."""
    if not settings.ray_address:
        return None
    if not settings.ray_step_jobs:
        import dagster as dg

        return dg.in_process_executor
    from dagster_ray import ray_executor

    return ray_executor.configured({"ray": {"address": settings.ray_address, "env_vars": FORWARDED_ENV}},
                                   name="ftlab_ray_executor")
