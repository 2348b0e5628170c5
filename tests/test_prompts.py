"""Generation-lab data handling with the real SmolLM2 tokenizer: templates, masking, preference pairs, stops (the
TRL masking on the tiny Llama)."""

from __future__ import annotations

import pandas as pd
import pytest

from ftlab_pipelines.core.config.labs import PromptConfig, SplitConfig
from ftlab_pipelines.core.data import splits
from ftlab_pipelines.core.text import prompts, tokenize

PERSONA = PromptConfig(system="You are gloomy.", user_column="user", response_column="reply")
PREFERENCE = PromptConfig(format="chat", system="You are a counsellor.", user_column="question",
                          response_column="response_j", rejected_column="response_k", stop_strings=[])


@pytest.fixture(scope="module")
def smol_tokenizer():
    from ftlab_pipelines.core.config.labs import ModelConfig
    from ftlab_pipelines.core.modeling import models

    return models.load_tokenizer(ModelConfig(name="smollm2-135m-instruct"))


@pytest.mark.parametrize(("raw", "expected"), [
    ("Nothing lasts.\n\n### User:\nAnd you?\n\n### Response:\nNo.", "Nothing lasts."),
    ("  Rain again.<|im_end|>\n<|im_start|>user\nhi", "Rain again."),
    ("Cold.\n### Instruction:\nbe nice", "Cold."),
    ("A complete reply with no stop string", "A complete reply with no stop string"),
    ("### User: straight away", ""),
])
def test_cut_at_stop_strings_and_eos(raw, expected):
    assert prompts.cut_at_stop(raw, PERSONA.stop_strings, "<|im_end|>") == expected


def test_instruction_template_has_the_seed_sections(smol_tokenizer):
    prompt = prompts.render_prompt(PERSONA, smol_tokenizer, "How are you?")
    assert prompt.index("### Instruction:\nYou are gloomy.") < prompt.index("### User:\nHow are you?")
    assert prompt.endswith("### Response:\n")
    completion = prompts.render_completion(PERSONA, smol_tokenizer, "How are you?", "Decaying.")
    assert completion == "Decaying." + smol_tokenizer.eos_token
    assert smol_tokenizer.pad_token is not None


def test_chat_template_completion_is_the_assistant_turn(smol_tokenizer):
    prompt = prompts.render_prompt(PREFERENCE, smol_tokenizer, "I feel anxious.")
    assert "You are a counsellor." in prompt and prompt.rstrip().endswith("assistant")
    completion = prompts.render_completion(PREFERENCE, smol_tokenizer, "I feel anxious.", "Let's breathe.")
    assert completion.startswith("Let's breathe.") and smol_tokenizer.eos_token in completion


def test_preference_pairs_train_on_the_preferred_reply_only():
    frame = pd.DataFrame({"question": ["q1", "q2"], "response_j": ["good one", "good two"],
                          "response_k": ["bad one", "bad two"]})
    pairs = prompts.sft_pairs(frame, PREFERENCE)
    assert pairs[prompts.COMPLETION].tolist() == ["good one", "good two"]
    assert pairs[prompts.REJECTED].tolist() == ["bad one", "bad two"]
    assert pairs[prompts.PROMPT].tolist() == ["q1", "q2"]


def test_prompt_tokens_get_label_minus_100_from_trl(smol_tokenizer, tiny_models, tmp_path):
    """TRL's SFTTrainer turns our completion_mask into labels: -100 on every prompt token, ids on the reply."""
    import datasets

    from ftlab_pipelines.core.config.labs import ModelConfig, PeftConfig, TrainConfig
    from ftlab_pipelines.core.modeling import models
    from ftlab_pipelines.core.training import train

    users, replies = ["Do you like summer?", "Any plans?"], ["Too much sun.", "I will visit a crypt."]
    rendered = [prompts.render_prompt(PERSONA, smol_tokenizer, u) for u in users]
    completions = [prompts.render_completion(PERSONA, smol_tokenizer, u, r) for u, r in zip(users, replies)]
    encoded = tokenize.encode_prompt_completion(smol_tokenizer, rendered, completions, 128, True)
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict(encoded)})
    model = models.attach_lora(models.load_causal_lm(ModelConfig(name=str(tiny_models.causal_lm))),
                               PeftConfig(target_modules=["q_proj", "v_proj"]), task_type="CAUSAL_LM")
    trainer = train.sft_trainer(model, smol_tokenizer, dataset, TrainConfig(max_steps=1), tmp_path, False, [], 128)
    for row, prompt in zip(trainer.train_dataset, rendered):
        n_prompt = len(smol_tokenizer(prompt)["input_ids"])
        labels, ids = row["labels"], row["input_ids"]
        assert labels[:n_prompt] == [-100] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:] and len(labels) > n_prompt
        assert ids[-1] == smol_tokenizer.eos_token_id  # the model learns to stop
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()  # padding never counts


def test_a_prompt_that_fills_max_length_is_dropped_not_trained_on_empty(smol_tokenizer):
    encoded = tokenize.encode_prompt_completion(smol_tokenizer, ["word " * 50, "short"], ["reply", "reply"], 16, True)
    assert encoded["length"][0] == 0 and encoded["length"][1] > 0
    assert sum(encoded["completion_mask"][1]) > 0


def test_group_split_never_puts_a_prompt_in_two_splits():
    frame = pd.DataFrame({"question": [f"q{i % 40}" for i in range(120)], "answer": [f"a{i}" for i in range(120)]})
    result = splits.group_split(frame, "question", SplitConfig(train=0.8, validation=0.1, test=0.1))
    seen = [set(result.frames[name]["question"]) for name in splits.SPLIT_NAMES]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(f) for f in result.frames.values()) == 120
    assert 0.7 <= len(result.frames["train"]) / 120 <= 0.9
    duplicated = pd.concat([frame, frame.head(5)])
    assert splits.group_split(duplicated, "question", SplitConfig(train=0.8, validation=0.1, test=0.1)) \
        .duplicates_removed == 5
