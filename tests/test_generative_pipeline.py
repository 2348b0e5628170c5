"""Both generation labs, shrunk, through a real Dagster instance with real SmolLM2, MLflow and GX."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import materialized_labs, requires_data

pytestmark = requires_data
REPO = Path(__file__).resolve().parents[1]
LABS = ("persona_chat", "psychology_instruct")


def tiny_generation_lab(name: str) -> dict:
    import yaml

    raw = yaml.safe_load((REPO / "labs" / f"{name}.yaml").read_text())
    raw["source"]["max_rows"] = 80
    raw["train"].update({"epochs": 1, "max_steps": 8, "save_steps": 4, "logging_steps": 2, "batch_size": 4})
    raw["eval"]["generation"].update({"samples": 2, "max_new_tokens": 12, "max_eval_rows": 8})
    return raw


@pytest.fixture(scope="module")
def generative_run(tmp_path_factory):
    with materialized_labs(tmp_path_factory.mktemp("generative"),
                           {name: tiny_generation_lab(name) for name in LABS}) as run:
        yield run


def output(run, lab: str, asset: str) -> dict:
    import dagster as dg

    return run["result"].asset_value(dg.AssetKey([lab, asset]))


def test_both_sft_chains_materialize(generative_run):
    result = generative_run["result"]
    assert result.success
    materialized = {tuple(e.asset_key.path) for e in result.get_asset_materialization_events()}
    for lab in LABS:
        for asset in ("raw_dataset", "validated_dataset", "splits", "tokenized", "adapter", "evaluation",
                      "published_adapter"):
            assert (lab, asset) in materialized


def test_merge_parity_checks_pass(generative_run):
    checks = {(e.asset_key.path[0], e.check_name): e.passed
              for e in generative_run["result"].get_asset_check_evaluations()}
    assert checks[("persona_chat", "merge_parity")] is True
    assert checks[("psychology_instruct", "merge_parity")] is True
    assert checks[("psychology_instruct", "data_contract")] is True


def test_evaluation_compares_base_and_fine_tuned(generative_run):
    persona = output(generative_run, "persona_chat", "evaluation").metrics
    psych = output(generative_run, "psychology_instruct", "evaluation").metrics
    for metrics in (persona, psych):
        for model in ("base_model", "fine_tuned"):
            m = metrics[model]
            assert m["eval_loss"] > 0 and m["perplexity"] == pytest.approx(math.exp(m["eval_loss"]), rel=1e-2)
    # Eight steps on the persona replies already lower their held-out loss.
    assert persona["fine_tuned"]["eval_loss"] < persona["base_model"]["eval_loss"]
    assert -1 <= persona["fine_tuned"]["persona_score"] <= 1
    assert 0 <= psych["fine_tuned"]["preference_accuracy"] <= 1
    assert "preference_accuracy" not in persona["fine_tuned"]


def test_generations_are_cut_at_stop_strings(generative_run):
    path = output(generative_run, "persona_chat", "evaluation").path / "generations.json"
    generations = json.loads(path.read_text())
    replies = generations["base_model"] + generations["fine_tuned"]
    assert len(replies) == 4
    assert not any("###" in r or "<|im_end|>" in r for r in replies)


def test_release_has_adapter_merged_model_and_chat_config(generative_run):
    release = output(generative_run, "psychology_instruct", "published_adapter").path
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "ftlab_model.json",
                 "README.md", "merged/model.safetensors", "merged/config.json", "merge_parity.json"):
        assert (release / name).is_file(), name
    info = json.loads((release / "ftlab_model.json").read_text())
    assert info["task"] == "sft" and info["prompt"]["format"] == "chat"


def test_champion_is_registered_in_mlflow(generative_run):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{generative_run['home'] / 'mlflow.db'}")
    version = client.get_model_version_by_alias("ftlab-persona_chat", "champion")
    assert version.tags["primary_metric"] == "eval_loss"


def test_chat_answers_with_the_published_adapter(generative_run, capsys, monkeypatch):
    from ftlab_pipelines.cli import main

    monkeypatch.setenv("FTLAB_HOME", str(generative_run["home"]))
    assert main(["chat", "persona_chat", "How was your weekend?", "--no-stream", "--max-new-tokens", "12"]) == 0
    reply = capsys.readouterr().out.strip()
    assert reply and "###" not in reply
    assert main(["chat", "persona_chat", "How was your weekend?", "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out.strip() == reply  # streaming prints the same greedy reply


def test_chat_refuses_a_classification_release(generative_run, pipeline_run, capsys, monkeypatch):
    from ftlab_pipelines.cli import main

    monkeypatch.setenv("FTLAB_HOME", str(pipeline_run["home"]))
    assert main(["chat", "sms_spam", "hello"]) == 2
    assert "use `ftlab predict`" in capsys.readouterr().err


def test_predict_refuses_a_generation_release(generative_run, capsys, monkeypatch):
    from ftlab_pipelines.cli import main

    monkeypatch.setenv("FTLAB_HOME", str(generative_run["home"]))
    assert main(["predict", "persona_chat", "hello"]) == 2
    assert "use `ftlab chat`" in capsys.readouterr().err
