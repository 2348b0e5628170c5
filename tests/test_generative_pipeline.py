"""Both generation labs, shrunk, through a real Dagster instance with real MLflow and GX: on the tiny Llama
(SmolLM2's architecture, tokenizer and chat template) by default, and on the real SmolLM2 in `make test-slow`.
The default suite's real-SmolLM2 chain, with its quality checks, is in tests/test_real_models.py."""

from __future__ import annotations

import json
import math

import pytest
from conftest import requires_data, tiny_generation_lab

pytestmark = requires_data
LABS = ("persona_chat", "psychology_instruct")


@pytest.fixture(scope="module", params=["tiny", pytest.param("smollm2", marks=pytest.mark.slow)])
def generative_run(request, tmp_path_factory, materialize_labs):
    """Both SFT chains materialized once: on the tiny Llama, or (slow) on the real SmolLM2."""
    model = request.getfixturevalue("tiny_models").causal_lm if request.param == "tiny" else None
    with materialize_labs(tmp_path_factory.mktemp(f"generative-{request.param}"),
                          {name: tiny_generation_lab(name, model) for name in LABS}, real_models=model is None) as run:
        yield run


def output(run, lab: str, asset: str) -> dict:
    import dagster as dg

    return run["result"].asset_value(dg.AssetKey([lab, asset]))


def test_both_sft_chains_materialize(generative_run):
    result = generative_run["result"]
    assert result.success, [e.message for e in result.all_events if e.is_failure]
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
    from ftlab_pipelines.core.evaluation import generation

    persona = output(generative_run, "persona_chat", "evaluation")
    psych = output(generative_run, "psychology_instruct", "evaluation").metrics
    for metrics in (persona.metrics, psych):
        for model in ("base_model", "fine_tuned"):
            m = metrics[model]
            assert m["perplexity"] == pytest.approx(math.exp(m["eval_loss"]), rel=1e-2)
        assert metrics["fine_tuned"]["eval_tokens"] == metrics["base_model"]["eval_tokens"]  # the same replies
    # Eight steps on the persona replies already lower their held-out loss.
    assert persona.metrics["fine_tuned"]["eval_loss"] < persona.metrics["base_model"]["eval_loss"]
    # The persona score is the mean similarity of the replies written to generations.json to the held-out ones.
    generations = json.loads((persona.path / "generations.json").read_text())
    references = [sample["completion"] for sample in generations["samples"]]
    for model in ("base_model", "fine_tuned"):
        assert persona.metrics[model]["persona_score"] == pytest.approx(
            generation.persona_score(generations[model], references), abs=1e-3)
    # Preference accuracy is a share of the evaluated pairs (max_eval_rows: 8).
    pairs = min(8, output(generative_run, "psychology_instruct", "splits").rows["test"])
    assert psych["fine_tuned"]["preference_accuracy"] in {round(k / pairs, 4) for k in range(pairs + 1)}
    assert "preference_accuracy" not in persona.metrics["fine_tuned"]


def test_generations_are_cut_at_stop_strings(generative_run):
    path = output(generative_run, "persona_chat", "evaluation").path / "generations.json"
    generations = json.loads(path.read_text())
    replies = generations["base_model"] + generations["fine_tuned"]
    assert len(replies) == 4
    assert not any("### User" in r or "### Instruction" in r or "\n#" in r or "<|im_end|>" in r for r in replies)


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
    assert reply and "### User" not in reply
    assert main(["chat", "persona_chat", "How was your weekend?", "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out.strip() == reply  # streaming prints the same greedy reply


def test_generation_pyfunc_answers_like_ftlab_chat(generative_run, capsys, monkeypatch):
    """The registered model, loaded with mlflow.pyfunc, gives `ftlab chat --no-stream`'s greedy replies; a chat
    lab takes `messages` as well as `message`, and `temperature` samples."""
    import pandas as pd
    from conftest import release_model

    from ftlab_pipelines.cli import main

    home = generative_run["home"]
    monkeypatch.setenv("FTLAB_HOME", str(home))
    prompts = ["How was your weekend?", "What do you think of flowers?"]
    persona = release_model(home, "persona_chat")
    params = persona.metadata.get_params_schema()
    assert {p.name: p.default for p in params.params} == {"max_new_tokens": 12, "temperature": 0.0}
    replies = persona.predict(pd.DataFrame({"message": prompts}), params={"max_new_tokens": 12})["reply"].tolist()
    assert main(["chat", "persona_chat", *prompts, "--no-stream", "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out.splitlines() == replies
    assert all("### User" not in r for r in replies)

    counsel = release_model(home, "psychology_instruct")
    one = counsel.predict(pd.DataFrame({"message": ["I feel anxious."]}), params={"max_new_tokens": 8})
    turns = counsel.predict(pd.DataFrame({"messages": [[{"role": "user", "content": "I feel anxious."}]]}),
                            params={"max_new_tokens": 8})
    assert one["reply"].tolist() == turns["reply"].tolist()
    sampled = counsel.predict(pd.DataFrame({"message": ["I feel anxious."]}),
                              params={"max_new_tokens": 8, "temperature": 1.0})
    assert isinstance(sampled["reply"].iloc[0], str)


def test_chat_refuses_a_classification_release(generative_run, tiny_spam_run, capsys, monkeypatch):
    from ftlab_pipelines.cli import main

    monkeypatch.setenv("FTLAB_HOME", str(tiny_spam_run["home"]))
    assert main(["chat", "sms_spam", "hello"]) == 2
    assert "use `ftlab predict`" in capsys.readouterr().err


def test_predict_refuses_a_generation_release(generative_run, capsys, monkeypatch):
    from ftlab_pipelines.cli import main

    monkeypatch.setenv("FTLAB_HOME", str(generative_run["home"]))
    assert main(["predict", "persona_chat", "hello"]) == 2
    assert "use `ftlab chat`" in capsys.readouterr().err
