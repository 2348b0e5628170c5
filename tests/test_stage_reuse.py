"""Re-materializing a trained lab after a config edit: the stages that read the edited field run again, every
other stage reuses its stored result (validated_dataset and splits included)."""

from __future__ import annotations

import json

import dagster as dg
from conftest import copy_run_root, materialized_labs, requires_data, tiny_lab

pytestmark = requires_data

STAGES = ["raw_dataset", "validated_dataset", "splits", "tokenized", "adapter", "evaluation", "published_adapter"]


def reused(run: dict, lab: str) -> dict[str, bool]:
    events = run["result"].get_asset_materialization_events()
    return {e.asset_key.path[-1]: e.materialization.metadata["reused"].value for e in events
            if e.asset_key.path[0] == lab}


def test_positive_label_edit_reruns_evaluation_and_release_only(tiny_spam_run, tiny_models, tmp_path):
    """Regression: evaluation's key ignored positive_label, so the old threshold, metrics and labels.json stayed."""
    copy_run_root(tiny_spam_run["home"], tmp_path / "home")
    lab = tiny_lab("sms_spam", tiny_models.classifier, positive_label="ham")
    with materialized_labs(tmp_path, {"sms_spam": lab}) as run:
        assert run["result"].success
        assert reused(run, "sms_spam") == {**{s: True for s in STAGES[:5]}, "evaluation": False,
                                           "published_adapter": False}
        evaluation = run["result"].asset_value(dg.AssetKey(["sms_spam", "evaluation"]))
        release = run["result"].asset_value(dg.AssetKey(["sms_spam", "published_adapter"]))
    before = tiny_spam_run["result"].asset_value(dg.AssetKey(["sms_spam", "evaluation"]))
    assert evaluation.key != before.key
    assert json.loads((release.path / "labels.json").read_text())["positive_label"] == "ham"
    # the threshold is now on P(ham): a message is spam when P(ham) is *below* it, so it is not the old one
    assert json.loads((release.path / "threshold.json").read_text())["threshold"] == evaluation.threshold
    assert evaluation.metrics["fine_tuned"]["f1"] != before.metrics["fine_tuned"]["f1"]


def test_unchanged_lab_reuses_every_stage(tiny_spam_run, tiny_models, tmp_path):
    copy_run_root(tiny_spam_run["home"], tmp_path / "home")
    with materialized_labs(tmp_path, {"sms_spam": tiny_lab("sms_spam", tiny_models.classifier)}) as run:
        assert run["result"].success
        assert reused(run, "sms_spam") == {s: True for s in STAGES}
