"""`ftlab new-lab`: a lab file and a data contract inferred from the user's own CSV (or TSV/JSON/Parquet).

It reads the file once and infers the task (binary or multi-class), the label set, the positive class, the
text length bounds and a token budget; every choice lands in the YAML, so the user can read and change it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ftlab_pipelines.core.config.labs import LabConfig, ModelConfig
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.data import sources

MIN_ROWS = 50
MIN_PER_CLASS = 10  # a stratified 70/10/20 split needs a few rows of each class in validation and test
MAX_CLASSES = 50
RARE_SHARE = 0.1  # a class below this share of the rows gets upsampled (train split only)


class NewLabError(ValueError):
    """The data cannot make a lab as it is; the message says what to fix."""


@dataclass
class Inferred:
    labels: list[str]  # label-id order; a binary lab's positive (minority) class comes last
    shares: dict[str, float]
    rows: int
    text_chars: tuple[int, int]  # shortest and longest text, in characters
    max_tokens: int  # the token budget that fits 99% of the texts

    @property
    def task(self) -> str:
        return "binary" if len(self.labels) == 2 else "multi-class"


def read_data(path: Path, text: str, label: str) -> pd.DataFrame:
    frame = sources.read_table(path)
    missing = [c for c in (text, label) if c not in frame.columns]
    if missing:
        raise NewLabError(f"{path}: no column {', '.join(map(repr, missing))}; its columns are "
                          f"{', '.join(map(str, frame.columns))}")
    empty = frame[[text, label]].isna().any(axis=1) | (frame[text].astype(str).str.strip() == "")
    if empty.any():
        first = int(np.flatnonzero(empty.to_numpy())[0]) + 2  # 1-based, after the header line
        raise NewLabError(f"{path}: {int(empty.sum())} rows have no {text!r} or no {label!r} (first at line "
                          f"{first}); remove or fill them, the data contract requires both in every row")
    return frame


def infer_labels(labels: pd.Series) -> tuple[list[str], dict[str, float]]:
    counts = labels.astype(str).value_counts()
    if len(counts) < 2:
        raise NewLabError(f"the label column has one value only ({counts.index[0]!r}); a classifier needs two or more")
    if len(counts) > MAX_CLASSES:
        raise NewLabError(f"the label column has {len(counts)} distinct values; is it really the label? "
                          f"ftlab new-lab takes at most {MAX_CLASSES} classes")
    rare = counts[counts < MIN_PER_CLASS]
    if len(rare):
        raise NewLabError(f"class {rare.index[0]!r} has only {int(rare.iloc[0])} rows; stratified train/validation/"
                          f"test splits need at least {MIN_PER_CLASS} per class: add rows or merge rare classes")
    names = sorted(counts.index)
    if len(names) == 2:  # the minority class is the one worth detecting (spam, fraud): make it positive
        names.sort(key=lambda n: (-counts[n], n))
    return names, {n: counts[n] / counts.sum() for n in names}


def token_budget(texts: pd.Series, model: str, model_cache: Path | None = None) -> int:
    """The 99th percentile of token counts, rounded up to a multiple of 32, within [32, 512]."""
    from ftlab_pipelines.core.modeling import models

    tokenizer = models.load_tokenizer(ModelConfig(name=models.resolve_model(model, model_cache)))
    sample = texts.sample(n=min(len(texts), 5000), random_state=0).astype(str).tolist()
    lengths = [len(ids) for ids in tokenizer(sample, truncation=False)["input_ids"]]
    return int(min(512, max(32, math.ceil(np.percentile(lengths, 99) / 32) * 32)))


def infer(frame: pd.DataFrame, text: str, label: str, model: str, model_cache: Path | None = None) -> Inferred:
    if len(frame) < MIN_ROWS:
        raise NewLabError(f"{len(frame)} rows: too few to train and evaluate; ftlab new-lab needs {MIN_ROWS} or more")
    labels, shares = infer_labels(frame[label])
    chars = frame[text].astype(str).str.len()
    return Inferred(labels, shares, len(frame), (int(chars.min()), int(chars.max())), token_budget(frame[text], model, model_cache))


def _round(value: float, up: bool) -> float:
    return (math.ceil if up else math.floor)(value * 1000) / 1000


def contract_yaml(name: str, path: Path, text: str, label: str, found: Inferred) -> dict:
    """Bounds a future snapshot must meet: each class within half to twice its share now, texts up to twice the
    longest seen, at least half as many rows (capped at 100, so quick subsamples pass)."""
    return {
        "description": f"{path.name}: {found.rows} rows, {found.task} {label!r} ({', '.join(found.labels)})",
        "columns": [text, label],
        "text": {"column": text, "min_length": 1, "max_length": int(math.ceil(found.text_chars[1] * 2 / 100) * 100)},
        "label": {"column": label, "values": found.labels,
                  "share_bounds": {n: [_round(s / 2, False), min(1.0, _round(s * 2, True))]
                                   for n, s in found.shares.items()}},
        "min_rows": min(100, found.rows // 2),
        "extra_expectations": [{"type": "ExpectColumnValuesToMatchRegex", "kwargs": {"column": text, "regex": r"\S"}}],
    }


def lab_yaml(name: str, path: Path, text: str, label: str, model: str, found: Inferred) -> dict:
    rare = min(found.shares.values()) < RARE_SHARE
    lab = {
        "description": f"{found.task} classification of {label!r} from {text!r} ({path.name}), made by ftlab new-lab",
        "contract": name,
        "labels": found.labels,
        **({"positive_label": found.labels[1]} if len(found.labels) == 2 else {}),
        "source": {"local_path": str(path.resolve()), "text_column": text, "label_column": label},
        "split": {"train": 0.7, "validation": 0.1, "test": 0.2, "seed": 42, "dedupe": True,
                  "balance": "upsample" if rare else "none", **({"minority_share": 0.2} if rare else {})},
        "model": {"name": model, "max_length": found.max_tokens},
        "peft": {"r": 16, "alpha": 32, "dropout": 0.1},
        "train": {"epochs": 5, "batch_size": 32, "learning_rate": 1.0e-3, "save_steps": 100},
        "eval": {"primary_metric": "f1" if len(found.labels) == 2 else "macro_f1",
                 **({"threshold": {"mode": "max_f1"}} if len(found.labels) == 2 else {})},
    }
    LabConfig.model_validate({"name": name, **lab})  # what we write must load
    return lab


def header(kind: str, found: Inferred, path: Path) -> str:
    shares = ", ".join(f"{n} {s:.1%}" for n, s in found.shares.items())
    return (f"# {kind} written by `ftlab new-lab` from {path} ({found.rows} rows).\n"
            f"# Inferred: {found.task}; classes {shares}; texts {found.text_chars[0]}..{found.text_chars[1]} "
            f"characters; 99% fit in {found.max_tokens} tokens.\n# Every value below is a default: edit freely.\n")


def write_new_lab(settings: Settings, name: str, path: Path, text: str, label: str,
                  model: str = "all-minilm-l6-v2", force: bool = False) -> tuple[Path, Path, Inferred]:
    """Write labs/<name>.yaml and data_contracts/<name>.yaml (FTLAB_LABS_DIR / FTLAB_CONTRACTS_DIR)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise NewLabError(f"lab name {name!r}: use lower-case letters, digits and _, starting with a letter")
    lab_path, contract_path = settings.labs_dir / f"{name}.yaml", settings.contract_path(name)
    for existing in (lab_path, contract_path):
        if existing.exists() and not force:
            raise NewLabError(f"{existing} exists; pick another name or pass --force to overwrite it")
    path = Path(path).expanduser().resolve()
    found = infer(read_data(path, text, label), text, label, model, settings.model_cache)
    lab = lab_yaml(name, path, text, label, model, found)
    contract = contract_yaml(name, path, text, label, found)
    for target, kind, body in ((lab_path, "Lab", lab), (contract_path, "Data contract", contract)):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(header(kind, found, path) + yaml.safe_dump(body, sort_keys=False, allow_unicode=True,
                                                                     default_flow_style=None, width=110))
    return lab_path, contract_path, found
