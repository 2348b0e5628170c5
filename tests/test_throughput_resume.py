"""tokens/s after a resume counts only the steps this process trained, over the seconds it trained them.

A run stopped at step 10 and resumed to step 12 trains 2 steps; dividing every step's tokens by the resumed run's
seconds reported several times the uninterrupted rate. Real Trainer, tiny random BERT (a few seconds)."""

from __future__ import annotations

import pandas as pd
import pytest

from ftlab_pipelines.core.config.labs import ModelConfig, PeftConfig, TrainConfig
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.text import tokenize
from ftlab_pipelines.core.training import train

STOP, END, BATCH = 10, 12, 64
LABELS = ["a", "b"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("throughput")
    config = ModelConfig(name=str(tiny_models.classifier))
    tokenizer = models.load_tokenizer(config)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "it", "rains"]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(20 + i % 40)) for i in range(400)]
    frame = pd.DataFrame({"text": texts, "label": LABELS * 200})
    tokenize.tokenize_splits({"train": frame}, tokenizer, text_column="text", label_column="label", labels=LABELS,
                             template="{text}", max_length=64, out_dir=root / "tok")
    return config, tokenizer, tokenize.load_tokenized(root / "tok")


def run(setup, checkpoints, out, max_steps: int) -> tuple[dict, list[int]]:
    """Train to `max_steps` (resuming from `checkpoints` if it holds one); the metrics and each batch's tokens."""
    config, tokenizer, dataset = setup
    model = models.attach_lora(models.load_classifier(config, LABELS), PeftConfig(r=4, alpha=8))
    settings = TrainConfig(max_steps=max_steps, batch_size=BATCH, save_steps=STOP, logging_steps=1,
                           learning_rate=1e-3, group_by_length=False)
    batches: list[int] = []
    result = train.train_adapter(model, tokenizer, dataset, settings, checkpoint_dir=checkpoints, out_dir=out,
                                 on_train_batch=lambda inputs: batches.append(int(inputs["attention_mask"].sum())))
    return result.metrics, batches


def test_resumed_run_reports_its_own_tokens_per_second(setup, tmp_path):
    # The interrupted run goes first: it also absorbs the process's one-off warm-up.
    first, _ = run(setup, tmp_path / "ckpt", tmp_path / "first", STOP)
    resumed, resumed_batches = run(setup, tmp_path / "ckpt", tmp_path / "resumed", END)
    whole, whole_batches = run(setup, tmp_path / "ckpt-whole", tmp_path / "whole", END)

    assert first["resumed"] == 0.0 and first["train_tokens"] == sum(whole_batches[:STOP])
    assert resumed["resumed"] == 1.0 and resumed["resumed_from_step"] == STOP and resumed["train_steps"] == END
    assert len(resumed_batches) == END - STOP
    # The tokens of steps 11 and 12 only, the same batches the uninterrupted run trained at those steps.
    assert resumed["train_tokens"] == sum(resumed_batches) == sum(whole_batches[STOP:])
    assert whole["train_tokens"] == sum(whole_batches)
    for metrics in (first, resumed, whole):
        assert metrics["tokens_per_s"] == pytest.approx(metrics["train_tokens"] / metrics["train_seconds"], rel=0.02)

    # Against both runs that trained from scratch, so another process slowing one of them cannot fail the test.
    rates = first["tokens_per_s"], whole["tokens_per_s"]
    print(f"\ntokens/s: from scratch {rates[0]} and {rates[1]}, resumed {resumed['tokens_per_s']}")
    # Counting all 12 steps' tokens over the resumed run's seconds gave ~3.5x here.
    assert 0.2 * min(rates) < resumed["tokens_per_s"] < 2.0 * max(rates)


# Two DDP ranks: tests/test_distributed.py checks that each attempt counts the tokens both ranks trained in it.
