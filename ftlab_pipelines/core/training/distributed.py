"""Data-parallel training: `accelerate launch` (torchrun underneath) runs `main` once per rank.

Every rank builds the same model and trains on its own shard of each epoch (the Trainer's dataloader is
sharded by accelerate); DDP averages the gradients over gloo on CPU, NCCL on GPUs (one process per GPU).
Only rank 0 streams metrics to the adapter's MLflow run and writes the adapter, log_history.json,
loss_curves.png and manifest.json. Every rank writes rank_examples/rank{R}.json: fingerprints of the
examples it trained on, the evidence that the shards are disjoint.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ftlab_pipelines.core.config.labs import TrainConfig
from ftlab_pipelines.core.modeling.device import placement, usable_cores
from ftlab_pipelines.core.tracking import AssetRun

if TYPE_CHECKING:
    from ftlab_pipelines.core.training.recipe import TrainingJob

log = logging.getLogger(__name__)

RANK_EXAMPLES = "rank_examples"
TAIL_LINES = 40


class DistributedTrainingError(RuntimeError):
    """The launched training processes failed; the message carries the tail of their output."""


def threads_per_process(config: TrainConfig) -> int:
    """train.num_threads per process when set, else the cores shared out evenly between the processes."""
    return config.num_threads or max(1, usable_cores() // config.num_processes)


def launch_command(num_processes: int, threads: int, worker_args: list[str]) -> list[str]:
    # --multi_gpu is accelerate's torchrun launcher; on a CPU-only host its workers run DDP on CPU.
    # (--cpu would pick the simple launcher, which starts one process unless given an MPI hostfile.)
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
        "--main_process_port", "0",  # a free port, so parallel runs do not collide
        "--mixed_precision", "no",  # the Trainer applies train.bf16 itself
        "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", str(threads),
        "--module", __name__, *worker_args,
    ]


def check_devices(num_processes: int) -> None:
    import torch

    if placement().on_gpu and torch.cuda.device_count() < num_processes:
        raise ValueError(f"train.num_processes is {num_processes} but {torch.cuda.device_count()} GPU(s) are "
                         f"visible: on GPUs it is one process per GPU")


def launch(job: TrainingJob, tokenized_path, key: str, checkpoints: Path, out_dir: Path, run: AssetRun) -> None:
    """Train with `job.train.num_processes` processes; on return out_dir holds what the single-process path writes."""
    n = job.train.num_processes
    check_devices(n)
    threads = threads_per_process(job.train)
    with tempfile.TemporaryDirectory(prefix="ftlab-ddp-") as scratch:
        job_file = Path(scratch) / "job.json"
        job_file.write_text(job.model_dump_json(), encoding="utf-8")
        worker_args = ["--job", str(job_file), "--tokenized", str(tokenized_path), "--checkpoints", str(checkpoints),
                       "--out", str(out_dir), "--key", key,
                       "--tracking-uri", run.client.tracking_uri, "--run-id", run.run_id]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
               "TOKENIZERS_PARALLELISM": "false", "TQDM_MININTERVAL": "5"}
        log.info("training with %d processes, %d thread(s) each", n, threads)
        run_streaming(launch_command(n, threads, worker_args), env, n)
    if not (out_dir / "manifest.json").is_file():
        raise DistributedTrainingError(f"the {n} training processes exited cleanly but rank 0 wrote no manifest.json")


def run_streaming(command: list[str], env: dict, num_processes: int) -> None:
    """Run `command`, logging its merged stdout/stderr line by line; raise with the tail on a non-zero exit."""
    log.info("%s", shlex.join(command))
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        try:
            for line in proc.stdout:
                if line := line.rstrip():
                    tail.append(line)
                    log.info("%s", line)
        except BaseException:
            proc.terminate()  # torchrun's agent passes the signal on to every rank
            raise
    if proc.returncode != 0:
        raise DistributedTrainingError(
            f"distributed training ({num_processes} processes) failed with exit code {proc.returncode}; "
            f"last lines of its output:\n" + "\n".join(tail)
        )


def fingerprint(token_ids) -> str:
    import numpy as np

    return hashlib.sha256(np.asarray(token_ids, dtype=np.int64).tobytes()).hexdigest()[:16]


class SeenExamples:
    """Fingerprints of the real (unpadded) tokens of every train example one rank trained on."""

    def __init__(self):
        self.count = 0
        self.fingerprints: set[str] = set()

    def record(self, inputs: dict) -> None:
        ids = inputs["input_ids"].cpu()
        mask = inputs.get("attention_mask")
        keep = mask.cpu().bool() if mask is not None else ids.new_ones(ids.shape, dtype=bool)
        self.fingerprints.update(fingerprint(row[k].tolist()) for row, k in zip(ids, keep))
        self.count += len(ids)

    def write(self, path: Path, rank: int, world_size: int, record: dict | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rank": rank, "world_size": world_size, "examples": self.count,
                                    "fingerprints": sorted(self.fingerprints), **(record or {})}), encoding="utf-8")


def mlflow_sink(tracking_uri: str, run_id: str):
    from mlflow import MlflowClient

    run = AssetRun(MlflowClient(tracking_uri=tracking_uri), run_id, Path(tempfile.gettempdir()))
    return lambda metrics, step: run.log_metrics(metrics, step=step)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One rank of a data-parallel adapter training run.")
    for name in ("--job", "--tokenized", "--checkpoints", "--out", "--key", "--tracking-uri", "--run-id"):
        parser.add_argument(name, required=True)
    return parser.parse_args(argv)


def train_rank(job: TrainingJob, tokenized_path, checkpoints: Path, out: Path, key: str, tracking_uri: str,
               run_id: str, rank: int, world_size: int, record: dict | None = None):
    """What one rank of any data-parallel launcher does: train on its shard, write its examples (with `record`,
    e.g. the node it ran on); rank 0 alone streams metrics and writes the outputs."""
    from ftlab_pipelines.core.training import recipe

    seen = SeenExamples()
    on_log = mlflow_sink(tracking_uri, run_id) if rank == 0 else None
    result = recipe.fit(job, tokenized_path, checkpoints, out, on_log=on_log, on_train_batch=seen.record)
    seen.write(out / RANK_EXAMPLES / f"rank{rank}.json", rank, world_size, record)
    log.info("trained on %d examples (%d distinct)", seen.count, len(seen.fingerprints))
    if rank == 0:
        recipe.write_outputs(result, out, key, world_size)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    import torch
    import torch.distributed as dist

    from ftlab_pipelines.core.training import recipe

    if placement().on_gpu:  # models are loaded onto "cuda" before the Trainer picks this rank's GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    job = recipe.TrainingJob.model_validate_json(Path(args.job).read_text(encoding="utf-8"))
    train_rank(job, args.tokenized, Path(args.checkpoints), Path(args.out), args.key, args.tracking_uri, args.run_id,
               rank, world_size)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
