"""Batched, length-sorted classification inference that keeps only probabilities in memory.

The batching itself is the runtime's (core/runtime/classify.py), which the MLflow model runs as well."""

from __future__ import annotations

import numpy as np

from ftlab_pipelines.core import progress
from ftlab_pipelines.core.runtime import classify


def predict_proba(model, tokenizer, input_ids: list[list[int]], batch_size: int = 128, bf16: bool = False,
                  desc: str | None = None) -> np.ndarray:
    """Class probabilities in the input order. With `desc`, a progress bar and log lines (see core/progress.py)."""
    track = (lambda batches: progress.track(batches, desc, unit="batches")) if desc else None
    return classify.predict_proba(model, tokenizer, input_ids, batch_size, bf16, track)


def predict_texts(model, tokenizer, texts: list[str], template: str, max_length: int, batch_size: int = 64,
                  bf16: bool = False) -> np.ndarray:
    from ftlab_pipelines.core.runtime.text import apply_template

    encoded = tokenizer(apply_template(texts, template), truncation=True, max_length=max_length)
    return predict_proba(model, tokenizer, encoded["input_ids"], batch_size=batch_size, bf16=bf16)
