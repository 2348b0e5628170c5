"""Library code leaves process-wide state alone: loading a classifier does not reseed the global RNGs (its new head
is still reproducible from its seed), and tokenizing does not write the process environment."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ftlab_pipelines.core.config.labs import ModelConfig
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.text import tokenize

CORE = Path(__file__).resolve().parents[1] / "ftlab_pipelines" / "core"


@pytest.fixture(scope="module")
def tiny_bert(tiny_models) -> ModelConfig:
    return ModelConfig(name=str(tiny_models.classifier))


def head(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("classifier")}


def global_rng_states():
    return torch.random.get_rng_state(), random.getstate(), np.random.get_state()


def test_classifier_head_is_seeded_without_touching_the_global_rngs(tiny_bert):
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    before = global_rng_states()
    first = head(models.load_classifier(tiny_bert, ["ham", "spam"], seed=7))
    after = global_rng_states()
    assert torch.equal(before[0], after[0]) and before[1] == after[1]
    assert all(np.array_equal(a, b) for a, b in zip(before[2], after[2]))

    torch.manual_seed(99)  # whatever the global state, the seed decides the head
    again = head(models.load_classifier(tiny_bert, ["ham", "spam"], seed=7))
    other = head(models.load_classifier(tiny_bert, ["ham", "spam"], seed=8))
    assert first.keys() == again.keys() and first
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)


def test_fast_tokenizer_in_threads_gives_the_same_ids_and_leaves_the_environment_alone(tiny_bert, monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    tokenizer = models.load_tokenizer(tiny_bert)
    texts = [f"message {i}: " + "see you later " * (i % 7) for i in range(3000)]
    environment, truncation = dict(os.environ), tokenizer.backend_tokenizer.truncation
    ids, lengths = tokenize.TextEncoder(tokenizer, max_length=24).encode(texts)
    assert dict(os.environ) == environment
    assert tokenizer.backend_tokenizer.truncation == truncation  # the tokenizer is put back as it was
    expected = tokenizer(texts, truncation=True, max_length=24)["input_ids"]
    assert ids.to_pylist() == expected and lengths.tolist() == [len(e) for e in expected]


def test_encode_in_threads_keeps_the_order():
    texts = [str(i) for i in range(1000)]
    assert tokenize.encode_in_threads(lambda part: [int(t) for t in part], texts, threads=3) == list(range(1000))
    assert tokenize.encode_in_threads(lambda part: list(part), texts[:10], threads=4) == texts[:10]


# The one exception, and why: mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ, and
# using_store puts it back as it was (tests/test_mlflow_model.py checks that the environment ends unchanged).
RESTORES_MLFLOWS_WRITES = {"tracking.py"}


def test_core_never_writes_the_process_environment():
    writes = re.compile(r"os\.environ\[[^\]]+\]\s*=|os\.environ\.(setdefault|update|pop)\(|os\.putenv\(|"
                        r"os\.unsetenv\(|del os\.environ")
    offenders = [str(p.relative_to(CORE)) for p in CORE.rglob("*.py") if writes.search(p.read_text())]
    assert sorted(offenders) == sorted(RESTORES_MLFLOWS_WRITES)


def test_tabular_rows_still_tokenize_through_the_threads(tiny_bert, tmp_path):
    tokenizer = models.load_tokenizer(tiny_bert)
    frame = pd.DataFrame({"text": [f"row {i} " * (i % 5 + 1) for i in range(1200)], "label": ["a", "b"] * 600})
    stats = tokenize.tokenize_splits({"train": frame}, tokenizer, text_column="text", label_column="label",
                                     labels=["a", "b"], template="{text}", max_length=16, out_dir=tmp_path / "tok")
    assert stats["train"]["rows"] == 1200
    row = tokenize.load_tokenized(tmp_path / "tok")["train"][1199]
    assert row["input_ids"] == tokenizer(frame["text"][1199], truncation=True, max_length=16)["input_ids"]
