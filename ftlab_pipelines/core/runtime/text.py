"""Model inputs as text: a lab's template, tabular rows rendered as text, prompts and stop strings."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence


def apply_template(texts: Sequence, template: str) -> list[str]:
    """The lab's `model.template` around each text (`{text}` is replaced)."""
    return [template.replace("{text}", str(t)) for t in texts]


def format_value(value, decimals: int) -> str:
    if isinstance(value, float):
        if value != value:
            return "missing"
        text = f"{value:.{decimals}f}"
        return "0" if text.strip("-0.") == "" else text  # no "-0.00"
    return str(value)


BIN_WORDS = {
    2: ["low", "high"],
    3: ["low", "mid", "high"],
    4: ["very low", "low", "high", "very high"],
    5: ["very low", "low", "mid", "high", "very high"],
    6: ["very low", "low", "mid-low", "mid-high", "high", "very high"],
    7: ["extremely low", "very low", "low", "mid", "high", "very high", "extremely high"],
}


def bin_words(bins: int) -> list[str]:
    """The default word of each quantile bin, lowest first."""
    return BIN_WORDS.get(bins) or [f"q{i + 1}" for i in range(bins)]


def _binned(values: Sequence, column: str, edges: Sequence[float], words: Sequence[str]) -> list[str]:
    out = []
    for row, value in enumerate(values):
        if value is None or value != value:
            out.append("missing")
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"row {row}, column {column!r}: {value!r} is not a number; this model renders "
                             f"{column} as its quantile bin, so send a number") from None
        out.append(words[bisect.bisect_right(edges, number)])
    return out


def render_rows(batch: Mapping[str, Sequence], render: Mapping) -> list[str]:
    """Tabular rows (column -> values) -> one text per row, by a lab's `render:` section (as a mapping).

    With `bins`, a column listed in `bin_edges` (fitted on the train split) is written as the word of its quantile
    bin instead of its value."""
    n = len(next(iter(batch.values()))) if batch else 0
    names = render.get("names") or {}
    edges = render.get("bin_edges") or {}
    if render.get("bins") and not edges:
        raise ValueError("render.bins is set but the bin edges fitted on the train split are missing")
    words = render.get("bin_words") or (bin_words(render["bins"]) if render.get("bins") else None)
    parts = []
    for column in render["columns"]:
        name = names.get(column, column)
        if column in edges:
            values = _binned(batch[column], column, edges[column], words)
        else:
            values = [format_value(v, render["decimals"]) for v in batch[column]]
        parts.append([render["field_template"].format(name=name, value=v) for v in values])
    return [render["prefix"] + render["separator"].join(fields) for fields in zip(*parts)] if parts else [""] * n


def chat_messages(system: str, user: str) -> list[dict]:
    return [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": user}]


def render_prompt(prompt: Mapping, tokenizer, user: str | None = None, messages: Sequence[Mapping] | None = None) -> str:
    """Everything the model sees before it answers, from a lab's `prompt:` section (as a mapping).

    `messages` (role/content dicts) replace `user`. The chat format renders all turns with the tokenizer's chat
    template (the lab's system message first unless the messages bring their own). The instruction format was
    trained on single turns: it takes the last user message (and a system message, if given)."""
    if messages is None:
        messages = chat_messages(prompt["system"], user or "")
    elif not any(m["role"] == "system" for m in messages) and prompt["system"]:
        messages = [{"role": "system", "content": prompt["system"]}, *messages]
    if prompt["format"] == "chat":
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    users = [m["content"] for m in messages if m["role"] == "user"]
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    return prompt["instruction_template"].format(system=system, user=users[-1] if users else "")


def cut_at_stop(text: str, stop_strings: Sequence[str], eos_token: str | None = None) -> str:
    """Cut a generation at the first stop string (or eos): the model may run on into a new `### User` turn."""
    stops = [s for s in [*stop_strings, eos_token] if s]
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut].strip()
