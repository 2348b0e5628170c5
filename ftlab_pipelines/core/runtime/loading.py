"""A merged model directory as the runtime loads it: serving config, tokenizer (with a pad token), weights in
fp32 on the device `device.pick` chooses."""

from __future__ import annotations

import json
from pathlib import Path

from . import device as devices

SERVING_CONFIG = "ftlab_model.json"  # written by ftlab next to the weights; read here


def load_merged(model_dir: str | Path, auto_class):
    """(config, tokenizer, model, device, bf16) for `auto_class` (AutoModelFor...) from `model_dir`."""
    import torch
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    config = json.loads((model_dir / SERVING_CONFIG).read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device, bf16 = devices.pick()
    model = auto_class.from_pretrained(str(model_dir), dtype=torch.float32, use_safetensors=True).to(device).eval()
    return config, tokenizer, model, device, bf16
