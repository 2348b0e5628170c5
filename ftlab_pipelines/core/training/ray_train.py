"""train.ray: the same training recipe as train.num_processes, as DDP across a Ray cluster's nodes (Ray Train).

Ray Train's TorchTrainer starts `num_workers` workers (spread over the nodes), sets RANK/WORLD_SIZE and joins them
in a torch process group (gloo on CPU, NCCL with use_gpu); each worker then runs `distributed.train_rank`, exactly
what an accelerate rank runs. Checkpoints live in the adapter's scratch dir ($FTLAB_WORK_DIR, which every node
mounts), so a restarted worker group (`max_failures`) or a re-materialization resumes from the last complete one.
Ray is imported only here.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from ftlab_pipelines.core.config.labs import RayTrainConfig
from ftlab_pipelines.core.config.settings import ENV_VARS
from ftlab_pipelines.core.tracking import AssetRun
from ftlab_pipelines.core.training import distributed

if TYPE_CHECKING:
    from ftlab_pipelines.core.training.recipe import TrainingJob

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
# Passed on to the workers: ftlab's settings, offline model files, no tokenizer threads fighting the torch threads.
WORKER_ENV = (*ENV_VARS, "HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE")

IN_A_RAY_JOB = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in a job's entrypoint process


class RayClusterUnavailable(distributed.DistributedTrainingError):
    """No Ray cluster answers at train.ray.address."""


def resolve_address(address: str) -> str:
    """`auto` is the cluster this process runs in (RAY_ADDRESS, set for a Ray job); other values are used as given."""
    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    raise RayClusterUnavailable(
        "train.ray.address is auto, but this process is not on a Ray cluster (RAY_ADDRESS is unset): set "
        "train.ray.address to the cluster's host:6379, or run the lab with the Ray deployment profile (deploy/ray/)")


def require_reachable(address: str) -> None:
    """Fail at once when nothing listens at a host:port address (ray.init would retry for a minute)."""
    if "://" in address:
        return  # ray:// (Ray Client) and other schemes: ray.init reports them itself
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S):
            return
    except (OSError, ValueError) as error:
        raise RayClusterUnavailable(
            f"no Ray cluster at train.ray.address {address!r} ({error}): start it (ray start --head) or fix the "
            f"address; nothing was trained") from error


def connect(config: RayTrainConfig) -> str:
    import ray

    address = resolve_address(config.address)
    if ray.is_initialized():
        return address
    require_reachable(address)
    if os.environ.get(IN_A_RAY_JOB):  # a Dagster step on the cluster: the job's runtime env already carries ours
        runtime_env = None
    else:
        env = {name: os.environ[name] for name in WORKER_ENV if os.environ.get(name)}
        runtime_env = {"env_vars": {**env, "TOKENIZERS_PARALLELISM": "false"}}
    ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, configure_logging=False)
    return address


def train_worker(config: dict) -> None:
    """One Ray Train worker: a DDP rank (Ray has set up the process group and RANK/WORLD_SIZE)."""
    import ray
    import ray.train
    import torch

    from ftlab_pipelines.core.modeling.device import placement
    from ftlab_pipelines.core.training.recipe import TrainingJob

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    job = TrainingJob.model_validate_json(config["job"])
    if placement().on_gpu:
        torch.cuda.set_device(ray.train.torch.get_device())
    torch.set_num_threads(max(1, int(job.train.ray.cpus_per_worker)))
    record = {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(), "pid": os.getpid()}
    distributed.train_rank(job, config["tokenized"], Path(config["checkpoints"]), Path(config["out"]), config["key"],
                           config["tracking_uri"], config["run_id"], rank, world_size, record)


def launch(job: TrainingJob, tokenized_path, key: str, checkpoints: Path, out_dir: Path, run: AssetRun) -> None:
    """Train on the cluster at job.train.ray.address; on return out_dir holds what the single-process path writes."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config: RayTrainConfig = job.train.ray
    address = connect(config)
    log.info("training on the Ray cluster at %s: %d workers, %g CPU(s)%s each", address, config.num_workers,
             config.cpus_per_worker, " and 1 GPU" if config.use_gpu else "")
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"job": job.model_dump_json(), "tokenized": str(tokenized_path), "key": key,
                           "checkpoints": str(checkpoints), "out": str(out_dir),
                           "tracking_uri": run.client.tracking_uri, "run_id": run.run_id},
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker={"CPU": config.cpus_per_worker},
                                     placement_strategy="SPREAD"),
        run_config=RunConfig(name=f"ftlab-{key[:16]}", storage_path=str(checkpoints.parent / "ray"),
                             failure_config=FailureConfig(max_failures=config.max_failures)),
    )
    try:
        trainer.fit()
    except Exception as error:
        raise distributed.DistributedTrainingError(
            f"training on the Ray cluster at {address} failed ({config.num_workers} workers): {error}. "
            f"Checkpoints are kept in {checkpoints}: re-materializing resumes from the last complete one") from error
    if not (out_dir / "manifest.json").is_file():
        raise distributed.DistributedTrainingError(
            f"the {config.num_workers} Ray workers finished but rank 0 wrote no manifest.json")
