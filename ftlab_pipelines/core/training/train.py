"""Fine-tune a LoRA adapter with the HF Trainer: dynamic padding, length grouping, bf16 autocast, resume.

The Trainer gives us checkpoint rotation that never deletes a checkpoint before its successor is
written, exact resume (optimizer, scheduler, RNG, data order) and the LengthGroupedSampler; we add
the lab config mapping, throughput and memory accounting, and a metrics hook for MLflow.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ftlab_pipelines.core import progress
from ftlab_pipelines.core.config.labs import TrainConfig
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.modeling.device import placement
from ftlab_pipelines.core.text import tokenize
from ftlab_pipelines.core.training import cpu_dropout, sampling

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    adapter_dir: Path
    log_history: list[dict]
    metrics: dict[str, float]


def last_checkpoint(checkpoint_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not checkpoint_dir.is_dir():
        return None
    return get_last_checkpoint(str(checkpoint_dir))


def optimizer_name(config: TrainConfig, quantized: bool) -> str:
    """QLoRA on CUDA pages 8-bit AdamW states (the QLoRA recipe); bitsandbytes' optimizers need a GPU. Otherwise
    torch's fused AdamW (CPU and CUDA since torch 2.4; the Trainer's own default since 2.8): one kernel over all
    parameters, where the foreach one makes a pass per operation. On this 2-core CPU, a step over MiniLM's 22.7M
    weights took 15.6 ms against 75 ms; the same arithmetic, so only the speed changes."""
    if config.optim != "auto":
        return config.optim
    return "paged_adamw_8bit" if quantized and placement().on_gpu else "adamw_torch_fused"


def world_size() -> int:
    """Processes of this training run, as the launcher (torchrun, Ray Train) set it; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def ddp_backend() -> str | None:
    """gloo for DDP on CPU (accelerate would pick MPI when torch has it); None: NCCL on GPUs, or no DDP at all
    (accelerate fails on a backend without a process group)."""
    return "gloo" if world_size() > 1 and not placement().on_gpu else None


