"""The 3-class financial_sentiment chain through Dagster: macro metrics, per-class report, no threshold."""

from __future__ import annotations

import dagster as dg
from conftest import requires_data, tiny_lab, write_labs

from ftlab_pipelines.definitions import build_definitions
from ftlab_pipelines.defs.resources import default_resources

pytestmark = requires_data


def test_financial_sentiment_chain_reports_macro_metrics(tmp_path):
    labs = write_labs(tmp_path / "labs", {"financial_sentiment": tiny_lab("financial_sentiment", max_rows=300)})
    defs = build_definitions(str(labs))
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), instance=instance, resources=default_resources())
    assert result.success
    evaluation = result.output_for_node("financial_sentiment__evaluation")
    fine = evaluation.metrics["fine_tuned"]
    assert evaluation.primary_metric == "macro_f1" and evaluation.threshold is None
    assert set(fine["per_class"]) == {"negative", "neutral", "positive"}
    assert len(fine["confusion_matrix"]) == 3 and fine["f1"] == fine["macro_f1"]
    assert "negative" in fine["report"]
    published = result.asset_materializations_for_node("financial_sentiment__published_adapter")[0].metadata
    assert published["version"].value == 1 and "v1 promoted" in published["promotion_gate"].value
