"""One chain per model family on the real weights, through Dagster with a real MLflow store: the real MiniLM on
sms_spam and the real SmolLM2 on persona_chat. Everything else runs on the tiny models; these check that the
real models load through their offline aliases, train, and get better than their base."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from conftest import requires_data, tiny_generation_lab

pytestmark = requires_data


def value(run, lab: str, asset: str) -> dict:
    return run["result"].asset_value(dg.AssetKey([lab, asset]))


# --- MiniLM: the sms_spam chain ----------------------------------------------------------------------------------


def test_minilm_chain_materializes_and_registers_a_champion(real_spam_run):
    result = real_spam_run["result"]
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert {(e.check_name, e.passed) for e in result.get_asset_check_evaluations()} == {
        ("data_contract", True), ("promotion_gate", True), ("merge_parity", True)}
    adapter = value(real_spam_run, "sms_spam", "adapter")
    assert adapter.metrics["total_params"] > 22e6  # the real MiniLM-L6 (22.7M), not a stand-in


def test_minilm_fine_tuned_beats_its_base_model(real_spam_run):
    """12 steps on 400 rows: the fine-tuned head separates spam better than the untrained head on the same base."""
    metrics = value(real_spam_run, "sms_spam", "evaluation").metrics
    fine, base = metrics["fine_tuned"], metrics["base_model"]
    assert fine["f1"] > base["f1"] + 0.2, (fine["f1"], base["f1"])
    assert fine["average_precision"] > base["average_precision"] + 0.2


def test_minilm_release_tells_obvious_spam_from_ham(real_spam_run):
    import pandas as pd
    from conftest import release_model

    model = release_model(real_spam_run["home"], "sms_spam")
    preds = model.predict(pd.DataFrame({"text": ["Ok, see you at home tonight, I'll bring the bread",
                                                 "URGENT! You have WON a FREE prize, call 09061701461 now to claim"]}))
    # 12 steps: the release may not yet put every message past its threshold, but it must rank them right
    ham, spam = preds.prob_spam
    assert spam > ham and preds.label[0] == "ham", preds


# --- SmolLM2: the persona_chat chain -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory, materialize_labs):
    """persona_chat on the real SmolLM2: 80 rows, 4 steps of 4 (fine-tuned held-out loss 3.88 vs base 4.07)."""
    lab = tiny_generation_lab("persona_chat")
    lab["train"].update(max_steps=4, save_steps=4)
    with materialize_labs(tmp_path_factory.mktemp("smollm2"), {"persona_chat": lab}, real_models=True) as run:
        yield run


def test_smollm2_chain_materializes_with_merge_parity(smollm2_run):
    result = smollm2_run["result"]
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"data_contract": True, "promotion_gate": True, "merge_parity": True}
    adapter = value(smollm2_run, "persona_chat", "adapter")
    assert adapter.metrics["total_params"] > 130e6  # the real SmolLM2-135M


def test_smollm2_fine_tuned_has_a_lower_held_out_loss(smollm2_run):
    """Four steps on the persona replies already lower their held-out loss."""
    metrics = value(smollm2_run, "persona_chat", "evaluation").metrics
    assert metrics["fine_tuned"]["eval_tokens"] == metrics["base_model"]["eval_tokens"]
    assert metrics["fine_tuned"]["eval_loss"] < metrics["base_model"]["eval_loss"]


def test_smollm2_generations_are_words_cut_at_stop_strings(smollm2_run):
    path = value(smollm2_run, "persona_chat", "evaluation").path / "generations.json"
    generations = json.loads(path.read_text())
    replies = generations["base_model"] + generations["fine_tuned"]
    assert len(replies) == 4
    assert not any("###" in r or "<|im_end|>" in r for r in replies)
    assert all(any(c.isalpha() for c in r) for r in replies), replies  # a real model answers in words
