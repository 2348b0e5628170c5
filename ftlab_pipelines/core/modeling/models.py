"""Resolve a base model (offline alias, local dir, hub id), load it where core/modeling/device.py places it, attach
LoRA (or train it whole), and load what the adapter stage trained."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

from ftlab_pipelines.core.config.labs import ModelConfig, PeftConfig
from ftlab_pipelines.core.modeling import lora_precision
from ftlab_pipelines.core.modeling.device import placement
from ftlab_pipelines.core.modeling.offline_models import (
    OFFLINE_ALIASES,
    OfflineModelMissing,
)

log = logging.getLogger(__name__)

# What the adapter stage's directory holds: a LoRA adapter, or the whole model (peft.method full).
LORA_CONFIG, LORA_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
FULL_MODEL_CONFIG, FULL_MODEL_WEIGHTS = "config.json", "model.safetensors"


class ModelError(ValueError):
    """A model that cannot be resolved or loaded; the message says which and what to do."""


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.isdir(os.path.expanduser(name))


def resolve_model(name: str, model_cache: Path | None = None) -> str:
    """A local directory for aliases and paths; a hub id is returned as given. Converted offline models live in
    `model_cache` (callers holding a Settings pass settings.model_cache; else FTLAB_MODEL_CACHE is read here)."""
    if name in OFFLINE_ALIASES:
        if model_cache is None:
            from ftlab_pipelines.core.config.settings import Settings

            model_cache = Settings.from_env().model_cache
        try:
            return OFFLINE_ALIASES[name](model_cache)
        except OfflineModelMissing as exc:
            raise ModelError(f"model.name {name!r}: {exc}") from None
    if _looks_like_path(name):
        path = Path(name).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model.name {name!r}: {path} is not a model directory (no config.json); "
                f"fix the path or use an alias ({', '.join(OFFLINE_ALIASES)})"
            )
        return str(path)
    return name


def resolved(config: ModelConfig, model_cache: Path) -> ModelConfig:
    """The config with `name` replaced by the local directory it resolves to (hub ids stay as they are), so that
    every loader given it finds the same files without looking at the environment."""
    return config.model_copy(update={"name": resolve_model(config.name, model_cache)})


def device() -> torch.device:
    return placement().device


def use_bf16(setting: str = "auto") -> bool:
    """bf16 autocast for a lab's `train.bf16` on this process's hardware (see core/modeling/device.py)."""
    return placement(setting).bf16


def load_tokenizer(config: ModelConfig):
    from transformers import AutoTokenizer

    path = resolve_model(config.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    except OSError as exc:
        raise ModelError(f"model.name {config.name!r}: tokenizer cannot be loaded ({exc})") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(config: ModelConfig, skip_modules: list[str]):
    if config.quantization != "4bit":
        return None
    from transformers import BitsAndBytesConfig

    # NF4 + double quant + bf16 compute is the QLoRA recipe (fp32 compute where bf16 would be emulated);
    # the head must stay out of bnb.
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=placement().compute_dtype,
        llm_int8_skip_modules=skip_modules,
    )


def load_classifier(config: ModelConfig, labels: list[str], seed: int = 42):
    """Base model with a new classification head initialised from `seed` (so 'untrained head' is reproducible),
    leaving the process's random state as it was: the training entry point owns the global seed."""
    from transformers import AutoModelForSequenceClassification

    if config.trust_remote_code:
        log.warning("model.trust_remote_code is true: custom code from %s will run", config.name)
    path = resolve_model(config.name)
    try:
        # from_pretrained initialises the weights missing from the checkpoint (the head) with torch's CPU RNG.
        with seeded_torch_rng(seed):
            model = AutoModelForSequenceClassification.from_pretrained(
                path,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)},
                quantization_config=quantization_config(config, ["classifier", "score", "pooler"]),
                trust_remote_code=config.trust_remote_code,
                use_safetensors=True,
            )
    except OSError as exc:
        raise ModelError(
            f"model.name {config.name!r} cannot be loaded ({exc}). Offline? Use a local directory or an alias"
        ) from None
    if model.config.pad_token_id is None and getattr(model.config, "eos_token_id", None) is not None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


@contextlib.contextmanager
def seeded_torch_rng(seed: int):
    """torch's generators (CPU, and this process's GPU) seeded with `seed` inside the block and restored after it;
    Python's and numpy's are not touched."""
    gpus = [torch.cuda.current_device()] if placement().on_gpu else []
    with torch.random.fork_rng(devices=gpus):
        torch.random.default_generator.manual_seed(seed)
        if gpus:
            torch.cuda.manual_seed(seed)  # a 4-bit model may be loaded straight onto the GPU
        yield


def load_causal_lm(config: ModelConfig, *, quantize: bool = True):
    """Base causal LM (fp32 weights; NF4 when the lab asks for 4bit and `quantize` is true)."""
    from transformers import AutoModelForCausalLM

    if config.trust_remote_code:
        log.warning("model.trust_remote_code is true: custom code from %s will run", config.name)
    path = resolve_model(config.name)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            quantization_config=quantization_config(config, ["lm_head"]) if quantize else None,
            trust_remote_code=config.trust_remote_code,
            use_safetensors=True,
            dtype=torch.float32,
        )
    except OSError as exc:
        raise ModelError(
            f"model.name {config.name!r} cannot be loaded ({exc}). Offline? Use a local directory or an alias"
        ) from None
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = model.config.eos_token_id
    if placement().on_gpu and not getattr(model, "is_loaded_in_4bit", False):
        model.to(placement().device)  # evaluation, merge and chat run where training ran
    return model


