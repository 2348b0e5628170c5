"""The 3-class financial_sentiment chain through Dagster on the tiny BERT: macro metrics, per-class report, no
threshold."""

from __future__ import annotations

import dagster as dg
import pytest
from conftest import requires_data, tiny_lab, write_labs

from ftlab_pipelines.definitions import build_definitions
from ftlab_pipelines.defs.resources import default_resources

pytestmark = requires_data


def test_financial_sentiment_chain_reports_macro_metrics(tmp_path, tiny_models):
    lab = tiny_lab("financial_sentiment", tiny_models.classifier, max_rows=300)
    labs = write_labs(tmp_path / "labs", {"financial_sentiment": lab})
    defs = build_definitions(str(labs))
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), instance=instance, resources=default_resources())
    assert result.success
    evaluation = result.output_for_node("financial_sentiment__evaluation")
    fine = evaluation.metrics["fine_tuned"]
    assert evaluation.primary_metric == "macro_f1" and evaluation.threshold is None
    assert set(fine["per_class"]) == {"negative", "neutral", "positive"}
    assert len(fine["confusion_matrix"]) == 3 and fine["f1"] == fine["macro_f1"]
    assert fine["macro_f1"] == pytest.approx(sum(c["f1"] for c in fine["per_class"].values()) / 3)
    test_counts = result.output_for_node("financial_sentiment__splits").distributions["test"]
    assert {label: c["support"] for label, c in fine["per_class"].items()} == test_counts
    assert [sum(row) for row in fine["confusion_matrix"]] == [test_counts[label] for label in lab["labels"]]
    assert "negative" in fine["report"]
    published = result.asset_materializations_for_node("financial_sentiment__published_adapter")[0].metadata
    assert published["version"].value == 1 and "v1 promoted" in published["promotion_gate"].value
