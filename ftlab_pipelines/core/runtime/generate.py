"""Replies from a merged causal LM: the lab's prompt format, greedy by default, cut at its stop strings."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from . import device as devices
from .classify import MAX_TEXT_CHARS, BadInput
from .loading import load_merged
from .text import cut_at_stop, render_prompt

ROLES = ("system", "user", "assistant")


class ChatGenerator:
    """A merged causal-LM directory: weights, tokenizer and ftlab_model.json (prompt format, stops, defaults)."""

    def __init__(self, model_dir: str | Path):
        from transformers import AutoModelForCausalLM

        self.config, self.tokenizer, self.model, self.device, self.bf16 = load_merged(model_dir, AutoModelForCausalLM)
        self.prompt = self.config["prompt"]

    @property
    def stops(self) -> list[str]:
        return [s for s in [*self.prompt["stop_strings"], self.tokenizer.eos_token] if s]

    def prompt_text(self, message: str | None = None, messages: Sequence[Mapping] | None = None) -> str:
        if messages is not None:
            messages = [check_message(i, m) for i, m in enumerate(messages)]
            if not any(m["role"] == "user" for m in messages):
                raise BadInput("messages: there is no user message to answer")
        elif not isinstance(message, str) or not message.strip():
            raise BadInput("message: send a non-empty text (or `messages`, a list of {role, content})")
        total = len(message or "") + sum(len(m["content"]) for m in messages or [])
        if total > MAX_TEXT_CHARS:
            raise BadInput(f"the message has {total:,} characters; over {MAX_TEXT_CHARS:,} are refused: shorten it")
        return render_prompt(self.prompt, self.tokenizer, message, messages)

    def _generate_kwargs(self, prompt: str, max_new_tokens: int | None, temperature: float) -> dict:
        inputs = self.tokenizer(prompt, return_tensors="pt",
                                add_special_tokens=self.prompt["format"] == "instruction").to(self.device)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        return dict(**inputs, **sampling,
                    max_new_tokens=max_new_tokens or self.config["generation"]["max_new_tokens"],
                    repetition_penalty=self.config["generation"]["repetition_penalty"],
                    pad_token_id=self.tokenizer.pad_token_id, stop_strings=self.prompt["stop_strings"] or None,
                    tokenizer=self.tokenizer)

    def stream(self, prompt: str, max_new_tokens: int | None = None, temperature: float = 0.0) -> Iterator[str]:
        """Yield the reply piece by piece; text that could be the start of a stop string is held back."""
        import torch
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=False)
        kwargs = self._generate_kwargs(prompt, max_new_tokens, temperature) | {"streamer": streamer}

        def run():
            with torch.no_grad(), devices.autocast(self.device, self.bf16):
                self.model.generate(**kwargs)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        hold = max((len(s) for s in self.stops), default=0)
        text, sent, started = "", 0, False
        for piece in streamer:
            text += piece
            if not started:  # no leading whitespace
                sent = len(text) - len(text.lstrip())
                started = sent < len(text)
            hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
            end = min(hits) if hits else len(text) - hold
            if started and end > sent:
                yield text[sent:end]
                sent = end
            if hits:
                break
        else:
            rest = text[sent:].rstrip()
            if started and rest:
                yield rest
        thread.join()

    def reply(self, prompt: str, max_new_tokens: int | None = None, temperature: float = 0.0) -> str:
        return cut_at_stop("".join(self.stream(prompt, max_new_tokens, temperature)), self.prompt["stop_strings"],
                           self.tokenizer.eos_token)


def check_message(index: int, message) -> dict:
    if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
        raise BadInput(f"messages[{index}]: expected {{'role': ..., 'content': <text>}}, got {message!r}"[:300])
    if message.get("role") not in ROLES:
        raise BadInput(f"messages[{index}]: role {message.get('role')!r} is not one of {ROLES}")
    return {"role": message["role"], "content": message["content"]}
