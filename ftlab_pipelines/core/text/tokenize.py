"""Render prompts and tokenize the splits into Arrow datasets on disk (no padding: collators pad per batch)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ftlab_pipelines.core.modeling.device import usable_cores
from ftlab_pipelines.core.runtime.text import apply_template


def tokenizer_fingerprint(tokenizer) -> str:
    """Identity of a tokenizer by content (vocab, normalizer, special tokens), not by name."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else f"{tokenizer.name_or_path}:{len(tokenizer)}"
    blob += repr(sorted(tokenizer.special_tokens_map.items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def render_prompts(texts: pd.Series, template: str) -> list[str]:
    return apply_template(texts, template)


CHUNK_ROWS = 20_000  # rows rendered and tokenized at a time: memory stays flat in the number of rows

TOKENIZED_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.int64()), ("length", pa.int32())])


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
    """Tokenize every split into an Arrow DatasetDict on disk (`input_ids`, `labels`, `length`); return length stats.

    `render(batch) -> texts` builds the input text from `input_columns` (tabular labs) instead of `text_column`;
    it runs per chunk of rows, so no list of all rows is ever built. Each chunk's table is streamed to an Arrow
    file as soon as it is encoded and the split is then memory-mapped, so no split is ever held in memory
    whole. Each distinct text is tokenized once: rebalanced train splits repeat their upsampled rows many times.
    """
    import datasets

    label_ids = {label: i for i, label in enumerate(labels)}
    columns = input_columns or [text_column]
    encoder = TextEncoder(tokenizer, max_length)
    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.chunks"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        splits = {}
        for name, frame in frames.items():
            path = staging / f"{name}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, TOKENIZED_SCHEMA) as writer:
                for start in range(0, len(frame), CHUNK_ROWS):
                    part = frame.iloc[start:start + CHUNK_ROWS]
                    batch = {c: part[c].tolist() for c in columns} if render else None
                    texts = render(batch) if render else part[text_column].astype(str).tolist()
                    ids, lengths = encoder.encode(render_prompts(pd.Series(texts), template))
                    label_array = np.fromiter((label_ids[str(v)] for v in part[label_column]), dtype=np.int64,
                                              count=len(part))
                    writer.write_table(pa.table({"input_ids": ids, "labels": label_array, "length": lengths},
                                                schema=TOKENIZED_SCHEMA))
                if frame.empty:  # one empty batch: a stream with no batch at all cannot be read back
                    writer.write_table(TOKENIZED_SCHEMA.empty_table())
            splits[name] = datasets.Dataset.from_file(str(path), in_memory=False)
        dataset = datasets.DatasetDict(splits)
        save_splits(dataset, out_dir)
        stats = {name: length_stats(lengths_of(ds), max_length) for name, ds in dataset.items()}
        del dataset, splits
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stats


MIN_TEXTS_PER_THREAD = 256  # below this a thread costs more than it saves


