"""A lab is one YAML file validated by `LabConfig`: one config model per pipeline stage (read by loading.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from ftlab_pipelines.core.config.base import Strict as _Strict
from ftlab_pipelines.core.config.evaluation import (  # noqa: F401  (re-exported: one import for every config)
    EvalConfig,
    GenerationEvalConfig,
    PrevalenceConfig,
    ThresholdConfig,
)


class LabConfigError(ValueError):
    """A lab file that cannot be used; the message names the file and the key."""


class SourceConfig(_Strict):
    """Where the raw data comes from (raw_dataset stage)."""

    hub_id: str | None = Field(None, description="Hugging Face dataset id, used when no local mirror is found.")
    hub_config: str | None = Field(None, description="Dataset config name on the hub (e.g. sentences_50agree).")
    hub_split: str = Field("train", description="Split to read from the hub dataset.")
    local_path: str | None = Field(
        None, description="File of a local mirror: absolute, relative to FTLAB_DATA_DIR (default ../shared/data), "
                          "or ./path for data shipped in the project."
    )
    format: Literal["auto", "csv", "tsv", "json", "jsonl", "parquet"] = Field(
        "auto", description="File format; auto picks it from the extension."
    )
    encoding: str = Field("utf-8", description="Text encoding of a CSV/TSV/JSON file.")
    rename: dict[str, str] = Field(
        default_factory=dict, description="Column renames applied after loading (source name -> lab name)."
    )
    label_names: dict[int, str] | None = Field(
        None, description="Map integer labels (as hub datasets store them) to label names."
    )
    text_column: str = Field("text", description="Column holding the model input text.")
    label_column: str = Field("label", description="Column holding the class label.")
    max_rows: int | None = Field(
        None, ge=10, description="Keep a stratified random subsample of this many rows (for quick runs and tests)."
    )
    dtype: Literal["str", "infer"] = Field(
        "str", description="str reads every CSV cell as text; infer lets pandas type numeric columns (tabular data)."
    )
    test_local_path: str | None = Field(
        None, description="An explicit test set (same columns), e.g. a sample at the natural class rate. Train and "
                          "validation then come from the main source, and split.test must be 0."
    )
    test_hub_split: str | None = Field(None, description="Hub split used as the explicit test set when offline "
                                                         "mirrors are missing (e.g. test).")
    test_max_rows: int | None = Field(None, ge=10, description="Subsample the explicit test set (quick runs).")

    @property
    def has_test_source(self) -> bool:
        return bool(self.test_local_path or self.test_hub_split)

    @model_validator(mode="after")
    def _one_source(self) -> SourceConfig:
        if not self.hub_id and not self.local_path:
            raise ValueError("set source.hub_id or source.local_path (or both)")
        return self


class SplitConfig(_Strict):
    """Deduplication, stratified split and rebalancing (splits stage)."""

    train: float = Field(0.7, gt=0, lt=1, description="Share of rows in the train split.")
    validation: float = Field(0.1, gt=0, lt=1, description="Share of rows in the validation split.")
    test: float = Field(0.2, ge=0, lt=1, description="Share of rows in the test split (0 with an explicit test source).")
    seed: int = Field(42, description="Seed of the split and of resampling.")
    dedupe: bool = Field(True, description="Drop exact duplicate texts before splitting, so splits cannot leak.")
    balance: Literal["none", "undersample", "upsample"] = Field(
        "none", description="Rebalance the train split only: undersample the majority or upsample the minority."
    )
    minority_share: float = Field(
        0.5, gt=0, le=0.5, description="Target share of the smallest class in train after rebalancing."
    )

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split.train + split.validation + split.test must be 1.0, got {total:g}")
        return self


class ModelConfig(_Strict):
    """Base model and how it is loaded (tokenized and adapter stages)."""

    name: str = Field(
        "all-minilm-l6-v2", description="Offline alias (all-minilm-l6-v2), a local directory or a hub model id."
    )
    max_length: int = Field(128, ge=8, le=8192, description="Token limit; longer inputs are truncated.")
    template: str = Field("{text}", description="Prompt template; `{text}` is replaced by the input text.")
    quantization: Literal["none", "4bit"] = Field(
        "none", description="4bit loads the base in bitsandbytes NF4 (QLoRA); the head stays in full precision."
    )
    trust_remote_code: bool = Field(False, description="Allow custom model code from the model repo.")


INSTRUCTION_TEMPLATE = "### Instruction:\n{system}\n\n### User:\n{user}\n\n### Response:\n"


class PromptConfig(_Strict):
    """How a row becomes prompt + completion for causal-LM SFT (tokenized, evaluation and chat)."""

    format: Literal["instruction", "chat"] = Field(
        "instruction", description="instruction: `instruction_template` + response + eos; chat: the tokenizer's "
                                   "own chat template (system, user, assistant)."
    )
    system: str = Field("", description="Persona or system message: the ### Instruction text, or the system turn.")
    user_column: str = Field("user", description="Column holding the user message (the prompt).")
    response_column: str = Field("response", description="Column holding the reply the model learns (completion).")
    rejected_column: str | None = Field(
        None, description="Preference data: column of the rejected reply. It is never trained on; evaluation "
                          "measures how often the model prefers response over rejected."
    )
    instruction_template: str = Field(
        INSTRUCTION_TEMPLATE, description="Prompt of the instruction format; {system} and {user} are filled in."
    )
    stop_strings: list[str] = Field(
        default_factory=lambda: ["### User", "### Instruction"],
        description="Generations are cut at the first of these (and at eos): the fix for run-on replies.",
    )


class RenderConfig(_Strict):
    """Tabular rows -> text prompts (tokenized stage): any CSV lab can turn its columns into the model input."""

    columns: list[str] = Field(min_length=1, description="Columns to include, in this order.")
    field_template: str = Field("{name}: {value}", description="How one field is written; {name} and {value}.")
    separator: str = Field(", ", description="Between fields.")
    decimals: int = Field(2, ge=0, le=10, description="Round numeric values to this many decimals.")
    names: dict[str, str] = Field(default_factory=dict, description="Display names of columns (default: as is).")
    prefix: str = Field("", description="Text before the first field (e.g. 'Transaction: ').")
    bins: int | None = Field(
        None, ge=2, le=20, description="Write each numeric column as its quantile bin (e.g. 'V14 very low') instead "
                                       "of its value. The edges come from the train split's distinct rows only and "
                                       "ship with the release, so predictions render new rows identically."
    )
    bin_words: list[str] | None = Field(
        None, description="The bins' words, lowest first (default: very low .. very high for up to 7 bins, else "
                          "q1 .. qN)."
    )

    @model_validator(mode="after")
    def _words_per_bin(self) -> RenderConfig:
        if self.bin_words is not None and (self.bins is None or len(self.bin_words) != self.bins):
            raise ValueError(f"render.bin_words has {len(self.bin_words)} words but render.bins is {self.bins}: "
                             f"give one word per bin")
        return self


class PeftConfig(_Strict):
    """What the adapter stage trains: a LoRA adapter (settings below), or every weight of a classifier."""

    method: Literal["lora", "full"] = Field(
        "lora", description="lora: a LoRA adapter on the frozen base model (a classifier's head is trained in full). "
                            "full: every weight, for a classifier whose model fits with its optimizer state (MiniLM: "
                            "23M parameters); the stage then writes the whole model (90 MB for MiniLM), and r, "
                            "alpha, dropout and target_modules are unused.",
    )
    freeze_embeddings: bool = Field(
        False, description="peft.method full: keep the token embedding matrix as pretrained (half of MiniLM's "
                           "weights). sms_spam: 14% faster, validation AP and log loss worse (bench/RESULTS.md).")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling alpha.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="Module names that get LoRA weights, or all-linear. Default: q_proj and v_proj on "
                          "decoder LLMs (Llama, Gemma, ...), query/key/value/dense on BERT-style encoders.",
    )


class RayTrainConfig(_Strict):
    """Train on a Ray cluster: the same recipe as train.num_processes, as DDP across the cluster's nodes (Ray Train)."""

    address: str = Field(
        "auto", description="The cluster: host:6379 (its GCS), ray://host:10001, or auto: RAY_ADDRESS, which Ray sets "
                            "when the adapter step itself runs on the cluster (the Ray deployment profile)."
    )
    num_workers: int = Field(2, ge=1, description="Training processes (DDP ranks); Ray spreads them over the nodes.")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs Ray reserves for each worker; its torch threads.")
    use_gpu: bool = Field(False, description="One GPU per worker (NCCL); off: gloo on CPU.")
    max_failures: int = Field(
        0, ge=-1, description="Restarts of the worker group after a worker or node dies (Ray Train's FailureConfig; "
                              "-1: unlimited). Each restart resumes from the last complete checkpoint. 0: fail at once "
                              "with the error; re-materializing resumes the same way."
    )


