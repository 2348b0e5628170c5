"""Merge a LoRA adapter into its base model (a standalone model) and check the merge changed nothing; a wholly trained
model is written and checked the same way."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ftlab_pipelines.core.config.labs import ModelConfig
from ftlab_pipelines.core.modeling import models

log = logging.getLogger(__name__)

PARITY_MESSAGES = ["Hello, how are you today?", "What should I do this weekend?", "Tell me about your family."]


@dataclass
class Parity:
    max_abs_diff: float
    tolerance: float
    tokens: int

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    @classmethod
    def from_json(cls, path: Path) -> Parity:
        import json

        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(float(raw["max_abs_diff"]), float(raw["tolerance"]), int(raw["tokens"]))


def full_precision_base(config: ModelConfig, labels: list[str] | None = None):
    """The base in fp32 (a classifier with a head for `labels`, else a causal LM). A 4-bit trained adapter is
    merged into the dequantized NF4 weights it was trained on."""
    if labels is not None:
        model = models.load_classifier(config, labels)
        return model.dequantize().to(torch.float32) if getattr(model, "is_loaded_in_4bit", False) else model
    if config.quantization == "4bit":
        quantized = models.load_causal_lm(config, quantize=True)
        return quantized.dequantize().to(torch.float32)
    return models.load_causal_lm(config, quantize=False)


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    return model(**batch.to(model.device)).logits.float().cpu()


def merge_adapter(config: ModelConfig, adapter_dir: Path, tokenizer, probe_prompts: list[str], out_dir: Path,
                  tolerance: float, labels: list[str] | None = None) -> Parity:
    """Write base + adapter merged (`merge_and_unload`) to `out_dir`; compare its logits, reloaded from disk,
    with base + adapter on `probe_prompts`. With `labels`, the model is a classifier (its trained head included).
    A whole trained classifier (peft.method full) is written as it is, and checked the same way."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    full = models.is_full_model(adapter_dir)
    adapted = (models.load_full_model(adapter_dir, config.trust_remote_code) if full
               else PeftModel.from_pretrained(full_precision_base(config, labels), str(adapter_dir)).eval())
    batch = tokenizer(probe_prompts, return_tensors="pt", padding=True)
    expected = _logits(adapted, batch)
    merged = adapted if full else adapted.merge_and_unload()
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    auto = AutoModelForSequenceClassification if labels is not None else AutoModelForCausalLM
    reloaded = auto.from_pretrained(str(out_dir), dtype=torch.float32, use_safetensors=True).eval()
    actual = _logits(reloaded, batch)
    diff = (expected - actual).abs()
    real = batch["attention_mask"].bool().cpu()
    diff = (diff if labels is not None else diff[real]).max().item()  # a classifier has one logit row per text
    log.info("merged model parity: max |logit diff| %.2e (tolerance %.0e)", diff, tolerance)
    return Parity(round(diff, 8), tolerance, int(real.sum()))
