"""Measure a causal LM on held-out replies: loss and perplexity, preference accuracy, generations, persona score."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from ftlab_pipelines.core.config.labs import PromptConfig
from ftlab_pipelines.core.modeling.device import placement
from ftlab_pipelines.core.text import prompts, tokenize


def autocast(bf16: bool):
    """bf16 autocast on the device the models run on, or nothing."""
    return torch.autocast(placement().device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _length_sorted_batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size].tolist()


@torch.no_grad()
def completion_logprobs(model, input_ids: list[list[int]], completion_mask: list[list[int]], pad_id: int,
                        batch_size: int = 16, bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: the summed log-probability of its completion tokens, and how many there are."""
    model.eval()
    device = next(model.parameters()).device
    sums, counts = np.zeros(len(input_ids)), np.zeros(len(input_ids))
    for batch in _length_sorted_batches([len(ids) for ids in input_ids], batch_size):
        width = max(len(input_ids[i]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch):
            n = len(input_ids[i])
            ids[row, :n] = torch.tensor(input_ids[i])
            attention[row, :n] = 1
            mask[row, :n] = torch.tensor(completion_mask[i])
        ids, attention, mask = ids.to(device), attention.to(device), mask.to(device)
        with autocast(bf16):
            logits = model(input_ids=ids, attention_mask=attention).logits
        # Token t is predicted from position t-1; only completion positions are normalised (not the prompt).
        scored = mask[:, 1:].bool()
        logprobs = torch.log_softmax(logits[:, :-1][scored].float(), dim=-1)
        target = logprobs.gather(-1, ids[:, 1:][scored].unsqueeze(-1)).squeeze(-1)
        rows = torch.arange(len(batch), device=device).unsqueeze(1).expand_as(scored)[scored]
        per_row = torch.zeros(len(batch), device=device).index_add_(0, rows, target)
        sums[batch] = per_row.cpu().numpy()
        counts[batch] = scored.sum(dim=1).cpu().numpy()
    return sums, counts


def completion_loss(model, dataset, pad_id: int, batch_size: int = 16, bf16: bool = False) -> dict[str, float]:
    """Token-weighted mean NLL of the replies (prompt tokens excluded, as in training) and its perplexity."""
    sums, counts = completion_logprobs(model, dataset["input_ids"], dataset["completion_mask"], pad_id,
                                       batch_size, bf16)
    loss = float(-sums.sum() / max(counts.sum(), 1))
    return {"eval_loss": round(loss, 4), "perplexity": round(math.exp(loss), 3), "eval_tokens": int(counts.sum())}


def preference_accuracy(model, tokenizer, config: PromptConfig, pairs, max_length: int,
                        batch_size: int = 16, bf16: bool = False) -> float:
    """Share of pairs where the preferred reply has the higher mean token log-likelihood than the rejected."""
    rendered = [prompts.render_prompt(config, tokenizer, p) for p in pairs[prompts.PROMPT]]

    def mean_logprob(column: str) -> np.ndarray:
        completions = [prompts.render_completion(config, tokenizer, p, c)
                       for p, c in zip(pairs[prompts.PROMPT], pairs[column])]
        encoded = tokenize.encode_prompt_completion(tokenizer, rendered, completions, max_length,
                                                    config.format == "instruction")
        sums, counts = completion_logprobs(model, encoded["input_ids"], encoded["completion_mask"],
                                           tokenizer.pad_token_id, batch_size, bf16)
        return sums / np.maximum(counts, 1)

    return round(float((mean_logprob(prompts.COMPLETION) > mean_logprob(prompts.REJECTED)).mean()), 4)


@torch.no_grad()
def generate(model, tokenizer, prompt_texts: list[str], *, max_new_tokens: int, stop_strings: list[str],
             repetition_penalty: float = 1.1, batch_size: int = 8, bf16: bool = False,
             add_special_tokens: bool = True) -> list[str]:
    """Greedy replies, cut at the first stop string or eos."""
    model.eval()
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # decoder-only batches pad on the left
    replies = []
    try:
        for start in range(0, len(prompt_texts), batch_size):
            batch = tokenizer(prompt_texts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=add_special_tokens).to(device)
            with autocast(bf16):
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     repetition_penalty=repetition_penalty, pad_token_id=tokenizer.pad_token_id,
                                     stop_strings=stop_strings or None, tokenizer=tokenizer)
            new_tokens = out[:, batch["input_ids"].shape[1]:]
            for row in new_tokens:
                text = tokenizer.decode(row, skip_special_tokens=False)
                replies.append(prompts.cut_at_stop(text, stop_strings, tokenizer.eos_token))
    finally:
        tokenizer.padding_side = side
    return replies


@torch.no_grad()
def sentence_embeddings(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """MiniLM-L6 mean-pooled, L2-normalised sentence embeddings (the offline all-MiniLM-L6-v2 package)."""
    from transformers import AutoModel, AutoTokenizer

    from ftlab_pipelines.core.modeling.offline_models import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    encoder = AutoModel.from_pretrained(minilm_path()).eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=256,
                          return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 384))


def persona_score(generations: list[str], references: list[str]) -> float:
    """Mean cosine similarity of each generation to the held-out persona reply for the same message."""
    if not generations:
        return float("nan")
    emb = sentence_embeddings([*generations, *references])
    gen, ref = emb[:len(generations)], emb[len(generations):]
    return round(float((gen * ref).sum(axis=1).mean()), 4)