def _yaml_switch(value):
    """YAML 1.1 reads a bare `on` / `off` as true / false: take them as the words they were written as."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class TrainConfig(_Strict):
    """Optimisation settings (adapter stage)."""

    epochs: float = Field(3, gt=0, description="Passes over the train split.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    batch_size: int = Field(32, ge=1, description="Per-device train batch size.")
    eval_batch_size: int = Field(
        32, ge=1, description="Batch size for evaluation and prediction. On CPU larger is slower: MiniLM scores "
                              "sms_spam's test split in 3.1 s at 32, 4.6 s at 128 (and the Trainer's validation "
                              "pass takes 2.8 s at 32, 8.7 s at 128).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (LoRA wants more than full tuning).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps spent warming up the LR.")
    seed: int = Field(42, description="Seed of initialisation and data order.")
    bf16: Annotated[Literal["auto", "on", "off"], BeforeValidator(_yaml_switch)] = Field(
        "auto", description="bf16 autocast: auto turns it on where the hardware runs bf16 natively (CPU with "
                            "AMX/avx512_bf16, or a bf16 GPU); on asks for it and falls back to fp32 with a warning where "
                            "bf16 would be emulated; off never uses it."
    )
    group_by_length: bool = Field(True, description="Batch similar lengths together to cut padding.")
    length_group_batches: int | None = Field(
        None, ge=1, description="With group_by_length: how many batches are sorted by length, then trained in that "
                                "order. Few avoids long streaks of long (often one-label) batches; many cuts more "
                                "padding. Default: 4 for classification; none for SFT (random batches)."
    )
    packing: bool = Field(
        False, description="SFT: pack whole prompt+reply rows into bins (TRL best-fit decreasing) instead of padding "
                          "batches. Position ids restart at every row, so attention never crosses rows; a step "
                          "carries about batch_size rows' tokens (see packing_tokens)."
    )
    packing_tokens: int | None = Field(
        None, ge=8, description="SFT with packing: tokens per micro-batch (one bin). Default: batch_size x the mean "
                                "train row length, rounded up to 64 and at least model.max_length."
    )
    attention: Literal["auto", "eager", "sdpa"] = Field(
        "auto", description="Attention kernel while training a causal LM. auto: eager on CPU (torch's CPU "
                            "flash-attention backward is slower in bf16 here), sdpa on GPU."
    )
    save_steps: int = Field(100, ge=1, description="Write a resumable checkpoint every N optimizer steps.")
    logging_steps: int = Field(10, ge=1, description="Log loss every N steps.")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores).")
    optim: Literal["auto", "adamw_torch_fused", "adamw_torch", "paged_adamw_8bit", "adamw_8bit"] = Field(
        "auto", description="Optimizer; auto: paged 8-bit AdamW for a 4-bit model on CUDA, torch's fused AdamW "
                            "otherwise (adamw_torch: its per-operation version, 5x slower a step on CPU)."
    )
    class_weighted_loss: bool = Field(
        False, description="Weight the loss by inverse class frequency in train: an alternative to upsampling."
    )
    base_dropout: float | None = Field(
        None, ge=0, lt=1, description="Dropout of the base model's own layers while training (hidden states, "
                                      "attention probabilities, the head's input); LoRA's is peft.dropout. null keeps "
                                      "the model's config (MiniLM: 0.1).")
    fast_dropout: bool = Field(
        True, description="On CPU, draw dropout masks from 8-bit slices of 64-bit random words instead of one "
                          "Bernoulli draw per element (core/training/cpu_dropout.py): the drop rate rounded to "
                          "1/256, MiniLM trains about 1.35x as fast. No effect on a GPU.")
    fast_attention_dropout: bool = Field(
        True, description="Classifiers on CPU whose config has attention_probs_dropout_prob (the BERT family): "
                          "eager attention with the same cheaper masks on the attention probabilities, instead of "
                          "sdpa with torch's (core/training/cpu_dropout.py). No effect on a GPU or in SFT.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory (large models).")
    torch_compile: bool = Field(False, description="torch.compile the model: pays a compile per new batch shape, "
                                                   "so it wins on GPUs with long runs; measure before turning on.")
    keep_best: bool = Field(
        False, description="Evaluate on validation at every checkpoint and end with the one of lowest validation "
                           "loss (small SFT sets overfit after a few epochs)."
    )
    num_processes: int = Field(
        1, ge=1, description="Data-parallel training processes launched through accelerate (torchrun underneath): "
                             "DDP on gloo on CPU, NCCL on GPUs (one process per GPU). Rank 0 logs and saves."
    )
    ray: RayTrainConfig | None = Field(
        None, description="Train on a Ray cluster instead of this machine (Ray Train); unset: Ray is not imported."
    )

    @model_validator(mode="after")
    def _one_launcher(self) -> TrainConfig:
        if self.ray is not None and self.num_processes > 1:
            raise ValueError("set train.num_processes (processes on this machine) or train.ray.num_workers "
                             "(workers on a Ray cluster), not both")
        return self


class PublishConfig(_Strict):
    """Release of the adapter (published_adapter stage)."""

    registry_name: str | None = Field(None, description="MLflow registered model name (default ftlab-<lab>).")
    hub_repo: str | None = Field(None, description="Hugging Face repo to push to; needs HF_TOKEN in the env.")
    min_improvement: float = Field(0.0, ge=0, description="Margin by which a new model must beat the champion.")
    merge: bool = Field(
        False, description="Also keep the merged standalone model (merge_and_unload) in the release directory. It is "
                           "always built, checked for logit parity with base + adapter, and logged as the MLflow model."
    )
    parity_tolerance: float = Field(1e-3, gt=0, description="Max abs logit difference allowed between merged and "
                                                            "base + adapter.")


class ScheduleConfig(_Strict):
    """Retraining on a clock: a Dagster schedule of the lab's whole chain."""

    cron: str = Field(description="Cron expression of the retraining run, e.g. '0 3 * * 1' (Mondays 03:00).")
    timezone: str = Field("UTC", description="IANA timezone the cron is read in, e.g. Europe/Berlin.")
    enabled: bool = Field(False, description="Start the schedule running; otherwise it is defined but stopped "
                                             "until switched on in the UI.")

    @model_validator(mode="after")
    def _valid(self) -> ScheduleConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if len(self.cron.split()) != 5:
            raise ValueError(f"schedule.cron must have 5 fields (minute hour day month weekday), got {self.cron!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"schedule.timezone {self.timezone!r} is not an IANA timezone (e.g. UTC, Europe/Paris)")
        return self


class InboxConfig(_Strict):
    """New-data drops: files in $FTLAB_HOME/inbox/<lab>/ trigger a retraining run (a Dagster sensor)."""

    enabled: bool = Field(True, description="Run the inbox sensor (it is cheap: it hashes new files only).")
    mode: Literal["replace", "append"] = Field(
        "replace", description="replace: the dropped file is the lab's new dataset snapshot; append: its rows are "
                               "added to the configured source."
    )
    patterns: list[str] = Field(
        default_factory=lambda: ["*.csv", "*.tsv", "*.json", "*.jsonl", "*.parquet"],
        description="File name patterns the sensor picks up (other files are ignored).",
    )
    interval_seconds: int = Field(30, ge=5, description="How often the sensor looks at the folder.")


class LabConfig(_Strict):
    """One fine-tuning job, from raw data to a published adapter."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Lab id; the asset key prefix.")
    description: str = Field("", description="What the lab is for.")
    task: Literal["classification", "sft"] = Field(
        "classification", description="classification: a label per text; sft: causal-LM fine-tuning on replies."
    )
    contract: str = Field(description="Data contract name in data_contracts/ (without .yaml).")
    labels: list[str] = Field(default_factory=list, description="Class names, in label-id order (classification).")
    positive_label: str | None = Field(None, description="Positive class of a binary lab (PR curve, threshold).")
    source: SourceConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    render: RenderConfig | None = Field(None, description="Render tabular rows as text (instead of a text column).")
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    peft: PeftConfig = Field(default_factory=PeftConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    schedule: ScheduleConfig | None = Field(None, description="Retrain on a cron schedule (stopped unless enabled).")
    inbox: InboxConfig = Field(default_factory=InboxConfig)

    @model_validator(mode="after")
    def _task_consistent(self) -> LabConfig:
        if self.task == "sft":
            if self.labels or self.positive_label or self.eval.prevalence:
                raise ValueError("an sft lab has no labels, positive_label or eval.prevalence; remove them")
            if self.split.balance != "none":
                raise ValueError("split.balance applies to classification labs only; set it to none")
            if "primary_metric" not in self.eval.model_fields_set:
                self.eval.primary_metric = "eval_loss"
            if self.peft.method == "full":
                raise ValueError("peft.method full is for classification labs; an sft lab trains a LoRA adapter "
                                 "(peft.method lora)")
            return self
        if len(self.labels) < 2:
            raise ValueError("a classification lab needs at least 2 labels")
        if self.peft.method == "full" and self.model.quantization != "none":
            raise ValueError("peft.method full trains every weight, which a 4-bit model cannot: set "
                             "model.quantization to none, or peft.method to lora")
        if self.source.has_test_source and self.split.test != 0:
            raise ValueError("with source.test_local_path the test set is given: set split.test to 0 "
                             "(and split.train + split.validation to 1)")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.positive_label is not None and self.positive_label not in self.labels:
            raise ValueError(f"positive_label {self.positive_label!r} is not one of labels {self.labels}")
        if self.eval.prevalence is not None and not self.is_binary:
            raise ValueError("eval.prevalence needs a binary lab (two labels); remove it")
        if self.is_binary and self.positive_label is None:
            self.positive_label = self.labels[1]
        return self

    @property
    def is_binary(self) -> bool:
        return len(self.labels) == 2

    @property
    def is_generative(self) -> bool:
        return self.task == "sft"

    @property
    def registry_name(self) -> str:
        return self.publish.registry_name or f"ftlab-{self.name}"
