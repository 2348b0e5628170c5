"""adapter: LoRA/QLoRA fine-tune with checkpoints and resume; reuses a finished adapter with the same key."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ftlab_pipelines.core import artifacts, distributed, guards, models, plots, settings, tokenize, train
from ftlab_pipelines.core.labs import LabConfig, stable_hash
from ftlab_pipelines.core.stages import Markdown, StageResult
from ftlab_pipelines.core.tracking import AssetRun

log = logging.getLogger(__name__)


def adapter_key(lab: LabConfig, tokenized: dict) -> str:
    return stable_hash({"tokenized": tokenized["key"], "model": lab.model.model_dump(mode="json"),
                        "peft": lab.peft.model_dump(mode="json"), "train": lab.train.model_dump(mode="json")})


def checkpoint_dir(lab: LabConfig, key: str):
    return settings.ftlab_home() / "work" / lab.name / "adapter" / key / "checkpoints"


def fit(lab: LabConfig, tokenized_path, checkpoints: Path, out_dir: Path, **hooks) -> train.TrainResult:
    """Build the tokenizer and LoRA model as the lab says and train them; every process of a distributed run
    does exactly this. `hooks`: `on_log` / `on_train_batch` of `train.train_adapter`."""
    tokenizer = models.load_tokenizer(lab.model)
    if lab.is_generative:
        from transformers import set_seed

        set_seed(lab.train.seed)
        model = models.attach_lora(models.load_causal_lm(lab.model), lab.peft, task_type="CAUSAL_LM")
    else:
        model = models.attach_lora(models.load_classifier(lab.model, lab.labels, seed=lab.train.seed), lab.peft)
    return train.train_adapter(
        model, tokenizer, tokenize.load_tokenized(tokenized_path), lab.train,
        checkpoint_dir=checkpoints, out_dir=out_dir,
        sft_max_length=lab.model.max_length if lab.is_generative else None, **hooks,
    )


def write_outputs(result: train.TrainResult, out_dir: Path, key: str, num_processes: int) -> None:
    artifacts.write_json(out_dir / "log_history.json", result.log_history)
    plots.loss_curves_png(result.log_history, out_dir / "loss_curves.png")
    artifacts.write_json(out_dir / "manifest.json",
                         {"metrics": result.metrics, "key": key, "num_processes": num_processes})


def _train(lab: LabConfig, tokenized: dict, key: str, run: AssetRun, tmp: Path) -> None:
    if lab.train.num_processes > 1:
        # The workers stream metrics to `run` (rank 0) and write the outputs into tmp themselves.
        distributed.launch(lab, tokenized["path"], key, checkpoint_dir(lab, key), tmp, run)
        return
    result = fit(lab, tokenized["path"], checkpoint_dir(lab, key), tmp,
                 on_log=lambda metrics, step: run.log_metrics(metrics, step=step))
    write_outputs(result, tmp, key, 1)


def build_adapter(lab: LabConfig, tokenized: dict, run: AssetRun) -> StageResult:
    key = adapter_key(lab, tokenized)
    out = artifacts.stage_dir(lab.name, "adapter", key)
    reused = artifacts.is_complete(out)
    if reused:
        log.info("adapter %s already trained with this exact config and data: reusing it", key)
        guards.require_safetensors(out, "adapter_model", "adapter")
    else:
        guards.check_memory(lab.model.name, models.resolve_model(lab.model.name), lab.model.quantization,
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
