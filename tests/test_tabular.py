"""Tabular labs (creditcard_fraud): row template, explicit test source, overlap removal, train-only upsampling,
feature baselines, class weights, and the chain on a small subsample through Dagster (tiny BERT)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, requires_data

from ftlab_pipelines.core.config.labs import RenderConfig, SourceConfig, SplitConfig
from ftlab_pipelines.core.data import sources, splits
from ftlab_pipelines.core.evaluation import baselines
from ftlab_pipelines.core.training import train


def test_row_template_order_rounding_names_and_separator():
    config = RenderConfig(columns=["V14", "Amount", "Time"], decimals=1, separator=" | ", field_template="{name}={value}",
                          names={"Amount": "amount"}, prefix="tx: ")
    batch = {"V14": [-4.2249, -0.04, float("nan")], "Amount": [149.62, 2.0, 0.0], "Time": [406.0, 7.0, 1.0],
             "Class": [1, 0, 0]}
    assert sources.render_rows(batch, config) == [
        "tx: V14=-4.2 | amount=149.6 | Time=406.0",
        "tx: V14=0 | amount=2.0 | Time=7.0",  # no "-0.0"
        "tx: V14=missing | amount=0 | Time=1.0",
    ]


def frame(n_legit: int, n_fraud: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    rows = n_legit + n_fraud
    return pd.DataFrame({"V1": rng.normal(size=rows).round(6), "Amount": rng.uniform(0, 100, rows).round(2),
                         "Class": ["legit"] * n_legit + ["fraud"] * n_fraud})


def test_overlap_with_the_test_source_is_removed_and_counted():
    main, test = frame(900, 100, start=1), frame(2000, 4, start=2)
    shared = main.sample(15, random_state=0)
    test = pd.concat([test, shared], ignore_index=True)
    result = splits.make_splits(main, ["V1", "Amount"], "Class", SplitConfig(train=0.8, validation=0.2, test=0),
                                test=test)
    assert result.test_overlap_removed == 15
    pd.testing.assert_frame_equal(result.frames["test"], test)  # the test set is the given one, untouched
    test_keys = set(map(tuple, test[["V1", "Amount"]].to_numpy()))
    for name in ("train", "validation"):
        assert not test_keys & set(map(tuple, result.frames[name][["V1", "Amount"]].to_numpy()))
    assert len(result.frames["train"]) + len(result.frames["validation"]) == 1000 - 15


def test_upsampling_touches_the_train_split_only():
    main, test = frame(3600, 40, start=3), frame(5000, 9, start=4)
    config = SplitConfig(train=0.8, validation=0.2, test=0, balance="upsample", minority_share=0.1)
    result = splits.make_splits(main, ["V1", "Amount"], "Class", config, test=test)
    train_counts = result.distributions["train (upsampled)"]
    assert train_counts["fraud"] / sum(train_counts.values()) == pytest.approx(0.1, abs=0.005)
    assert result.distributions["validation"]["fraud"] == 8  # 20% of 40, natural rate kept
    assert result.distributions["test"] == {"fraud": 9, "legit": 5000}


def test_a_test_source_with_other_columns_is_a_clear_error(tmp_path, monkeypatch):
    frame(50, 10).to_csv(tmp_path / "train.csv", index=False)
    frame(50, 10).rename(columns={"Amount": "amount_eur"}).to_csv(tmp_path / "test.csv", index=False)
    source = SourceConfig(local_path=str(tmp_path / "train.csv"), test_local_path=str(tmp_path / "test.csv"),
                          dtype="infer", label_column="Class")
    main, origin = sources.load_raw(source, None)
    with pytest.raises(sources.SourceError, match=r"test.csv: the test source's columns differ from .*train.csv: "
                                                  r"missing \['Amount'\], extra \['amount_eur'\]"):
        sources.load_test(source, None, list(main.columns), origin)


def test_feature_baselines_learn_a_separable_table():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] + 0.1 * rng.normal(size=400) > 1.0).astype(int)
    for kind in ("logreg_features", "hist_gradient_boosting"):
        probs = baselines.feature_baseline(kind, x[:300], y[:300], {"test": x[300:]}, n_classes=2)["test"]
        assert probs.shape == (100, 2) and np.allclose(probs.sum(1), 1)
        assert ((probs[:, 1] > 0.5) == y[300:]).mean() > 0.9


def test_class_weights_are_inverse_frequency():
    weights = train.inverse_frequency_weights([0] * 90 + [1] * 10, 2)
    assert weights.tolist() == pytest.approx([100 / 180, 100 / 20])
    assert train.inverse_frequency_weights([0, 0, 2], 3).tolist()[1] == 0.0


@pytest.fixture(scope="module")
def fraud_run(tmp_path_factory, tiny_models, materialize_labs):
    raw = yaml.safe_load((REPO / "labs" / "creditcard_fraud.yaml").read_text())
    raw["model"]["name"] = str(tiny_models.classifier)
    raw["source"].update({"max_rows": 600, "test_max_rows": 1500})
    raw["train"].update({"epochs": 1, "max_steps": 6, "save_steps": 3, "logging_steps": 2, "batch_size": 16,
                         "class_weighted_loss": True})
    with materialize_labs(tmp_path_factory.mktemp("fraud"), {"creditcard_fraud": raw}) as run:
        yield run


@requires_data
def test_fraud_chain_materializes_with_baselines_reference_and_threshold(fraud_run, capsys, monkeypatch):
    import dagster as dg

    result = fraud_run["result"]
    assert result.success
    split = result.asset_value(dg.AssetKey(["creditcard_fraud", "splits"]))
    assert split.rows["test"] == 1500
    frames = split.frames()
    features = [c for c in frames["test"].columns if c != "Class"]
    test_rows = set(map(tuple, frames["test"][features].to_numpy()))
    for name in ("train", "validation"):  # the rows shared with the natural-rate test source left train/validation
        assert not test_rows & set(map(tuple, frames[name][features].to_numpy())), name
    evaluation = result.asset_value(dg.AssetKey(["creditcard_fraud", "evaluation"]))
    assert {"fine_tuned", "base_model", "logreg_features", "hist_gradient_boosting"} <= set(evaluation.metrics)
    fine = evaluation.metrics["fine_tuned"]
    assert fine["threshold"] is not None and "roc_auc" in fine
    assert evaluation.primary_metric == "average_precision"
    assert evaluation.primary_value == fine["average_precision"]
    comparison = (evaluation.path / "comparison.md").read_text()
    assert f"{fine['average_precision']:.4f}" in comparison
    assert "seed (reported, not measured)" in comparison and "0.2730" in comparison
    for png in ("pr_curve.png", "roc_curve.png", "confusion_matrix.png"):
        assert (evaluation.path / png).is_file()
    tokenized = result.asset_value(dg.AssetKey(["creditcard_fraud", "tokenized"]))
    assert tokenized.stats["test"]["rows"] == 1500

    from ftlab_pipelines.cli import main

    monkeypatch.setenv("FTLAB_HOME", str(fraud_run["home"]))
    release = result.asset_value(dg.AssetKey(["creditcard_fraud", "published_adapter"]))
    threshold = json.loads((release.path / "threshold.json").read_text())["threshold"]
    assert threshold == fine["threshold"]
    # The model reads the raw columns and renders them itself: a free text is refused with what to send instead.
    assert main(["predict", "creditcard_fraud", "V14 -9.5, V17 -12.1"]) == 2
    assert "--csv" in capsys.readouterr().err

    rows = fraud_run["home"] / "rows.csv"
    pd.read_parquet(split.split_path("test")).head(3).to_csv(rows, index=False)
    assert main(["predict", "creditcard_fraud", "--csv", str(rows)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["row"] for line in lines] == [0, 1, 2]
    assert all((p["label"] == "fraud") == (p["probabilities"]["fraud"] >= threshold) or
               abs(p["probabilities"]["fraud"] - threshold) <= 5e-5 for p in lines)
