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
from ftlab_pipelines.core.runtime import text
from ftlab_pipelines.core.text import tabular
from ftlab_pipelines.core.training import train


def test_row_template_order_rounding_names_and_separator():
    config = RenderConfig(columns=["V14", "Amount", "Time"], decimals=1, separator=" | ", field_template="{name}={value}",
                          names={"Amount": "amount"}, prefix="tx: ")
    batch = {"V14": [-4.2249, -0.04, float("nan")], "Amount": [149.62, 2.0, 0.0], "Time": [406.0, 7.0, 1.0],
             "Class": [1, 0, 0]}
    assert text.render_rows(batch, config.model_dump()) == [
        "tx: V14=-4.2 | amount=149.6 | Time=406.0",
        "tx: V14=0 | amount=2.0 | Time=7.0",  # no "-0.0"
        "tx: V14=missing | amount=0 | Time=1.0",
    ]


def test_binned_rendering_writes_each_value_as_its_train_quantile_word():
    train = pd.DataFrame({"V14": [-9.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                          "Merchant": list("abcdefghij"), "Class": [1] + [0] * 9})
    upsampled = pd.concat([train, *[train.head(1)] * 20], ignore_index=True)  # 20 copies of the fraud row
    config = RenderConfig(columns=["V14", "Merchant"], field_template="{name} {value}", bins=5)
    fitted = tabular.fitted_render(config, upsampled)
    assert fitted["bin_edges"] == {"V14": list(np.quantile(train.V14, [0.2, 0.4, 0.6, 0.8]))}  # distinct rows only
    batch = {"V14": [-50.0, 0.0, 1.5, 99.0, float("nan")], "Merchant": list("abcde")}
    assert text.render_rows(batch, fitted) == ["V14 very low, Merchant a", "V14 low, Merchant b",
                                               "V14 mid, Merchant c", "V14 very high, Merchant d",
                                               "V14 missing, Merchant e"]
    with pytest.raises(ValueError, match=r"row 0, column 'V14': 'abc' is not a number"):
        text.render_rows({"V14": ["abc"], "Merchant": ["a"]}, fitted)
    with pytest.raises(ValueError, match="bin edges fitted on the train split are missing"):
        text.render_rows(batch, config.model_dump())
    with pytest.raises(ValueError, match="bin_words has 2 words but render.bins is 5"):
        RenderConfig(columns=["V14"], bins=5, bin_words=["low", "high"])


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
    raw["render"]["bins"] = 5
    raw["eval"]["prevalence"]["resamples"] = 200
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
    assert {"fine_tuned", "logreg_features", "hist_gradient_boosting"} <= set(evaluation.metrics)
    fine = evaluation.metrics["fine_tuned"]
    assert fine["threshold"] is not None and "roc_auc" in fine
    assert evaluation.primary_metric == "adjusted_average_precision"
    assert evaluation.primary_value == fine["adjusted_average_precision"]
    comparison = (evaluation.path / "comparison.md").read_text()
    assert f"{fine['average_precision']:.4f}" in comparison
    # At the natural rate: recall on the validation positives that did not tune the threshold, FPR on the test's
    # negatives, an interval around every estimate, for every model in the table.
    validation_frauds = split.distributions["validation"]["fraud"]
    for name in ("fine_tuned", "logreg_features", "hist_gradient_boosting"):
        found = evaluation.metrics[name]
        assert found["adjusted_prevalence"] == pytest.approx(492 / 284_807)
        assert found["adjusted_check_positives"] == round(validation_frauds / 2)
        assert found["adjusted_negatives"] == split.distributions["test"]["legit"]
        for metric in ("precision", "recall", "average_precision"):
            assert found[f"adjusted_{metric}_low"] <= found[f"adjusted_{metric}"] <= found[f"adjusted_{metric}_high"]
        assert f"| {name} | {found['adjusted_precision']:.4f} [" in comparison
    assert "π = 0.001727 (ULB creditcard.csv" in comparison
    metadata = result.asset_materializations_for_node("creditcard_fraud__evaluation")[0].metadata
    assert metadata["natural_rate_precision"].value == pytest.approx(fine["adjusted_precision"])
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{fraud_run['home'] / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ftlab/creditcard_fraud").experiment_id],
                                "tags.asset = 'evaluation'")
    assert run.data.metrics["test_adjusted_precision"] == pytest.approx(fine["adjusted_precision"])
    assert run.data.metrics["hist_gradient_boosting_test_adjusted_average_precision_low"] == pytest.approx(
        evaluation.metrics["hist_gradient_boosting"]["adjusted_average_precision_low"])
    assert "seed (reported, not measured)" in comparison and "0.2730" in comparison
    for png in ("pr_curve.png", "roc_curve.png", "confusion_matrix.png"):
        assert (evaluation.path / png).is_file()
    tokenized = result.asset_value(dg.AssetKey(["creditcard_fraud", "tokenized"]))
    assert tokenized.stats["test"]["rows"] == 1500
    assert set(tokenized.render["bin_edges"]) == set(raw_lab()["render"]["columns"])

    from ftlab_pipelines.cli import main

    monkeypatch.setenv("FTLAB_HOME", str(fraud_run["home"]))
    release = result.asset_value(dg.AssetKey(["creditcard_fraud", "published_adapter"]))
    threshold = json.loads((release.path / "threshold.json").read_text())["threshold"]
    assert threshold == fine["threshold"]
    assert "At the natural positive rate" in (release.path / "README.md").read_text()  # the model card
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


def output(run, asset: str):
    import dagster as dg

    return run["result"].asset_value(dg.AssetKey(["creditcard_fraud", asset]))


def raw_lab() -> dict:
    return yaml.safe_load((REPO / "labs" / "creditcard_fraud.yaml").read_text())


@requires_data
def test_predict_renders_raw_rows_exactly_as_training_did(fraud_run, tmp_path, capsys, monkeypatch):
    """The released model turns raw columns into the same token ids the adapter was trained and evaluated on, and
    `ftlab predict --csv` prints the released model's scores."""
    from conftest import release_model

    from ftlab_pipelines.cli import main
    from ftlab_pipelines.core.text import tokenize

    test = output(fraud_run, "splits").frames()["test"].head(200)
    served = release_model(fraud_run["home"], "creditcard_fraud")
    runtime = served.unwrap_python_model().runtime
    assert runtime.config["render"] == output(fraud_run, "tokenized").render
    texts = runtime.texts(test)
    assert "V14 very low" in " ".join(texts) and "V14 mid" in " ".join(texts)
    encoded = runtime.tokenizer(text.apply_template(texts, runtime.config["template"]), truncation=True,
                                max_length=runtime.config["max_length"])["input_ids"]
    trained = tokenize.load_tokenized(output(fraud_run, "tokenized").dataset_path)["test"]
    assert encoded == [row["input_ids"] for row in trained.select(range(200))]

    csv = tmp_path / "rows.csv"
    test.drop(columns=["Class"]).to_csv(csv, index=False)
    monkeypatch.setenv("FTLAB_HOME", str(fraud_run["home"]))
    assert main(["predict", "creditcard_fraud", "--csv", str(csv)]) == 0
    printed = [json.loads(line)["probabilities"]["fraud"] for line in capsys.readouterr().out.splitlines()]
    assert np.abs(np.array(printed) - served.predict(test)["prob_fraud"].to_numpy()).max() <= 5e-5


@requires_data
def test_bin_edges_come_from_the_train_split_only(fraud_run, tmp_path, monkeypatch):
    """The tokenized stage re-run on the same train split with every validation and test value changed fits the
    same edges; changing train rows moves them."""
    import dataclasses
    import shutil

    from ftlab_pipelines.core.config.loading import load_labs
    from ftlab_pipelines.core.config.settings import Settings
    from ftlab_pipelines.core.stages.pipeline import STAGES
    from ftlab_pipelines.core.stages.runner import StageContext, run_stage
    from ftlab_pipelines.core.tracking import Tracker

    monkeypatch.setenv("FTLAB_HOME", str(fraud_run["home"]))
    settings = Settings.from_env()
    lab = load_labs(fraud_run["labs"], settings)["creditcard_fraud"]
    splits_result, fitted = output(fraud_run, "splits"), output(fraud_run, "tokenized").render
    features = [c for c in fitted["bin_edges"]]

    def edges_after(changed: tuple[str, ...], name: str) -> dict:
        copy = tmp_path / name
        shutil.copytree(splits_result.path, copy)
        for split in changed:
            part = pd.read_parquet(copy / f"{split}.parquet")
            part[features] = part[features] * 3 + 100
            part.to_parquet(copy / f"{split}.parquet", index=False)
        changed_splits = dataclasses.replace(splits_result, key=f"{splits_result.key}-{name}", dir=str(copy))
        with Tracker(settings).asset_run(lab.name, "tokenized", f"test-{name}", {}) as run:
            done = run_stage(STAGES["tokenized"], lab, {"splits": changed_splits}, StageContext(settings, run))
        assert done.result.key != output(fraud_run, "tokenized").key  # re-fitted, not read back
        return done.result.render["bin_edges"]

    assert edges_after(("validation", "test"), "held_out_changed") == fitted["bin_edges"]
    moved = edges_after(("train",), "train_changed")
    assert all(moved[c] != fitted["bin_edges"][c] for c in features)
