"""Load a published adapter directory and classify texts with its tuned threshold."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftlab_pipelines.core.config.labs import ModelConfig, RenderConfig
from ftlab_pipelines.core.data import sources
from ftlab_pipelines.core.evaluation import inference
from ftlab_pipelines.core.modeling import models


@dataclass
class Prediction:
    text: str
    label: str
    score: float
    probabilities: dict[str, float]


class Classifier:
    """A release directory: base model + LoRA adapter + tokenizer + labels + threshold."""

    def __init__(self, release_dir: str | Path, model_cache: Path | None = None):
        """`model_cache`: where converted offline base models live (the settings' FTLAB_MODEL_CACHE)."""
        from transformers import AutoTokenizer

        self.release_dir = Path(release_dir)
        info = self._read("ftlab_model.json")
        if info.get("task") == "sft":
            raise ValueError(f"{self.release_dir}: lab {info.get('lab')!r} is a generation (sft) lab; "
                             f"use `ftlab chat` for it")
        self.model_config = ModelConfig.model_validate(info["model"])
        self.render = RenderConfig.model_validate(info["render"]) if info.get("render") else None
        labels = self._read("labels.json")
        self.labels: list[str] = labels["labels"]
        self.positive_label: str | None = labels.get("positive_label")
        self.threshold: float | None = self._read("threshold.json").get("threshold")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.release_dir))
        base = models.resolved(self.model_config, model_cache) if model_cache else self.model_config
        self.model = models.load_adapter_classifier(self.release_dir, base, self.labels)

    def _read(self, name: str) -> dict:
        path = self.release_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; {self.release_dir} is not a complete ftlab release")
        return json.loads(path.read_text(encoding="utf-8"))

    def decide(self, probs: np.ndarray) -> np.ndarray:
        if self.threshold is not None and self.positive_label is not None and len(self.labels) == 2:
            pos = self.labels.index(self.positive_label)
            return np.where(probs[:, pos] >= self.threshold, pos, 1 - pos)
        return probs.argmax(axis=1)

    def render_rows(self, frame) -> list[str]:
        """Tabular rows -> the texts the model was trained on (the lab's row template)."""
        if self.render is None:
            raise ValueError(f"{self.release_dir}: this release classifies texts; it has no row template for a CSV")
        missing = [c for c in self.render.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"the CSV lacks the columns {missing} that the row template needs")
        return sources.render_rows({c: frame[c].tolist() for c in self.render.columns}, self.render)

    def predict(self, texts: list[str]) -> list[Prediction]:
        probs = inference.predict_texts(self.model, self.tokenizer, texts, self.model_config.template,
                                        self.model_config.max_length)
        chosen = self.decide(probs)
        return [
            Prediction(text, self.labels[c], float(p[c]), {lab: round(float(v), 4) for lab, v in zip(self.labels, p)})
            for text, c, p in zip(texts, chosen, probs)
        ]
