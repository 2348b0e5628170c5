"""The release directory: adapter, tokenizer, labels, threshold and a model card, usable without the lab file."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.modeling import models

log = logging.getLogger(__name__)


def write_release_dir(lab, adapter_dir: Path, evaluation, tokenizer, out: Path, render: dict | None) -> None:
    """Everything `ftlab predict` / `ftlab chat` need, with no access to the lab file or the pipeline. `render`:
    the tokenized stage's fitted row template (tabular labs)."""
    for name in models.trained_files(adapter_dir):
        shutil.copy2(adapter_dir / name, out / name)
    tokenizer.save_pretrained(str(out))
    artifacts.write_json(out / "metrics.json", evaluation.metrics)
    if lab.is_generative:
        gen = lab.eval.generation
        artifacts.write_json(out / "ftlab_model.json", {
            "lab": lab.name, "task": lab.task, "model": lab.model.model_dump(mode="json"),
            "prompt": lab.prompt.model_dump(mode="json"),
            "generation": {"max_new_tokens": gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty}})
        (out / "README.md").write_text(generation_model_card(lab, evaluation), encoding="utf-8")
        return
    artifacts.write_json(out / "labels.json", {"labels": lab.labels, "positive_label": lab.positive_label})
    artifacts.write_json(out / "threshold.json", {"threshold": evaluation.threshold,
                                                  "mode": lab.eval.threshold.mode})
    artifacts.write_json(out / "ftlab_model.json", {
        "lab": lab.name, "task": lab.task, "model": lab.model.model_dump(mode="json"),
        "render": render})
    (out / "README.md").write_text(model_card(lab, evaluation), encoding="utf-8")


def lora_line(lab) -> str:
    peft = lab.peft
    return (f"LoRA: r={peft.r}, alpha={peft.alpha}, dropout={peft.dropout}, "
            f"targets {peft.target_modules or 'the model family default'}")


def model_card(lab, evaluation) -> str:
    from ftlab_pipelines.core.evaluation.metrics import comparison_markdown

    fine = evaluation.metrics["fine_tuned"]
    threshold = evaluation.threshold
    natural_rate = ""
    if lab.eval.prevalence is not None:
        from ftlab_pipelines.core.evaluation.prevalence import adjusted_markdown

        natural_rate = "\n\n" + adjusted_markdown(evaluation.metrics, lab.eval.prevalence, lab.eval.threshold)
    full = lab.peft.method == "full"
    return f"""---
library_name: {'transformers' if full else 'peft'}
base_model: {lab.model.name}
tags: [ftlab, {'full-fine-tune' if full else 'lora'}, text-classification]
---
# ftlab-{lab.name}

{lab.description or ('A classifier' if full else 'A LoRA adapter') + ' trained by ftlab.'}

- Base model: `{lab.model.name}` (max_length {lab.model.max_length}, quantization {lab.model.quantization})
- {'Every weight fine-tuned (peft.method full): model.safetensors is the whole model' if full else lora_line(lab)}
- Labels: {', '.join(lab.labels)}{f"; positive label `{lab.positive_label}`" if lab.is_binary else ''}
- Decision threshold: {threshold if threshold is not None else 'argmax'} (tuned on validation, mode {lab.eval.threshold.mode})

## Test results ({fine['n']} rows, natural class distribution)

{comparison_markdown(evaluation.metrics)}{natural_rate}

```
{fine['report']}
```

## Use

```bash
ftlab predict {lab.name} "your text here"
```
"""


def generation_model_card(lab, evaluation) -> str:
    import pandas as pd

    table = pd.DataFrame(evaluation.metrics).T.to_markdown()
    return f"""---
library_name: peft
base_model: {lab.model.name}
tags: [ftlab, lora, text-generation, sft]
---
# ftlab-{lab.name}

{lab.description or 'A LoRA adapter trained by ftlab.'}

- Base model: `{lab.model.name}` (max_length {lab.model.max_length}, quantization {lab.model.quantization})
- {lora_line(lab)}
- Prompt: {lab.prompt.format} format; loss on the reply tokens only; stop strings {lab.prompt.stop_strings}
- `merged/` (when present): the adapter merged into the base, a standalone transformers model

## Held-out results (base model vs fine-tuned)

{table}

## Use

```bash
ftlab chat {lab.name} "your message"
```
"""