def training_arguments(config: TrainConfig, checkpoint_dir: Path, bf16: bool, has_eval: bool,
                       quantized: bool = False, args_class=None, **extra):
    from transformers import TrainingArguments

    return (args_class or TrainingArguments)(
        output_dir=str(checkpoint_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear",
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        use_cpu=not placement().on_gpu,
        ddp_backend=ddp_backend(),
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        eval_strategy=("steps" if config.keep_best else "epoch") if has_eval else "no",
        eval_steps=config.save_steps if config.keep_best else None,
        load_best_model_at_end=config.keep_best and has_eval,
        metric_for_best_model="eval_loss" if config.keep_best and has_eval else None,
        greater_is_better=False if config.keep_best and has_eval else None,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        remove_unused_columns=True,
        length_column_name="length",
        optim=optimizer_name(config, quantized),
        gradient_checkpointing=config.gradient_checkpointing,
        torch_compile=config.torch_compile,
        # Evaluation during training needs only the loss; without this the Trainer gathers every logit of the
        # validation set (rows x length x vocab for an LM: ~1 GB for 43 short SmolLM2 replies) before scoring.
        prediction_loss_only=True,
        **extra,
    )


def metrics_callback(on_log: Callable[[dict, int], None]):
    """A TrainerCallback that forwards numeric logs to a plain function (the caller picks the sink)."""
    from transformers import TrainerCallback

    class ForwardLogs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                on_log({k: v for k, v in logs.items() if isinstance(v, int | float)}, state.global_step)

    return ForwardLogs()


def reset_peak_rss() -> None:
    """Linux: start a new high-water mark, so the peak measured is training's, not the stages run before it in
    the same process (e.g. `ftlab run` materializes every asset in one process)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _proc_status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status (Linux) in MB, or None where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory since `reset_peak_rss` (VmHWM), else since the process started."""
    peak = _proc_status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory now, e.g. right after the model is loaded; 0 where unavailable."""
    return _proc_status_mb("VmRSS") or 0.0


def classification_trainer(model, tokenizer, dataset, config: TrainConfig, checkpoint_dir: Path, bf16: bool,
                           callbacks: list):
    from transformers import DataCollatorWithPadding, Trainer

    eval_set = dataset["validation"] if "validation" in dataset else None
    if eval_set is not None and "length" in eval_set.column_names:
        # The evaluation loss is a mean over rows, whatever their order: in length order each batch pads to about
        # its own rows' length instead of the longest of a random batch.
        eval_set = eval_set.sort("length")
    return sampling.with_length_window(Trainer, config.length_group_batches or sampling.CLASSIFICATION_WINDOW)(
        model=model,
        # A classification loss is a mean over the rank's batch: the Trainer's default would count the labels of
        # every rank and scale the loss by the world size for a loss that divides by them (an LM's), which
        # doubled the loss and its gradients with two ranks (and so the clipping of them).
        args=training_arguments(config, checkpoint_dir, bf16, eval_set is not None, is_quantized(model),
                                average_tokens_across_devices=False),
        train_dataset=dataset["train"],
        eval_dataset=eval_set,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
        processing_class=tokenizer,
        callbacks=callbacks,
        compute_loss_func=weighted_loss(tokenize.column_array(dataset["train"], "labels"), model.config.num_labels)
        if config.class_weighted_loss else None,
    )


def inverse_frequency_weights(labels, n_classes: int) -> torch.Tensor:
    """n / (K * count_k): every class contributes equally to the loss (absent classes get weight 0)."""
    counts = torch.bincount(torch.as_tensor(list(labels)), minlength=n_classes).float()
    weights = counts.sum() / (n_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def weighted_loss(labels, n_classes: int):
    weights = inverse_frequency_weights(labels, n_classes)

    def loss(outputs, targets, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        return torch.nn.functional.cross_entropy(logits.float(), targets, weight=weights.to(logits.device))

    return loss


def packing_tokens(lengths, batch_size: int, max_length: int) -> int:
    """Bin size for packed SFT: about `batch_size` rows' tokens, so a packed step weighs what a padded batch of
    the same `batch_size` did (same learning-rate semantics), and never shorter than a row may be."""
    mean = float(sum(lengths)) / max(len(lengths), 1)
    return max(max_length, int(-(-batch_size * mean // 64) * 64))


def attention_for_training(setting: str) -> str:
    if setting != "auto":
        return setting
    return "sdpa" if placement().on_gpu else "eager"


def sft_trainer(model, tokenizer, dataset, config: TrainConfig, checkpoint_dir: Path, bf16: bool,
                callbacks: list, max_length: int):
    """TRL's SFTTrainer on our pre-tokenized prompt-completion sets: it builds the labels (-100 on prompt
    tokens, from `completion_mask`), and either packs rows into bins (best-fit decreasing, padding-free: one
    flat sequence per step whose position ids restart at every row, from which transformers builds a
    block-diagonal causal mask) or pads per batch. No hand-written masking either way."""
    from trl import SFTConfig, SFTTrainer

    eval_set = dataset["validation"] if "validation" in dataset and len(dataset["validation"]) else None
    if not config.length_group_batches:  # SFT default: plain random batches (see core/sampling.py)
        config = config.model_copy(update={"group_by_length": False})
    if config.packing:
        bin_tokens = config.packing_tokens or packing_tokens(tokenize.lengths_of(dataset["train"]),
                                                             config.batch_size, max_length)
        log.info("packing: bins of %d tokens (about %d rows) per micro-batch", bin_tokens, config.batch_size)
        # One bin per micro-batch: padding-free batches are flattened into one sequence anyway.
        config = config.model_copy(update={"group_by_length": False, "batch_size": 1, "eval_batch_size": 1})
        batching = dict(max_length=bin_tokens, packing=True, packing_strategy="bfd", padding_free=True,
                        pad_to_multiple_of=None)
    else:
        batching = dict(max_length=max_length, packing=False, pad_to_multiple_of=8)
    args = training_arguments(config, checkpoint_dir, bf16, eval_set is not None, is_quantized(model),
                              args_class=SFTConfig, completion_only_loss=True, dataset_num_proc=None, **batching)
    trainer_class = SFTTrainer if placement().on_gpu else cpu_sft_trainer_class(model, bf16)
    if config.group_by_length:
        trainer_class = sampling.with_length_window(trainer_class, config.length_group_batches)
    return trainer_class(model=model, args=args, train_dataset=dataset["train"], eval_dataset=eval_set,
                         processing_class=tokenizer, callbacks=callbacks)


def cpu_sft_trainer_class(model, bf16: bool):
    """SFTTrainer with a CPU-friendly loss. TRL 1.x computes the loss through a tiled "fused LM head" kernel that
    saves GPU memory but runs ~8x slower per step on CPU (20 s vs 2.5 s for SmolLM2, batch 8x112, measured
    here). Instead the LM head runs on the reply tokens only (core/reply_loss.py), or, where the model's
    outputs do not allow that (checked now, before the Trainer wraps the forward in autocast), the model's own
    loss is used. Labels, masking and collation stay TRL's."""
    from transformers import Trainer
    from trl import SFTTrainer

    from ftlab_pipelines.core.training import reply_loss

    reply_only = reply_loss.compute_loss_func(model, bf16) if reply_loss.head_reads_last_hidden_state(model) else None

    class CpuSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if reply_only is not None and "labels" in inputs and not return_outputs:
                self.compute_loss_func = reply_only
                inputs = {**inputs, **reply_loss.FORWARD_KWARGS}
            else:
                self.compute_loss_func = None
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return CpuSFTTrainer


