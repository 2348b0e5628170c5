"""Dedup, stratified split and train-only rebalancing on the real SMS data."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import requires_data, shared_data_dir

from ftlab_pipelines.core.config.labs import SplitConfig
from ftlab_pipelines.core.data.splits import make_splits, undersample, upsample


@pytest.fixture(scope="module")
def sms() -> pd.DataFrame:
    return pd.read_csv(shared_data_dir() / "sms_spam" / "sms_spam.csv", dtype=str)


@requires_data
def test_sms_split_removes_403_duplicates_and_never_leaks(sms):
    result = make_splits(sms, "text", "label", SplitConfig(balance="undersample", minority_share=0.5))
    assert result.duplicates_removed == 403
    texts = {name: set(f["text"]) for name, f in result.frames.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    rows = {name: len(f) for name, f in result.frames.items()}
    natural = rows["validation"] + rows["test"] + sum(result.distributions["train (natural)"].values())
    assert natural == 5171
    assert rows["test"] == pytest.approx(0.2 * 5171, abs=2)
    assert result.distributions["train (undersampled)"]["ham"] == result.distributions["train (undersampled)"]["spam"]
    test_share = result.distributions["test"]["spam"] / rows["test"]
    assert test_share == pytest.approx(653 / 5171, abs=0.005)


@requires_data
def test_split_is_reproducible_with_seed(sms):
    a = make_splits(sms, "text", "label", SplitConfig(seed=7))
    b = make_splits(sms, "text", "label", SplitConfig(seed=7))
    c = make_splits(sms, "text", "label", SplitConfig(seed=8))
    assert a.frames["test"]["text"].tolist() == b.frames["test"]["text"].tolist()
    assert a.frames["test"]["text"].tolist() != c.frames["test"]["text"].tolist()


def _frame(n_major: int, n_minor: int) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"t{i}" for i in range(n_major + n_minor)],
                         "label": ["a"] * n_major + ["b"] * n_minor})


def test_undersample_reaches_target_share():
    out = undersample(_frame(900, 100), "label", minority_share=0.25, seed=0)
    assert out["label"].value_counts().to_dict() == {"a": 300, "b": 100}


def test_upsample_reaches_target_share_and_keeps_all_rows():
    frame = _frame(900, 10)
    out = upsample(frame, "label", minority_share=0.1, seed=0)
    assert out["label"].value_counts()["b"] == 100
    assert set(frame["text"]) <= set(out["text"])


def test_too_rare_class_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than 3 rows"):
        make_splits(_frame(50, 2), "text", "label", SplitConfig())
