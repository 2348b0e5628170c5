"""Render prompts and tokenize the splits into Arrow datasets on disk (no padding: collators pad per batch)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from ftlab_pipelines.core.labs import stable_hash


def tokenizer_fingerprint(tokenizer) -> str:
    """Identity of a tokenizer by content (vocab, normalizer, special tokens), not by name."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else f"{tokenizer.name_or_path}:{len(tokenizer)}"
    blob += repr(sorted(tokenizer.special_tokens_map.items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_key(data_hash: str, tokenizer, template: str, max_length: int, labels: list[str],
              extra: dict | None = None) -> str:
    """Everything that changes the token ids: a stale cache can never match a new key.

    `extra`: further inputs of a lab (its prompt section, its row template)."""
    return stable_hash(
        {"data": data_hash, "tokenizer": tokenizer_fingerprint(tokenizer), "template": template,
         "max_length": max_length, "labels": labels, **(extra or {})}
    )


def render_prompts(texts: pd.Series, template: str) -> list[str]:
    return [template.replace("{text}", str(t)) for t in texts]


def tokenize_splits(
    frames: dict[str, pd.DataFrame],
    tokenizer,
    *,
    text_column: str,
    label_column: str,
    labels: list[str],
    template: str,
    max_length: int,
    out_dir: Path,
    render=None,
    input_columns: list[str] | None = None,
) -> dict:
    """Tokenize every split with batched `datasets.map` and save a DatasetDict; return length stats.

    `render(batch) -> texts` builds the input text from `input_columns` (tabular labs) instead of `text_column`;
    it runs per batch, so no list of all rows is ever built.
    """
    import datasets

    label_ids = {label: i for i, label in enumerate(labels)}
    columns = input_columns or [text_column]

    def encode(batch: dict) -> dict:
        texts = render(batch) if render else batch[text_column]
        # Only ids: the collator builds attention masks per batch, and BERT-style models default
        # token_type_ids to zeros; skipping both halves the per-row Python conversion work.
        encoded = tokenizer(render_prompts(pd.Series(texts), template), truncation=True, max_length=max_length,
                            return_attention_mask=False, return_token_type_ids=False)
        encoded["labels"] = [label_ids[str(v)] for v in batch[label_column]]
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    splits = {}
    for name, frame in frames.items():
        keep = frame[[*columns, label_column]]
        ds = datasets.Dataset.from_pandas(keep if render else keep.astype(str), preserve_index=False)
        splits[name] = ds.map(encode, batched=True, batch_size=1000, remove_columns=ds.column_names,
                              desc=f"tokenize {name}")
    dataset = datasets.DatasetDict(splits)
    dataset.save_to_disk(str(out_dir))
    return {name: length_stats(lengths_of(ds), max_length) for name, ds in dataset.items()}


def lengths_of(dataset) -> np.ndarray:
    """The `length` column as one numpy array (indexing it as a Python list costs ~1 s per 50k rows)."""
    return np.asarray(dataset.with_format("numpy", columns=["length"])["length"])


def length_stats(lengths: np.ndarray, max_length: int) -> dict:
    """Rows, tokens and the length distribution of one tokenized split."""
    if not len(lengths):
        return {"rows": 0, "tokens": 0, "mean_length": 0.0, "max_length": 0, "truncated_share": 0.0}
    return {
        "rows": int(len(lengths)),
        "tokens": int(lengths.sum()),
        "mean_length": round(float(lengths.mean()), 1),
        "max_length": int(lengths.max()),
        "truncated_share": round(float((lengths >= max_length).mean()), 4),
    }


def load_tokenized(path: Path):
    import datasets

    return datasets.load_from_disk(str(path))


def encode_prompt_completion(tokenizer, prompts: list[str], completions: list[str], max_length: int,
                             prompt_special_tokens: bool) -> dict:
    """TRL's prompt-completion layout: input_ids = prompt + completion, completion_mask marks the reply tokens.

    Long rows are cut from the right; a row whose prompt alone fills max_length has no reply tokens left
    and gets length 0 (the caller drops it).
    """
    prompt_ids = tokenizer(prompts, add_special_tokens=prompt_special_tokens)["input_ids"]
    completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    out = {"input_ids": [], "completion_mask": [], "length": []}
    for p, c in zip(prompt_ids, completion_ids):
        ids = (p + c)[:max_length]
        mask = ([0] * len(p) + [1] * len(c))[:max_length]
        out["input_ids"].append(ids)
        out["completion_mask"].append(mask)
        out["length"].append(len(ids) if any(mask) else 0)
    return out


def tokenize_sft_splits(frames: dict[str, pd.DataFrame], tokenizer, *, render, max_length: int,
                        prompt_special_tokens: bool, out_dir: Path) -> dict:
    """Tokenize prompt/completion pairs of every split (batched `datasets.map`) and save a DatasetDict.

    `render(batch) -> (prompts, completions)` turns a batch of split rows into texts.
    """
    import datasets

    def encode(batch: dict) -> dict:
        prompts, completions = render(batch)
        return encode_prompt_completion(tokenizer, prompts, completions, max_length, prompt_special_tokens)

    splits, dropped = {}, {}
    for name, frame in frames.items():
        ds = datasets.Dataset.from_pandas(frame.astype(str), preserve_index=False)
        ds = ds.map(encode, batched=True, batch_size=1000, remove_columns=ds.column_names, desc=f"tokenize {name}")
        kept = ds.filter(lambda b: [n > 0 for n in b["length"]], batched=True, desc=f"drop prompt-only {name}")
        dropped[name] = len(ds) - len(kept)
        splits[name] = kept
    dataset = datasets.DatasetDict(splits)
    dataset.save_to_disk(str(out_dir))
    return {name: {**length_stats(lengths_of(ds), max_length),
                   "completion_tokens": int(sum(sum(m) for m in ds["completion_mask"])),
                   "dropped_prompt_too_long": dropped[name]}
            for name, ds in dataset.items()}
