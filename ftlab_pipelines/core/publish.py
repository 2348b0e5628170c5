"""Release an adapter: a self-contained directory, the local and MLflow registries, the champion alias, the Hub."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ftlab_pipelines.core import artifacts, settings
from ftlab_pipelines.core.labs import LabConfig

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


class PublishError(RuntimeError):
    """A release that could not be pushed; the message never contains the token."""


def write_release_dir(lab: LabConfig, adapter_dir: Path, evaluation: dict, tokenizer, out: Path) -> None:
    """Everything `ftlab predict` / `ftlab chat` need, with no access to the lab file or the pipeline."""
    for name in ADAPTER_FILES:
        shutil.copy2(adapter_dir / name, out / name)
    tokenizer.save_pretrained(str(out))
    artifacts.write_json(out / "metrics.json", evaluation["metrics"])
    if lab.is_generative:
        gen = lab.eval.generation
        artifacts.write_json(out / "ftlab_model.json", {
            "lab": lab.name, "task": lab.task, "model": lab.model.model_dump(mode="json"),
            "prompt": lab.prompt.model_dump(mode="json"),
            "generation": {"max_new_tokens": gen.max_new_tokens, "repetition_penalty": gen.repetition_penalty}})
        (out / "README.md").write_text(generation_model_card(lab, evaluation), encoding="utf-8")
        return
    artifacts.write_json(out / "labels.json", {"labels": lab.labels, "positive_label": lab.positive_label})
    artifacts.write_json(out / "threshold.json", {"threshold": evaluation["threshold"],
                                                  "mode": lab.eval.threshold.mode})
    artifacts.write_json(out / "ftlab_model.json", {
        "lab": lab.name, "task": lab.task, "model": lab.model.model_dump(mode="json"),
        "render": lab.render.model_dump(mode="json") if lab.render else None})
    (out / "README.md").write_text(model_card(lab, evaluation), encoding="utf-8")


def model_card(lab: LabConfig, evaluation: dict) -> str:
    from ftlab_pipelines.core.metrics import comparison_markdown

    fine = evaluation["metrics"]["fine_tuned"]
    threshold = evaluation.get("threshold")
    return f"""---
library_name: peft
base_model: {lab.model.name}
tags: [ftlab, lora, text-classification]
---
# ftlab-{lab.name}

{lab.description or 'A LoRA adapter trained by ftlab.'}

- Base model: `{lab.model.name}` (max_length {lab.model.max_length}, quantization {lab.model.quantization})
- LoRA: r={lab.peft.r}, alpha={lab.peft.alpha}, dropout={lab.peft.dropout}, targets {lab.peft.target_modules or 'the model family default'}
- Labels: {', '.join(lab.labels)}{f"; positive label `{lab.positive_label}`" if lab.is_binary else ''}
- Decision threshold: {threshold if threshold is not None else 'argmax'} (tuned on validation, mode {lab.eval.threshold.mode})

## Test results ({fine['n']} rows, natural class distribution)

{comparison_markdown(evaluation['metrics'])}

```
{fine['report']}
```

## Use

```bash
ftlab predict {lab.name} "your text here"
```
"""


def generation_model_card(lab: LabConfig, evaluation: dict) -> str:
    import pandas as pd

    table = pd.DataFrame(evaluation["metrics"]).T.to_markdown()
    return f"""---
library_name: peft
base_model: {lab.model.name}
tags: [ftlab, lora, text-generation, sft]
---
# ftlab-{lab.name}

{lab.description or 'A LoRA adapter trained by ftlab.'}

- Base model: `{lab.model.name}` (max_length {lab.model.max_length}, quantization {lab.model.quantization})
- LoRA: r={lab.peft.r}, alpha={lab.peft.alpha}, dropout={lab.peft.dropout}, targets {lab.peft.target_modules or 'the model family default'}
- Prompt: {lab.prompt.format} format; loss on the reply tokens only; stop strings {lab.prompt.stop_strings}
- `merged/` (when present): the adapter merged into the base, a standalone transformers model

## Held-out results (base model vs fine-tuned)

{table}

## Use

```bash
ftlab chat {lab.name} "your message"
```
"""


def update_local_registry(lab: str, entry: dict) -> list[dict]:
    """Append a release to FTLAB_HOME/registry/<lab>.json (the offline registry)."""
    registry = settings.ftlab_home() / "registry"
    registry.mkdir(exist_ok=True)
    path = registry / f"{lab}.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries = [e for e in entries if e.get("path") != entry["path"]] + [entry]
    if entry.get("champion"):
        for e in entries:
            e["champion"] = e["path"] == entry["path"]
    artifacts.write_json(path, entries)
    return entries


def local_champion(lab: str) -> dict | None:
    path = settings.ftlab_home() / "registry" / f"{lab}.json"
    if not path.is_file():
        return None
    entries = json.loads(path.read_text())
    champions = [e for e in entries if e.get("champion")]
    return champions[-1] if champions else (entries[-1] if entries else None)


def set_local_champion(lab: str, mlflow_version: int) -> dict | None:
    """Mark the local release of an MLflow version as champion (after a manual promotion); None if not here."""
    path = settings.ftlab_home() / "registry" / f"{lab}.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    target = [e for e in entries if e.get("mlflow_version") == mlflow_version]
    if not target:
        return None
    for e in entries:
        e["champion"] = e is target[-1]
    artifacts.write_json(path, entries)
    return target[-1]


def push_to_hub(release_dir: Path, repo: str | None) -> str:
    """Push when a repo and HF_TOKEN are configured; otherwise say why not. Never logs the token."""
    token = os.environ.get("HF_TOKEN")
    if not repo:
        return "skipped: publish.hub_repo is not set"
    if not token:
        return f"skipped: HF_TOKEN is not set (would push to {repo})"
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo, exist_ok=True, private=True)
        api.upload_folder(folder_path=str(release_dir), repo_id=repo, commit_message="ftlab release")
    except Exception as exc:  # noqa: BLE001 - network, auth and offline errors all get the same advice
        reason = f"{type(exc).__name__}: {exc}".replace(token, "***")  # never echo the token
        raise PublishError(f"publish.hub_repo {repo!r}: push of {release_dir} failed ({reason}); the champion is "
                           f"unchanged. Check HF_TOKEN, the network and HF_HUB_OFFLINE, or unset publish.hub_repo") from None
    return f"pushed to https://huggingface.co/{repo}"
