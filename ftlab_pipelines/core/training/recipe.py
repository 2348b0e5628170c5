"""The training recipe: build the tokenizer and the model (LoRA or whole) as the job says, train, write the outputs.

Every process of a distributed run calls `fit` exactly as a single-process run does."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.labs import ModelConfig, PeftConfig, TrainConfig
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.text import tokenize
from ftlab_pipelines.core.training import train


class TrainingJob(BaseModel):
    """The part of a lab that training reads; it travels as JSON to the processes of a distributed run."""

    model: ModelConfig
    peft: PeftConfig
    train: TrainConfig
    labels: list[str]
    generative: bool

    @classmethod
    def from_lab(cls, lab, model_cache: Path | None = None) -> TrainingJob:
        """`model.name` resolved to its local directory here, so every training process loads the same files."""
        model = models.resolved(lab.model, model_cache) if model_cache else lab.model
        return cls(model=model, peft=lab.peft, train=lab.train, labels=lab.labels, generative=lab.is_generative)


def build_model(job: TrainingJob):
    """The model as the job trains it: a LoRA-wrapped (or whole, peft.method full) classifier or causal LM."""
    if job.generative:
        return models.prepare_for_training(models.load_causal_lm(job.model), job.peft, task_type="CAUSAL_LM")
    return models.prepare_for_training(models.load_classifier(job.model, job.labels, seed=job.train.seed), job.peft)


def fit(job: TrainingJob, tokenized_path, checkpoints: Path, out_dir: Path, **hooks) -> train.TrainResult:
    """`hooks`: `on_log` / `on_train_batch` of `train.train_adapter`."""
    from transformers import set_seed

    set_seed(job.train.seed)  # LoRA initialisation and data order: the training entry point owns the global seed
    tokenizer = models.load_tokenizer(job.model)
    return train.train_adapter(
        build_model(job), tokenizer, tokenize.load_tokenized(tokenized_path), job.train,
        checkpoint_dir=checkpoints, out_dir=out_dir,
        sft_max_length=job.model.max_length if job.generative else None, **hooks,
    )


def write_outputs(result: train.TrainResult, out_dir: Path, key: str, num_processes: int) -> None:
    from ftlab_pipelines.core.evaluation import plots

    artifacts.write_json(out_dir / "log_history.json", result.log_history)
    plots.loss_curves_png(result.log_history, out_dir / "loss_curves.png")
    artifacts.write_json(out_dir / "manifest.json",
                         {"metrics": result.metrics, "key": key, "num_processes": num_processes})
