"""adapter: LoRA/QLoRA (or full) fine-tune with checkpoints (in the stage's scratch dir) and resume."""

from __future__ import annotations

from pathlib import Path

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.evaluation import plots
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.modeling.safetensors_check import require_safetensors
from ftlab_pipelines.core.stages import Markdown
from ftlab_pipelines.core.stages.results import Adapter, Tokenized
from ftlab_pipelines.core.stages.runner import (
    Prepared,
    Report,
    StageContext,
    Target,
    scratch_dir,
)
from ftlab_pipelines.core.training import distributed, memory, recipe

CHECKPOINTS = "checkpoints"


def checkpoint_dir(settings: Settings, lab: str, key: str) -> Path:
    """Where the adapter of `key` checkpoints: the stage's scratch dir, kept when training fails."""
    return scratch_dir(settings, lab, "adapter", key) / CHECKPOINTS


def build(lab, upstream: dict, prepared: Prepared, target: Target, ctx: StageContext) -> Adapter:
    tokenized: Tokenized = upstream["tokenized"]
    job = recipe.TrainingJob.from_lab(lab, ctx.settings.model_cache)
    if job.train.ray is None:  # on a cluster the workers' nodes hold the memory, not this one
        memory.check_memory(lab.model.name, job.model.name, lab.model.quantization, lab.train.num_processes,
                            limit_mb=ctx.settings.memory_limit_mb, full=lab.peft.method == "full")
    checkpoints = target.scratch / CHECKPOINTS  # outside tmp: a crashed run resumes from them
    if job.train.ray is not None:  # the workers (rank 0) stream metrics and write the outputs into tmp themselves
        from ftlab_pipelines.core.training import ray_train

        ray_train.launch(job, tokenized.dataset_path, target.key, checkpoints, target.tmp, ctx.run)
    elif job.train.num_processes > 1:
        distributed.launch(job, tokenized.dataset_path, target.key, checkpoints, target.tmp, ctx.run)
    else:
        result = recipe.fit(job, tokenized.dataset_path, checkpoints, target.tmp,
                            on_log=lambda metrics, step: ctx.run.log_metrics(metrics, step=step))
        recipe.write_outputs(result, target.tmp, target.key, 1)
    metrics = artifacts.read_json(target.tmp / "manifest.json")["metrics"]
    return Adapter(key=target.key, dir=str(target.out), metrics=metrics, data_key=tokenized.key)


def report(lab, upstream: dict, result: Adapter, ctx: StageContext, reused: bool,
           prepared: Prepared) -> Report:
    if reused:
        require_safetensors(result.path, models.trained_weights_stem(result.path), "adapter")
    metrics, run = result.metrics, ctx.run
    run.set_tags({"data_hash": result.data_key})
    run.log_params({"model": lab.model.model_dump(mode="json"), "peft": lab.peft.model_dump(mode="json"),
                    "train": lab.train.model_dump(mode="json")})
    run.log_metrics({**metrics, "reused": float(reused)})
    run.log_artifact(result.path / "loss_curves.png")
    run.log_artifact(result.path / "log_history.json")
    metadata = {
        "trainable_params": int(metrics["trainable_params"]),
        "train_steps": int(metrics["train_steps"]),
        "tokens_per_s": metrics["tokens_per_s"],  # all processes together
        "world_size": int(metrics.get("world_size", 1)),
        "peak_rss_mb": metrics["peak_rss_mb"],
        "train_loss": metrics["train_loss"],
        **({"resumed_from_step": int(metrics["resumed_from_step"])} if metrics.get("resumed_from_step") else {}),
        "loss_curves": Markdown(plots.markdown_image(result.path / "loss_curves.png", "loss curves")),
    }
    return Report(metadata)
