"""Text classification with a merged model: batched scoring, the tuned threshold, one output row per input."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from . import device as devices
from .loading import load_merged
from .text import apply_template, render_rows

MODEL_ARTIFACT = "model"  # the pyfunc artifact key of the merged model directory
MAX_TEXT_CHARS = 100_000  # far beyond any model's max_length: a longer text is a mistake, not an input


class BadInput(ValueError):
    """Input the model cannot score; the message names the column or row and what to send instead."""


def predict_proba(model, tokenizer, input_ids: list[list[int]], batch_size: int = 64, bf16: bool = False,
                  track: Callable[[Iterable], Iterable] | None = None):
    """Class probabilities in the input order; batches are built from length-sorted rows to cut padding.
    `track` wraps the batch loop (a progress bar)."""
    import torch

    model.eval()
    dev = next(model.parameters()).device
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    out: np.ndarray | None = None
    starts = range(0, len(order), batch_size)
    with torch.inference_mode():
        for start in track(starts) if track else starts:
            rows = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [input_ids[i] for i in rows]}, return_tensors="pt")
            batch = {k: v.to(dev) for k, v in batch.items()}
            with devices.autocast(dev, bf16):
                logits = model(**batch).logits
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.zeros((len(input_ids), probs.shape[1]), dtype=np.float32)
            out[rows] = probs
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def decide(probs: np.ndarray, labels: list[str], positive_label: str | None, threshold: float | None) -> np.ndarray:
    """Chosen class per row: the tuned threshold on the positive class for binary labs, else argmax."""
    if threshold is not None and positive_label is not None and len(labels) == 2:
        pos = labels.index(positive_label)
        return np.where(probs[:, pos] >= threshold, pos, 1 - pos)
    return probs.argmax(axis=1)


class TextClassifier:
    """A merged classifier directory: weights, tokenizer and ftlab_model.json (labels, threshold, template)."""

    def __init__(self, model_dir: str | Path):
        from transformers import AutoModelForSequenceClassification

        self.config, self.tokenizer, self.model, self.device, self.bf16 = load_merged(
            model_dir, AutoModelForSequenceClassification)
        self.labels: list[str] = self.config["labels"]

    @property
    def input_columns(self) -> list[str]:
        render = self.config.get("render")
        return list(render["columns"]) if render else [self.config["text_column"]]

    def texts(self, frame) -> list[str]:
        """The model's input texts: the text column, or the row template applied to the raw columns."""
        if len(frame) == 0:
            raise BadInput("the input has no rows; send at least one")
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise BadInput(f"the input lacks the column(s) {missing}; this model reads {self.input_columns}")
        render = self.config.get("render")
        if render:
            return render_rows({c: frame[c].tolist() for c in render["columns"]}, render)
        column = self.config["text_column"]
        values = frame[column].tolist()
        for row, value in enumerate(values):
            if not isinstance(value, str):
                raise BadInput(f"row {row}, column {column!r}: expected text, got {type(value).__name__} {value!r}")
            if len(value) > MAX_TEXT_CHARS:
                raise BadInput(f"row {row}, column {column!r}: the text has {len(value):,} characters; texts over "
                               f"{MAX_TEXT_CHARS:,} are refused (the model reads only the first "
                               f"{self.config['max_length']} tokens): shorten it")
        return values

    def probabilities(self, texts: list[str], batch_size: int = 64, track=None) -> np.ndarray:
        encoded = self.tokenizer(apply_template(texts, self.config["template"]), truncation=True,
                                 max_length=self.config["max_length"])
        return predict_proba(self.model, self.tokenizer, encoded["input_ids"], batch_size, self.bf16, track)

    def predict(self, frame, batch_size: int = 64):
        """One row per input: `label` (after the threshold), `score` (the positive class's probability for a
        binary lab, else the chosen label's) and `prob_<label>` for every class."""
        import pandas as pd

        probs = self.probabilities(self.texts(frame), batch_size)
        chosen = decide(probs, self.labels, self.config.get("positive_label"), self.config.get("threshold"))
        positive = self.config.get("positive_label")
        if positive is not None and len(self.labels) == 2:
            score = probs[:, self.labels.index(positive)]
        else:
            score = probs[np.arange(len(probs)), chosen]
        out = pd.DataFrame({"label": [self.labels[c] for c in chosen], "score": score.astype(float)})
        for i, label in enumerate(self.labels):
            out[f"prob_{label}"] = probs[:, i].astype(float)
        return out
