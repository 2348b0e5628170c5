"""adapter: LoRA/QLoRA fine-tune with checkpoints and resume; reuses a finished adapter with the same key."""

from __future__ import annotations

import logging
import shutil

from ftlab_pipelines.core import artifacts, models, plots, settings, tokenize, train
from ftlab_pipelines.core.labs import LabConfig, stable_hash
from ftlab_pipelines.core.stages import Markdown, StageResult
from ftlab_pipelines.core.tracking import AssetRun

log = logging.getLogger(__name__)


def adapter_key(lab: LabConfig, tokenized: dict) -> str:
    return stable_hash({"tokenized": tokenized["key"], "model": lab.model.model_dump(mode="json"),
                        "peft": lab.peft.model_dump(mode="json"), "train": lab.train.model_dump(mode="json")})


def checkpoint_dir(lab: LabConfig, key: str):
    return settings.ftlab_home() / "work" / lab.name / "adapter" / key / "checkpoints"


def _train(lab: LabConfig, tokenized: dict, key: str, run: AssetRun, tmp) -> dict:
    tokenizer = models.load_tokenizer(lab.model)
    if lab.is_generative:
        from transformers import set_seed

        set_seed(lab.train.seed)
        model = models.attach_lora(models.load_causal_lm(lab.model), lab.peft, task_type="CAUSAL_LM")
    else:
        model = models.attach_lora(models.load_classifier(lab.model, lab.labels, seed=lab.train.seed), lab.peft)
    result = train.train_adapter(
        model, tokenizer, tokenize.load_tokenized(tokenized["path"]), lab.train,
        checkpoint_dir=checkpoint_dir(lab, key), out_dir=tmp,
        on_log=lambda metrics, step: run.log_metrics(metrics, step=step),
        sft_max_length=lab.model.max_length if lab.is_generative else None,
    )
    artifacts.write_json(tmp / "log_history.json", result.log_history)
    plots.loss_curves_png(result.log_history, tmp / "loss_curves.png")
    artifacts.write_json(tmp / "manifest.json", {"metrics": result.metrics, "key": key})
    return result.metrics


def build_adapter(lab: LabConfig, tokenized: dict, run: AssetRun) -> StageResult:
    key = adapter_key(lab, tokenized)
    out = artifacts.stage_dir(lab.name, "adapter", key)
    reused = artifacts.is_complete(out)
    if reused:
        log.info("adapter %s already trained with this exact config and data: reusing it", key)
    else:
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
        "tokens_per_s": metrics["tokens_per_s"],
        "peak_rss_mb": metrics["peak_rss_mb"],
        "train_loss": metrics["train_loss"],
        "loss_curves": Markdown(plots.markdown_image(out / "loss_curves.png", "loss curves")),
        "path": out,
    }
    return StageResult(manifest, metadata, data_version=key)
