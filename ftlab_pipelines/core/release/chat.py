"""Chat with a published generation release: base model + LoRA adapter, the lab's prompt and stop strings."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

from ftlab_pipelines.core.config.labs import ModelConfig, PromptConfig
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.modeling.device import placement
from ftlab_pipelines.core.text import prompts


class Chatbot:
    def __init__(self, release_dir: str | Path, max_new_tokens: int | None = None, model_cache: Path | None = None):
        from transformers import AutoTokenizer

        self.release_dir = Path(release_dir)
        info_path = self.release_dir / "ftlab_model.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"{self.release_dir}: not an ftlab release (no ftlab_model.json)")
        info = json.loads(info_path.read_text())
        if info.get("task") != "sft":
            raise ValueError(f"{self.release_dir}: lab {info.get('lab')!r} is a {info.get('task')} lab; "
                             f"use `ftlab predict` for it")
        self.prompt = PromptConfig.model_validate(info["prompt"])
        self.generation = info.get("generation", {})
        if max_new_tokens:
            self.generation["max_new_tokens"] = max_new_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.release_dir))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        config = ModelConfig.model_validate(info["model"])
        base = models.load_causal_lm(models.resolved(config, model_cache) if model_cache else config)
        self.model = models.load_lora(base, self.release_dir)
        self.bf16 = placement("auto").bf16

    def _inputs(self, message: str):
        text = prompts.render_prompt(self.prompt, self.tokenizer, message)
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=self.prompt.format == "instruction")
        return inputs.to(self.model.device)

    def _generate_kwargs(self, inputs) -> dict:
        return dict(**inputs, max_new_tokens=self.generation.get("max_new_tokens", 64), do_sample=False,
                    repetition_penalty=self.generation.get("repetition_penalty", 1.1),
                    pad_token_id=self.tokenizer.pad_token_id, stop_strings=self.prompt.stop_strings or None,
                    tokenizer=self.tokenizer)

    def stream(self, message: str) -> Iterator[str]:
        """Yield the reply piece by piece; text that could be the start of a stop string is held back."""
        import torch
        from transformers import TextIteratorStreamer

        from ftlab_pipelines.core.evaluation import generation

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=False)
        kwargs = self._generate_kwargs(self._inputs(message)) | {"streamer": streamer}

        def run():
            with torch.no_grad(), generation.autocast(self.bf16):
                self.model.generate(**kwargs)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        stops = [s for s in [*self.prompt.stop_strings, self.tokenizer.eos_token] if s]
        hold = max((len(s) for s in stops), default=0)
        text, sent, started = "", 0, False
        for piece in streamer:
            text += piece
            if not started:  # no leading whitespace
                sent = len(text) - len(text.lstrip())
                started = sent < len(text)
            hits = [i for i in (text.find(s) for s in stops) if i >= 0]
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

    def reply(self, message: str) -> str:
        return prompts.cut_at_stop("".join(self.stream(message)), self.prompt.stop_strings,
                                   self.tokenizer.eos_token)