def watch_train_batches(trainer, on_batch: Callable[[dict], None]) -> None:
    """Call `on_batch(inputs)` before each training step; the data collator would also see evaluation batches."""
    step = trainer.training_step

    def training_step(model, inputs, *args, **kwargs):
        on_batch(inputs)
        return step(model, inputs, *args, **kwargs)

    trainer.training_step = training_step


class TrainedTokens:
    """Real (non-padding) tokens of the train batches this process stepped through. Batches a resume skips never
    reach a training step, so after a resume only the steps trained since are counted."""

    def __init__(self):
        self.count = 0  # a tensor once a batch is seen: summed on the batch's device, read once at the end

    def record(self, inputs: dict) -> None:
        mask = inputs.get("attention_mask")
        # Packed (padding-free) batches carry no mask: every token in them is real.
        self.count += mask.sum() if mask is not None else inputs["input_ids"].numel()

    def all_processes(self, trainer) -> int:
        """The sum over the processes of a distributed run (every process must call this)."""
        total = torch.as_tensor(self.count, device=trainer.args.device, dtype=torch.int64)
        return int(trainer.accelerator.reduce(total, reduction="sum"))


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_quantized", False))


def train_adapter(
    model,
    tokenizer,
    dataset,
    config: TrainConfig,
    *,
    checkpoint_dir: Path,
    out_dir: Path,
    on_log: Callable[[dict, int], None] | None = None,
    on_train_batch: Callable[[dict], None] | None = None,
    sft_max_length: int | None = None,
) -> TrainResult:
    """Train (resuming from the newest checkpoint in `checkpoint_dir`) and save the adapter to `out_dir`.

    With `sft_max_length` the model is a causal LM trained on replies only (TRL); otherwise a classifier.
    `on_train_batch` sees every collated train batch of this process (not evaluation batches). Under a
    distributed launch only the main process writes `out_dir` (the Trainer saves on world rank 0 only).
    """
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    where = placement(config.bf16)
    bf16 = where.bf16
    train_set = dataset["train"]
    callbacks = [progress.training_callback(train_set), *([metrics_callback(on_log)] if on_log else [])]
    if sft_max_length:
        model.set_attn_implementation(attention_for_training(config.attention))
        trainer = sft_trainer(model, tokenizer, dataset, config, checkpoint_dir, bf16, callbacks, sft_max_length)
    else:
        trainer = classification_trainer(model, tokenizer, dataset, config, checkpoint_dir, bf16, callbacks)
    trained_tokens = TrainedTokens()

    def on_batch(inputs: dict) -> None:
        trained_tokens.record(inputs)
        if on_train_batch:
            on_train_batch(inputs)

    watch_train_batches(trainer, on_batch)
    from ftlab_pipelines.core.training import checkpoints, nan_guard

    nan_guard.stop_on_nonfinite_loss(trainer, checkpoint_dir)
    rss_before_train = current_rss_mb()
    reset_peak_rss()
    # set aside a half-written one (in a distributed run: one that lacks a rank's RNG state), refuse a corrupt one
    resume_from = checkpoints.resumable_checkpoint(checkpoint_dir, world_size=world_size())
    if resume_from:
        log.info("resuming from checkpoint %s", resume_from)
    if config.base_dropout is not None:
        models.set_base_dropout(model, config.base_dropout)
    fast_dropout_layers = cpu_dropout.use_fast_dropout(model) if config.fast_dropout and not where.on_gpu else 0
    fast_attention = (config.fast_attention_dropout and not where.on_gpu and not sft_max_length
                      and cpu_dropout.use_fast_attention_dropout(model))
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    trainer.save_model(str(out_dir))

    steps_done = trainer.state.global_step
    epochs_done = trainer.state.epoch or config.epochs
    # This run's tokens (all processes) over this run's seconds: a resumed run does not count the checkpoint's.
    tokens = trained_tokens.all_processes(trainer)
    metrics = {
        "train_loss": float(output.training_loss),
        "train_seconds": round(seconds, 2),
        "train_steps": int(steps_done),
        "epochs": float(epochs_done),
        "train_tokens": float(tokens),
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0,
        "world_size": float(trainer.args.world_size),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_train_mb": round(rss_before_train, 1),
        "bf16": float(bf16),
        "fast_dropout_layers": float(fast_dropout_layers),
        "fast_attention_dropout": float(fast_attention),
        "resumed": float(resume_from is not None),
        "resumed_from_step": float(checkpoints.step_of(resume_from) if resume_from else 0),
        **{k: float(v) for k, v in models.count_parameters(model).items()},
    }
    if trainer.state.best_metric is not None:
        metrics["best_eval_loss"] = round(float(trainer.state.best_metric), 4)
        best = trainer.state.best_model_checkpoint or ""
        metrics["best_step"] = float(best.rsplit("-", 1)[-1]) if best.rsplit("-", 1)[-1].isdigit() else -1.0
    if where.on_gpu:
        metrics["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return TrainResult(out_dir, trainer.state.log_history, metrics)
