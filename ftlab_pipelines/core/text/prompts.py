"""Prompts for generation labs: the instruction template or the model's chat template, preference pairs, stops."""

from __future__ import annotations

import pandas as pd

from ftlab_pipelines.core.config.labs import PromptConfig
from ftlab_pipelines.core.runtime import text

PROMPT, COMPLETION, REJECTED = "prompt", "completion", "rejected"


def messages(config: PromptConfig, user: str) -> list[dict]:
    return text.chat_messages(config.system, user)


def render_prompt(config: PromptConfig, tokenizer, user: str) -> str:
    """Everything the model sees before it answers (the same function renders prompts inside the MLflow model)."""
    return text.render_prompt(config.model_dump(), tokenizer, user)


def render_completion(config: PromptConfig, tokenizer, user: str, response: str) -> str:
    """What the model learns to write: the reply and the end-of-turn marker that stops generation."""
    if config.format == "chat":
        prompt = render_prompt(config, tokenizer, user)
        full = tokenizer.apply_chat_template(
            [*messages(config, user), {"role": "assistant", "content": response}], tokenize=False
        )
        if not full.startswith(prompt):
            raise ValueError(f"the chat template of {tokenizer.name_or_path} does not extend the generation prompt "
                             f"with the reply; use prompt.format: instruction")
        return full[len(prompt):]
    return response + (tokenizer.eos_token or "")


def sft_pairs(frame: pd.DataFrame, config: PromptConfig) -> pd.DataFrame:
    """(prompt text, preferred reply[, rejected reply]) per row: of a preference pair only the preferred is trained."""
    pairs = pd.DataFrame({PROMPT: frame[config.user_column].astype(str),
                          COMPLETION: frame[config.response_column].astype(str)})
    if config.rejected_column:
        pairs[REJECTED] = frame[config.rejected_column].astype(str)
    return pairs.reset_index(drop=True)


cut_at_stop = text.cut_at_stop
