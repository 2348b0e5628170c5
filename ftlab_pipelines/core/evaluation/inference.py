"""Batched, length-sorted classification inference that keeps only probabilities in memory."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ftlab_pipelines.core import progress
from ftlab_pipelines.core.modeling.device import placement


def _autocast(bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=placement().device.type, dtype=torch.bfloat16)


@torch.inference_mode()
def predict_proba(model, tokenizer, input_ids: list[list[int]], batch_size: int = 128, bf16: bool = False,
                  desc: str | None = None) -> np.ndarray:
    """Class probabilities in the input order; batches are built from length-sorted rows to cut padding.
    With `desc`, a progress bar and log lines (see core/progress.py)."""
    model.eval()
    dev = next(model.parameters()).device
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    out: np.ndarray | None = None
    starts = range(0, len(order), batch_size)
    for start in progress.track(starts, desc, unit="batches") if desc else starts:
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [input_ids[i] for i in rows]}, return_tensors="pt")
        batch = {k: v.to(dev) for k, v in batch.items()}
        with _autocast(bf16):
            logits = model(**batch).logits
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        if out is None:
            out = np.zeros((len(input_ids), probs.shape[1]), dtype=np.float32)
        out[rows] = probs
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def predict_texts(model, tokenizer, texts: list[str], template: str, max_length: int, batch_size: int = 64,
                  bf16: bool = False) -> np.ndarray:
    import pandas as pd

    from ftlab_pipelines.core.text.tokenize import render_prompts

    encoded = tokenizer(render_prompts(pd.Series(texts), template), truncation=True, max_length=max_length)
    return predict_proba(model, tokenizer, encoded["input_ids"], batch_size=batch_size, bf16=bf16)
