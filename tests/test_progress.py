"""Progress lines of long steps: tqdm-wrapped iteration and the Trainer callback, on the tiny BERT."""

from __future__ import annotations

import logging
import re

import pandas as pd
import pytest

from ftlab_pipelines.core import progress
from ftlab_pipelines.core.config.labs import ModelConfig, PeftConfig, TrainConfig
from ftlab_pipelines.core.evaluation import inference
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.text import tokenize
from ftlab_pipelines.core.training import train

LOGGER = "ftlab_pipelines.core.progress"


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize("seconds, text", [(5, "5s"), (65, "1m05s"), (7380, "2h03m")])
def test_duration(seconds, text):
    assert progress.duration(seconds) == text


def test_track_yields_everything_and_logs_every_tenth(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert list(progress.track(range(20), "count", unit="rows")) == list(range(20))
    lines = messages(caplog)
    assert len(lines) == 10  # every 2 of 20
    assert lines[0].startswith("count: 2/20 (10%), ") and "rows/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("count: 20/20 (100%)") and lines[-1].endswith("ETA 0s")


def test_step_logs_start_and_duration(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with progress.step("loading things"):
        pass
    assert messages(caplog) == ["loading things ...", "loading things: done in 0s"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_models):
    """The tiny BERT's config, tokenizer and a 48-row tokenized set."""
    config = ModelConfig(name=str(tiny_models.classifier))
    tokenizer = models.load_tokenizer(config)
    frame = pd.DataFrame({"text": [f"see you at {i} pm" for i in range(24)] + [f"WIN £{i}00 now!!" for i in range(24)],
                          "label": ["ham"] * 24 + ["spam"] * 24})
    out = tmp_path_factory.mktemp("tok") / "dataset"
    tokenize.tokenize_splits({"train": frame, "validation": frame.iloc[::6]}, tokenizer, text_column="text",
                             label_column="label", labels=["ham", "spam"], template="{text}", max_length=32,
                             out_dir=out)
    return config, tokenizer, tokenize.load_tokenized(out)


def test_training_logs_step_loss_tokens_per_s_and_eta(tiny, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    config, tokenizer, dataset = tiny
    model = models.attach_lora(models.load_classifier(config, ["ham", "spam"]), PeftConfig(r=4, alpha=8))
    settings = TrainConfig(max_steps=4, batch_size=8, save_steps=4, logging_steps=2, learning_rate=1e-3)
    train.train_adapter(model, tokenizer, dataset, settings, checkpoint_dir=tmp_path / "ckpt", out_dir=tmp_path / "out")
    lines = messages(caplog)
    assert lines[0] == "training: 48 examples, 4 steps (from step 0)"
    steps = [line for line in lines if line.startswith("train step")]
    pattern = r"train step: (\d)/4 \(\d+%\), loss \d+\.\d{4}, ([\d,]+) tokens/s, ([\d.,]+) steps/s, ETA \w+"
    assert [re.fullmatch(pattern, line).group(1) for line in steps] == ["2", "4"], steps
    # 48 rows in batches of 8: a step carries a sixth of the train set's real tokens (max_steps cuts the epochs)
    tokens_per_step = sum(dataset["train"]["length"]) / 6
    for line in steps:
        tokens_per_s, steps_per_s = (float(g.replace(",", "")) for g in re.fullmatch(pattern, line).groups()[1:])
        assert tokens_per_s == pytest.approx(steps_per_s * tokens_per_step, rel=0.15)
    assert any(line.startswith("validation loss ") for line in lines)


def test_evaluation_predictions_report_progress(tiny, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    config, tokenizer, dataset = tiny
    model = models.load_classifier(config, ["ham", "spam"])
    probs = inference.predict_proba(model, tokenizer, dataset["train"]["input_ids"], batch_size=16, desc="evaluate x")
    assert probs.shape == (48, 2)
    lines = messages(caplog)
    assert [line.split(" (")[0] for line in lines] == ["evaluate x: 1/3", "evaluate x: 2/3", "evaluate x: 3/3"]
