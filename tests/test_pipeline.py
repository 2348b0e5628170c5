"""The whole sms_spam chain through Dagster on a subsample, with the tiny BERT and a real MLflow store (the same
chain on the real MiniLM, with its quality checks: tests/test_real_models.py)."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from conftest import requires_data, tiny_lab
from mlflow import MlflowClient

pytestmark = requires_data

ASSETS = ["raw_dataset", "validated_dataset", "splits", "tokenized", "adapter", "evaluation", "published_adapter"]


def test_every_asset_materialized(tiny_spam):
    result = tiny_spam["result"]
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    materialized = {tuple(e.asset_key.path) for e in result.get_asset_materialization_events()}
    assert materialized == {("sms_spam", a) for a in ASSETS}


def test_contract_check_passed(tiny_spam):
    evaluations = tiny_spam["result"].get_asset_check_evaluations()
    assert sorted((e.check_name, e.passed) for e in evaluations) == [("data_contract", True), ("merge_parity", True),
                                                                     ("promotion_gate", True)]


def test_splits_keep_natural_distribution_outside_train(tiny_spam):
    splits = tiny_spam["result"].output_for_node("sms_spam__splits")
    dist = splits.distributions
    spam_share = lambda counts: counts["spam"] / sum(counts.values())  # noqa: E731
    lab = tiny_lab("sms_spam")
    assert spam_share(dist["train (undersampled)"]) == pytest.approx(lab["split"]["minority_share"], abs=0.03)
    natural = spam_share(dist["deduplicated"])
    assert natural < lab["split"]["minority_share"] - 0.01  # otherwise this run shows no undersampling
    assert spam_share(dist["test"]) == pytest.approx(natural, abs=0.03)
    assert spam_share(dist["validation"]) == pytest.approx(natural, abs=0.05)


def test_mlflow_runs_are_nested_and_tagged(tiny_spam):
    from ftlab_pipelines.core.config.settings import Settings

    client = MlflowClient(Settings.from_env().mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("ftlab/sms_spam")
    runs = client.search_runs([experiment.experiment_id])
    dagster_run_id = tiny_spam["result"].run_id
    parents = [r for r in runs if r.data.tags.get("ftlab.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("ftlab.role") == "asset"]
    assert len(parents) == 1 and parents[0].data.tags["dagster_run_id"] == dagster_run_id
    assert sorted(r.data.tags["asset"] for r in children) == sorted(ASSETS)
    for run in children:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["dagster_run_id"] == dagster_run_id and tags["lab"] == "sms_spam"
        assert tags["data_hash"] and tags["config_hash"], run.data.tags
        assert run.info.status == "FINISHED"
    adapter_run = next(r for r in children if r.data.tags["asset"] == "adapter")
    assert adapter_run.data.params["train.max_steps"] == "12"
    assert adapter_run.data.metrics["trainable_params"] > 0 and adapter_run.data.metrics["tokens_per_s"] > 0
    evaluation_run = next(r for r in children if r.data.tags["asset"] == "evaluation")
    artifacts = {a.path for a in client.list_artifacts(evaluation_run.info.run_id)}
    assert {"confusion_matrix.png", "pr_curve.png", "metrics.json", "predictions.parquet"} <= artifacts
    # the validation figures at the tuned threshold, which settings are chosen by, are logged beside the test ones
    validation = tiny_spam["result"].output_for_node("sms_spam__evaluation").metrics["fine_tuned"]["validation"]
    assert evaluation_run.data.metrics["validation_f1"] == pytest.approx(validation["f1"])
    assert evaluation_run.data.metrics["validation_average_precision"] == pytest.approx(validation["average_precision"])


def test_model_registered_with_champion_alias(tiny_spam):
    from ftlab_pipelines.core.config.settings import Settings

    client = MlflowClient(Settings.from_env().mlflow_tracking_uri, registry_uri=Settings.from_env().mlflow_tracking_uri)
    champion = client.get_model_version_by_alias("ftlab-sms_spam", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["primary_metric"] == "f1"


def test_release_reloads_and_predicts(tiny_spam):
    import pandas as pd
    from conftest import release_model

    published = tiny_spam["result"].output_for_node("sms_spam__published_adapter")
    release = published.path
    for name in ["adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "labels.json",
                 "threshold.json", "README.md"]:
        assert (release / name).is_file(), name
    threshold = json.loads((release / "threshold.json").read_text())["threshold"]
    assert threshold == tiny_spam["result"].output_for_node("sms_spam__evaluation").threshold
    model = release_model(tiny_spam["home"], "sms_spam")
    preds = model.predict(pd.DataFrame({"text": ["Ok, see you at home tonight",
                                                 "URGENT! You won a FREE prize, call 09061701461 now"]}))
    assert list(preds.columns) == ["label", "score", "prob_ham", "prob_spam"]
    assert ((preds.prob_ham + preds.prob_spam - 1).abs() < 1e-5).all()
    # The release decides with its tuned threshold on the spam probability, not argmax.
    assert preds.label.tolist() == ["spam" if s >= threshold else "ham" for s in preds.prob_spam]
    assert preds.score.tolist() == preds.prob_spam.tolist()


def test_evaluation_compares_three_models(tiny_spam):
    evaluation = tiny_spam["result"].output_for_node("sms_spam__evaluation")
    assert set(evaluation.metrics) == {"fine_tuned", "base_model", "tfidf_logreg"}
    splits = tiny_spam["result"].output_for_node("sms_spam__splits")
    fine = evaluation.metrics["fine_tuned"]
    assert fine["threshold"] == evaluation.threshold
    (tn, fp), (fn, tp) = fine["confusion_matrix"]
    assert fine["n"] == tn + fp + fn + tp == splits.rows["test"]
    assert tp + fn == splits.distributions["test"]["spam"]
    assert fine["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    p, r = fine["validation"]["precision"], fine["validation"]["recall"]
    assert fine["validation"]["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert (evaluation.path / "pr_curve.png").stat().st_size > 1000
    # every validation and test row as scored, whose test predictions are the confusion matrix's
    import pandas as pd

    scored = pd.read_parquet(evaluation.path / "predictions.parquet")
    test = scored[scored.split == "test"]
    assert (scored.split == "validation").sum() == splits.rows["validation"] and len(test) == splits.rows["test"]
    assert test.text.tolist() == splits.frames()["test"].text.tolist()
    assert ((test.prediction == "spam") == (test.prob_spam >= evaluation.threshold)).all()
    assert [[((test.label == t) & (test.prediction == p)).sum() for p in ("ham", "spam")]
            for t in ("ham", "spam")] == fine["confusion_matrix"]


def test_metadata_shows_plots_inline(tiny_spam):
    instance = tiny_spam["instance"]
    event = instance.get_latest_materialization_event(dg.AssetKey(["sms_spam", "evaluation"]))
    metadata = event.asset_materialization.metadata
    assert "data:image/png;base64," in metadata["pr_curve"].value
    assert "fine_tuned" in metadata["comparison"].value
