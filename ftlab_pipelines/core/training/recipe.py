"""The training recipe: build the tokenizer and LoRA model as the lab says, train, write the outputs.

Every process of a distributed run calls `fit` exactly as a single-process run does."""

from __future__ import annotations

from pathlib import Path

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.evaluation import plots
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.text import tokenize
from ftlab_pipelines.core.training import train


def fit(lab: LabConfig, tokenized_path, checkpoints: Path, out_dir: Path, **hooks) -> train.TrainResult:
    """`hooks`: `on_log` / `on_train_batch` of `train.train_adapter`."""
    from transformers import set_seed

    set_seed(lab.train.seed)  # LoRA initialisation and data order; the training entry point owns the global seed
    tokenizer = models.load_tokenizer(lab.model)
    if lab.is_generative:
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
