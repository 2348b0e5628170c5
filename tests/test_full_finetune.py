"""peft.method full: the sms_spam chain through Dagster on the tiny BERT with every weight trained, the whole model
written, evaluated, released and served; and the labs it refuses."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, release_model, requires_data, tiny_lab, write_labs
from safetensors.torch import load_file

from ftlab_pipelines.core.config.labs import LabConfigError
from ftlab_pipelines.core.config.loading import load_lab
from ftlab_pipelines.definitions import build_definitions
from ftlab_pipelines.defs.resources import default_resources


@requires_data
def test_full_fine_tune_trains_every_weight_and_ships_the_whole_model(tmp_path, tiny_models, ftlab_home):
    lab = tiny_lab("sms_spam", tiny_models.classifier, peft__method="full")
    labs = write_labs(tmp_path / "labs", {"sms_spam": lab})
    defs = build_definitions(str(labs))
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), instance=instance, resources=default_resources())
    assert result.success

    adapter = result.output_for_node("sms_spam__adapter")
    assert adapter.metrics["trainable_params"] == adapter.metrics["total_params"]
    assert (adapter.path / "model.safetensors").is_file() and not (adapter.path / "adapter_config.json").exists()
    trained, base = load_file(adapter.path / "model.safetensors"), load_file(tiny_models.classifier / "model.safetensors")
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.intermediate.dense.weight"):
        assert not torch.equal(trained[f"bert.{name}"], base[name]), name  # LoRA leaves these as they were

    release = result.output_for_node("sms_spam__published_adapter")
    assert release.merge_parity["passed"] and release.merge_parity["max_abs_diff"] == 0
    assert {"model.safetensors", "config.json"} <= {p.name for p in release.path.iterdir()}
    assert not (release.path / "adapter_model.safetensors").exists()
    card = (release.path / "README.md").read_text()
    assert "library_name: transformers" in card and "Every weight fine-tuned" in card and "LoRA:" not in card
    logged = {p.name for p in (ftlab_home / "mlartifacts").rglob("adapter/*")}  # the release run's artifacts
    assert "README.md" in logged and "model.safetensors" not in logged  # the MLflow model holds the weights once

    # The served model is the evaluated one: same spam probability for a test row as the evaluation wrote.
    evaluation = result.output_for_node("sms_spam__evaluation")
    scored = pd.read_parquet(evaluation.path / "predictions.parquet")
    row = scored[scored["split"] == "test"].iloc[0]
    served = release_model(ftlab_home, "sms_spam").predict(pd.DataFrame({"text": [row["text"]]}))
    assert served["prob_spam"].iloc[0] == pytest.approx(row["prob_spam"], abs=1e-4)


@pytest.mark.parametrize("base, change, words", [
    ("psychology_instruct", {}, "for classification labs"),
    ("sms_spam", {"model": {"name": "all-minilm-l6-v2", "quantization": "4bit"}}, "model.quantization"),
])
def test_full_fine_tune_is_refused_where_it_cannot_run(tmp_path, base, change, words):
    raw = yaml.safe_load((REPO / "labs" / f"{base}.yaml").read_text())
    raw["peft"] = {**raw.get("peft", {}), "method": "full"}
    raw.update(change)
    path = write_labs(tmp_path, {base: raw}) / f"{base}.yaml"
    with pytest.raises(LabConfigError, match=words):
        load_lab(path, REPO / "data_contracts")