def default_lora_targets(model) -> list[str] | str:
    """The usual LoRA targets for the model's family, found by its module names."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if {"q_proj", "v_proj"} <= names:
        return ["q_proj", "v_proj"]
    if {"query", "value"} <= names:
        return [n for n in ("query", "key", "value", "dense") if n in names]
    return "all-linear"


def set_base_dropout(model: torch.nn.Module, p: float) -> int:
    """Set the dropout of the base model's own layers to `p`: every `nn.Dropout` outside LoRA's `lora_dropout`, and
    the config's float `*dropout*` fields (read by attention code that has no module for it, and by
    `use_fast_attention_dropout`). Returns how many modules were changed."""
    changed = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout) and "lora_dropout" not in name.split("."):
            module.p = p
            changed += 1
    config = getattr(model, "config", None)
    for key, value in (config.to_dict().items() if config is not None else ()):
        if "dropout" in key and isinstance(value, float):
            setattr(config, key, p)
    return changed


def attach_lora(model, peft_config: PeftConfig, task_type: str = "SEQ_CLS"):
    """Wrap the model with LoRA; for SEQ_CLS peft also trains and saves the classification head."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        keep_4bit_weights_differentiable(model)
    lora = LoraConfig(
        r=peft_config.r,
        lora_alpha=peft_config.alpha,
        lora_dropout=peft_config.dropout,
        target_modules=peft_config.target_modules or default_lora_targets(model),
        task_type=task_type,
    )
    model = get_peft_model(model, lora)
    lora_precision.sum_lora_in_fp32(model)
    return model


def prepare_for_training(model, peft_config: PeftConfig, task_type: str = "SEQ_CLS"):
    """The model as `peft.method` trains it: wrapped with LoRA, or as it is with every weight trainable (but the token
    embeddings with `freeze_embeddings`)."""
    if peft_config.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        model.get_input_embeddings().weight.requires_grad_(not peft_config.freeze_embeddings)
        return model
    return attach_lora(model, peft_config, task_type)


def is_full_model(trained_dir: str | Path) -> bool:
    """Whether the adapter stage wrote a whole model (peft.method full) rather than a LoRA adapter."""
    trained_dir = Path(trained_dir)
    return (trained_dir / FULL_MODEL_CONFIG).is_file() and not (trained_dir / LORA_CONFIG).is_file()


def trained_files(trained_dir: str | Path) -> tuple[str, str]:
    """The weights and config files the adapter stage wrote: the whole model's or the LoRA adapter's."""
    return (FULL_MODEL_WEIGHTS, FULL_MODEL_CONFIG) if is_full_model(trained_dir) else (LORA_WEIGHTS, LORA_CONFIG)


def trained_weights_stem(trained_dir: str | Path) -> str:
    """The safetensors file stem the adapter stage wrote: model (a whole model) or adapter_model (LoRA)."""
    return Path(trained_files(trained_dir)[0]).stem


def keep_4bit_weights_differentiable(model) -> int:
    """Stop bitsandbytes (0.50) from repacking NF4 weights for CPU inference in a model that will train.

    On a CPU with avx512_bf16, any eval-mode forward without gradients (a validation step, a base-model loss,
    a sanity check) permanently repacks each Linear4bit's weight into an inference layout whose matmul has no
    backward: from then on gradients stop at every 4-bit layer, so only the LoRA layers nearest the loss
    (o_proj, down_proj) learn. Measured here (bench/lora_vs_qlora.py, SmolLM2 on persona_chat, 30 steps): mean
    train loss 4.41 with the q/k/v/gate/up LoRA gradients exactly zero; 3.84 with this guard (LoRA on the
    unquantized model: 3.68). Training is slower without the inference layout, but it learns. Returns how many
    layers it touched."""
    touched = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            touched += 1
    return touched


def count_parameters(model) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": int(trainable), "total_params": int(total)}


def load_lora(base, adapter_dir: str | Path):
    """Base model + a saved LoRA adapter, in eval mode, adding the update in fp32 under autocast as training did."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    lora_precision.sum_lora_in_fp32(model)
    return model


def load_full_model(model_dir: str | Path, trust_remote_code: bool = False):
    """A whole trained classifier (peft.method full) in fp32, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code).eval()


def load_adapter_classifier(adapter_dir: str | Path, config: ModelConfig, labels: list[str]):
    """The adapter stage's classifier, ready for inference: base model + its LoRA adapter (with the trained head),
    or the whole model it trained (peft.method full)."""
    adapter_dir = Path(adapter_dir)
    stem = trained_weights_stem(adapter_dir)
    if not (adapter_dir / f"{stem}.safetensors").is_file():
        raise ModelError(f"{adapter_dir}: no {stem}.safetensors; re-materialize the adapter asset")
    try:
        if stem == "model":
            return load_full_model(adapter_dir, config.trust_remote_code)
        model = load_lora(load_classifier(config, labels), adapter_dir)
    except Exception as exc:  # noqa: BLE001 - safetensors/peft raise many types for a corrupt file
        raise ModelError(f"{adapter_dir}: the adapter cannot be loaded ({exc}); delete {adapter_dir} and "
                         f"re-materialize the adapter") from None
    return model
