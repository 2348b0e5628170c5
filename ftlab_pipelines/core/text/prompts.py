"""Prompts for generation labs: the instruction template or the model's chat template, preference pairs, stops."""

from __future__ import annotations

import pandas as pd

from ftlab_pipelines.core.config.labs import PromptConfig

PROMPT, COMPLETION, REJECTED = "prompt", "completion", "rejected"


def messages(config: PromptConfig, user: str) -> list[dict]:
    system = [{"role": "system", "content": config.system}] if config.system else []
    return [*system, {"role": "user", "content": user}]


def render_prompt(config: PromptConfig, tokenizer, user: str) -> str:
    """Everything the model sees before it answers."""
    if config.format == "chat":
        return tokenizer.apply_chat_template(messages(config, user), tokenize=False, add_generation_prompt=True)
    return config.instruction_template.format(system=config.system, user=user)


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


def cut_at_stop(text: str, stop_strings: list[str], eos_token: str | None = None) -> str:
    """Cut a generation at the first stop string (or eos): the model may run on into a new `### User` turn."""
    stops = [s for s in [*stop_strings, eos_token] if s]
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut].strip()
