"""merge_and_unload of a trained-looking LoRA adapter, fp32 and 4-bit NF4 bases, with the logit parity check."""

from __future__ import annotations

import pytest
import torch

from ftlab_pipelines.core import merge, models
from ftlab_pipelines.core.labs import ModelConfig, PeftConfig


def saved_adapter(config: ModelConfig, out) -> None:
    """A LoRA adapter whose B matrices are non-zero (a fresh one is a no-op and would prove nothing)."""
    torch.manual_seed(0)
    model = models.attach_lora(models.load_causal_lm(config), PeftConfig(target_modules=["q_proj", "v_proj"]),
                               task_type="CAUSAL_LM")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    model.save_pretrained(str(out))


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_merged_model_matches_base_plus_adapter(quantization, tmp_path):
    config = ModelConfig(name="smollm2-135m-instruct", quantization=quantization)
    saved_adapter(config, tmp_path / "adapter")
    tokenizer = models.load_tokenizer(config)
    parity = merge.merge_adapter(config, tmp_path / "adapter", tokenizer, merge.PARITY_MESSAGES,
                                 tmp_path / "merged", tolerance=1e-3)
    assert parity.passed, parity
    assert parity.tokens > 10
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert not list((tmp_path / "merged").glob("adapter_*"))  # standalone: no PEFT files

    # The adapter really changes the model, so parity is not trivially 0 vs 0.
    from transformers import AutoModelForCausalLM

    batch = tokenizer(merge.PARITY_MESSAGES[:1], return_tensors="pt")
    base = merge.full_precision_base(config)
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32)
    with torch.no_grad():
        assert (base(**batch).logits - merged(**batch).logits).abs().max() > 1e-2


def test_parity_outcome_fails_over_tolerance():
    from ftlab_pipelines.core.stages.release import parity_outcome

    outcome = parity_outcome(merge.Parity(max_abs_diff=0.5, tolerance=1e-3, tokens=30))
    assert not outcome.passed and "do not ship merged/" in outcome.description
    assert parity_outcome(merge.Parity(max_abs_diff=1e-5, tolerance=1e-3, tokens=30)).passed