def encode_in_threads(encode_batch, texts: list[str], threads: int) -> list:
    """`encode_batch` over contiguous slices of `texts` on `threads` Python threads, results in order.

    The Rust tokenizer releases the GIL while it encodes, so the slices run in parallel whatever
    TOKENIZERS_PARALLELISM says (ftlab's commands set it to false to keep forked processes quiet; library code
    leaves the process environment alone). Its own thread pool, when the caller turned it on, is shared."""
    threads = max(1, min(threads, len(texts) // MIN_TEXTS_PER_THREAD))
    if threads == 1:
        return encode_batch(texts)
    size = -(-len(texts) // threads)
    with ThreadPoolExecutor(threads, thread_name_prefix="tokenize") as pool:
        parts = pool.map(encode_batch, [texts[i:i + size] for i in range(0, len(texts), size)])
        return list(itertools.chain.from_iterable(parts))


@contextlib.contextmanager
def truncated_unpadded(backend, max_length: int):
    """The tokenizer's own Rust backend set to truncate at max_length without padding for this call, then put
    back as it was (a copy of the backend costs ~25 ms, a tenth of tokenizing 10k short rows)."""
    truncation, padding = backend.truncation, backend.padding
    backend.no_padding()
    backend.enable_truncation(max_length)
    try:
        yield
    finally:
        backend.no_truncation() if truncation is None else backend.enable_truncation(**truncation)
        if padding is not None:
            backend.enable_padding(**padding)


class TextEncoder:
    """Texts -> (Arrow list array of token ids, lengths), truncated to max_length, special tokens added.

    A fast (Rust) tokenizer is called directly without offsets (`encode_batch_fast`, on a thread per core);
    transformers' own call builds a Python dict per row first. Other tokenizers go through their regular
    `__call__`. Both give the same ids (tests/test_fast_paths.py). Each distinct text is encoded once, across
    calls too: the ids of the first `remembered_texts` distinct texts are kept, so an upsampled split fed in
    chunks encodes its repeated rows once while memory stays bounded for a split of distinct texts.
    """

    ENCODE_BATCH = 4096  # texts per tokenizer call: bounds the tokenizer's per-text objects alive at once

    def __init__(self, tokenizer, max_length: int, remembered_texts: int = 20_000):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.remembered_texts = remembered_texts
        self.known: dict[str, list[int]] = {}
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.backend = backend if backend is not None and hasattr(backend, "encode_batch_fast") else None

    def encode(self, texts: list[str]) -> tuple[pa.Array, np.ndarray]:
        codes, uniques = pd.factorize(pd.Series(texts, dtype=object), sort=False)
        unique_ids = self._ids_of(list(uniques))
        lengths = np.fromiter(map(len, unique_ids), dtype=np.int32, count=len(unique_ids))
        offsets = np.zeros(len(unique_ids) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(itertools.chain.from_iterable(unique_ids), dtype=np.int32, count=int(offsets[-1]))
        unique_array = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
        if len(uniques) == len(texts):
            return unique_array, lengths
        return unique_array.take(pa.array(codes)), lengths[codes]

    def _ids_of(self, uniques: list[str]) -> list[list[int]]:
        missing = [text for text in uniques if text not in self.known]
        fresh = {}
        for start in range(0, len(missing), self.ENCODE_BATCH):
            batch = missing[start:start + self.ENCODE_BATCH]
            fresh.update(zip(batch, self._encode_unique(batch)))
        room = self.remembered_texts - len(self.known)
        if room > 0:
            self.known.update(itertools.islice(fresh.items(), room))
        return [self.known[text] if text in self.known else fresh[text] for text in uniques]

    def _encode_unique(self, texts: list[str]) -> list[list[int]]:
        if self.backend is not None:
            with truncated_unpadded(self.backend, self.max_length):
                encodings = encode_in_threads(self.backend.encode_batch_fast, texts, usable_cores())
            return [encoding.ids for encoding in encodings]
        return self.tokenizer(texts, truncation=True, max_length=self.max_length, return_attention_mask=False,
                              return_token_type_ids=False)["input_ids"]


def column_array(dataset, name: str) -> np.ndarray:
    """A scalar column as one numpy array, read as one Arrow column: datasets 5 iterates `ds[name]` row by row
    (9 s for 300k lengths). The arrow view honours a dataset's index mapping (after select/filter)."""
    if not len(dataset):
        return np.zeros(0, dtype=np.int64)
    return dataset.with_format("arrow", columns=[name])[:][name].to_numpy()


def lengths_of(dataset) -> np.ndarray:
    return column_array(dataset, "length")


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


def save_splits(dataset, out_dir: Path) -> None:
    """`save_to_disk`, except that an empty split gets one empty shard: datasets writes none for it and then
    cannot load it back."""
    dataset.save_to_disk(str(out_dir), num_shards={name: 1 if not len(ds) else None for name, ds in dataset.items()})


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
    save_splits(dataset, out_dir)
    return {name: {**length_stats(lengths_of(ds), max_length),
                   "completion_tokens": int(sum(sum(m) for m in ds["completion_mask"])),
                   "dropped_prompt_too_long": dropped[name]}
            for name, ds in dataset.items()}
