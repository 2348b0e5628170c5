"""Generation metrics on inputs whose answer is known: the persona score (real MiniLM sentence embeddings) and
preference accuracy (tiny Llama with SmolLM2's tokenizer)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ftlab_pipelines.core.config.labs import ModelConfig, PromptConfig
from ftlab_pipelines.core.evaluation import generation
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.text.prompts import COMPLETION, PROMPT, REJECTED

REFERENCE = "I like walking through the graveyard at night."


def test_persona_score_is_one_for_the_reference_itself_and_higher_for_a_related_reply():
    assert generation.persona_score([REFERENCE], [REFERENCE]) == pytest.approx(1.0, abs=1e-3)
    related = generation.persona_score(["At night I walk among the graves."], [REFERENCE])
    unrelated = generation.persona_score(["Quarterly revenue grew by four percent."], [REFERENCE])
    assert related > unrelated + 0.2, (related, unrelated)
    # The mean over replies, each compared with its own reference.
    pair = generation.persona_score([REFERENCE, "Quarterly revenue grew by four percent."], [REFERENCE, REFERENCE])
    assert pair == pytest.approx((1.0 + unrelated) / 2, abs=1e-3)
    assert math.isnan(generation.persona_score([], []))


@pytest.fixture(scope="module")
def tiny_llama(tiny_models):
    config = ModelConfig(name=str(tiny_models.causal_lm))
    return models.load_causal_lm(config), models.load_tokenizer(config)


PAIRS = pd.DataFrame({
    PROMPT: ["How are you?", "Any plans?", "Favourite season?", "Do you like music?", "What is for dinner?"],
    COMPLETION: ["Decaying, thanks.", "A crypt visit.", "Late autumn, when things wilt.", "Dirges only.", "Gruel."],
    REJECTED: ["Great, super happy!", "A beach party!", "Summer, obviously!", "I love pop hits!", "Birthday cake!"],
})


def test_preference_accuracy_is_the_share_of_pairs_where_the_preferred_reply_is_likelier(tiny_llama):
    model, tokenizer = tiny_llama
    config = PromptConfig(format="chat", system="You are gloomy.", user_column="q", response_column="a",
                          rejected_column="b", stop_strings=[])

    def accuracy(pairs: pd.DataFrame) -> float:
        return generation.preference_accuracy(model, tokenizer, config, pairs, max_length=64)

    forward = accuracy(PAIRS)
    assert forward in {k / 5 for k in range(6)}
    # Swapping preferred and rejected turns every win into a loss (no ties between different replies) ...
    assert accuracy(PAIRS.rename(columns={COMPLETION: REJECTED, REJECTED: COMPLETION})) == pytest.approx(1 - forward)
    # ... and a tie is never a win.
    assert accuracy(PAIRS.assign(**{REJECTED: PAIRS[COMPLETION]})) == 0.0
