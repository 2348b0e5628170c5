"""merge_and_unload of a trained-looking LoRA adapter, fp32 and 4-bit NF4 bases, with the logit parity check; QLoRA SFT
on CPU; LoRA targets by model family. On the tiny Llama; the bitsandbytes tests also on SmolLM2 in `make test-slow`."""

from __future__ import annotations

import pytest
import torch

from ftlab_pipelines.core.config.labs import ModelConfig, PeftConfig
from ftlab_pipelines.core.modeling import merge, models


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
def test_merged_model_matches_base_plus_adapter(quantization, causal_lm_name, tmp_path):
    config = ModelConfig(name=causal_lm_name, quantization=quantization)
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


def test_qlora_sft_trains_on_cpu_with_torch_adamw(causal_lm_name, tmp_path):
    """4-bit NF4 + double quant + bf16 compute trains on CPU; paged 8-bit AdamW is only picked on CUDA."""
    import datasets
    from safetensors.torch import load_file

    from ftlab_pipelines.core.config.labs import PromptConfig, TrainConfig
    from ftlab_pipelines.core.text import prompts, tokenize
    from ftlab_pipelines.core.training import train

    config = ModelConfig(name=causal_lm_name, quantization="4bit")
    tokenizer = models.load_tokenizer(config)
    model = models.load_causal_lm(config)
    assert model.is_loaded_in_4bit
    quant = model.config.quantization_config
    assert quant.bnb_4bit_quant_type == "nf4" and quant.bnb_4bit_use_double_quant
    from ftlab_pipelines.core.modeling.device import placement

    # bf16 where this CPU computes it faster than fp32 (the device probe), fp32 elsewhere
    assert quant.bnb_4bit_compute_dtype == placement().compute_dtype
    model = models.attach_lora(model, PeftConfig(target_modules=["q_proj", "v_proj"]), task_type="CAUSAL_LM")
    cfg = PromptConfig()
    users = ["Hi", "How are you?", "Nice day", "Any plans?"]
    encoded = tokenize.encode_prompt_completion(
        tokenizer, [prompts.render_prompt(cfg, tokenizer, u) for u in users],
        [prompts.render_completion(cfg, tokenizer, u, "Gloomy, as ever.") for u in users], 96, True)
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict(encoded)})
    settings = TrainConfig(max_steps=2, batch_size=2, gradient_accumulation_steps=2, save_steps=100)
    assert train.optimizer_name(settings, quantized=True) == (
        "paged_adamw_8bit" if torch.cuda.is_available() else "adamw_torch_fused")
    result = train.train_adapter(model, tokenizer, dataset, settings, checkpoint_dir=tmp_path / "ckpt",
                                 out_dir=tmp_path / "adapter", sft_max_length=96)
    assert result.metrics["train_steps"] == 2
    # LoRA B starts at zero: non-zero B matrices after two steps mean the gradients went through the 4-bit layers.
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(w.abs().max() > 0 for w in lora_b)


def test_default_lora_targets_follow_the_model_family(tiny_models):
    """The tiny models keep the module names of SmolLM2 (Llama) and MiniLM (BERT)."""
    smol = models.load_causal_lm(ModelConfig(name=str(tiny_models.causal_lm)))
    assert models.default_lora_targets(smol) == ["q_proj", "v_proj"]
    minilm = models.load_classifier(ModelConfig(name=str(tiny_models.classifier)), ["a", "b"])
    assert models.default_lora_targets(minilm) == ["query", "key", "value", "dense"]
    adapted = models.attach_lora(smol, PeftConfig(), task_type="CAUSAL_LM")
    assert sorted(adapted.peft_config["default"].target_modules) == ["q_proj", "v_proj"]
