"""Tiny randomly initialised models with a real model's architecture and tokenizer, for logic tests and the
benchmarks' --quick smoke runs. Never for quality claims."""

from __future__ import annotations

from pathlib import Path

TINY_SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128}
# Llama needs its heads to divide the hidden size, and an output layer of its own: tied to the input embeddings,
# a random model's greedy reply repeats the prompt's last token (often a newline, which the reply cut strips).
TINY_BERT = {"num_attention_heads": 2}
TINY_LLAMA = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": False}


def build_tiny_model(real: str, out: Path, **sizes) -> Path:
    """A randomly initialised model with `real`'s architecture and tokenizer, shrunk to `sizes`, saved to `out`."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(real)
    config.update({**TINY_SIZES, **sizes})
    torch.manual_seed(0)
    causal = any(a.endswith("ForCausalLM") for a in config.architectures or [])
    model = (AutoModelForCausalLM if causal else AutoModel).from_config(config)
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(real).save_pretrained(str(out))
    return out
