"""adapter: LoRA/QLoRA fine-tune with checkpoints and resume; reuses a finished adapter with the same key."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config import settings
from ftlab_pipelines.core.config.labs import LabConfig, stable_hash
from ftlab_pipelines.core.evaluation import plots
from ftlab_pipelines.core.modeling import models, safetensors_check
from ftlab_pipelines.core.stages import Markdown, StageResult
from ftlab_pipelines.core.tracking import AssetRun
from ftlab_pipelines.core.training import distributed, memory, recipe

log = logging.getLogger(__name__)


def adapter_key(lab: LabConfig, tokenized: dict) -> str:
    return stable_hash({"tokenized": tokenized["key"], "model": lab.model.model_dump(mode="json"),
                        "peft": lab.peft.model_dump(mode="json"), "train": lab.train.model_dump(mode="json")})


def checkpoint_dir(lab: LabConfig, key: str):
    return settings.ftlab_home() / "work" / lab.name / "adapter" / key / "checkpoints"


def _train(lab: LabConfig, tokenized: dict, key: str, run: AssetRun, tmp: Path) -> None:
    if lab.train.num_processes > 1:
        # The workers stream metrics to `run` (rank 0) and write the outputs into tmp themselves.
        distributed.launch(lab, tokenized["path"], key, checkpoint_dir(lab, key), tmp, run)
        return
    result = recipe.fit(lab, tokenized["path"], checkpoint_dir(lab, key), tmp,
                 on_log=lambda metrics, step: run.log_metrics(metrics, step=step))
    recipe.write_outputs(result, tmp, key, 1)


def build_adapter(lab: LabConfig, tokenized: dict, run: AssetRun) -> StageResult:
    key = adapter_key(lab, tokenized)
    out = artifacts.stage_dir(lab.name, "adapter", key)
    reused = artifacts.is_complete(out)
    if reused:
        log.info("adapter %s already trained with this exact config and data: reusing it", key)
        safetensors_check.require_safetensors(out, "adapter_model", "adapter")
    else:
        memory.check_memory(lab.model.name, models.resolve_model(lab.model.name), lab.model.quantization,
                            lab.train.num_processes)
        with artifacts.atomic_dir(out) as tmp:
            _train(lab, tokenized, key, run, tmp)
        # The finished adapter is in place, so the checkpoints are no longer the only copy.
        shutil.rmtree(checkpoint_dir(lab, key).parent, ignore_errors=True)
    metrics = artifacts.read_json(out / "manifest.json")["metrics"]
    run.set_tags({"data_hash": tokenized["key"], "adapter_key": key, "reused": reused})
    run.log_params({"model": lab.model.model_dump(mode="json"), "peft": lab.peft.model_dump(mode="json"),
                    "train": lab.train.model_dump(mode="json")})
    run.log_metrics({**metrics, "reused": float(reused)})
    run.log_artifact(out / "loss_curves.png")
    run.log_artifact(out / "log_history.json")
    manifest = {"key": key, "path": str(out), "metrics": metrics, "tokenized_key": tokenized["key"]}
    metadata = {
        "adapter_key": key,
        "reused": reused,
        "trainable_params": int(metrics["trainable_params"]),
        "train_steps": int(metrics["train_steps"]),
        "tokens_per_s": metrics["tokens_per_s"],  # all processes together
        "world_size": int(metrics.get("world_size", 1)),
        "peak_rss_mb": metrics["peak_rss_mb"],
        "train_loss": metrics["train_loss"],
        "loss_curves": Markdown(plots.markdown_image(out / "loss_curves.png", "loss curves")),
        "path": out,
    }
    return StageResult(manifest, metadata, data_version=key)
