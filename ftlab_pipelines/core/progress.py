"""Progress of long steps: tqdm bars in the terminal, and periodic log lines that Dagster shows in the run log.

dagster.yaml routes the `ftlab_pipelines` loggers into the run log, so every line here reaches the UI; the
bars go to stderr (the terminal, or the step's captured stderr under Dagster).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterable, Iterator

log = logging.getLogger(__name__)

LOG_EVERY = 0.1  # share of the total between two log lines of `track`


def duration(seconds: float) -> str:
    """1m05s, 2h03m, 12s: short enough for a log line."""
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Log the start and the end (with its duration) of a step that has no natural iteration."""
    log.info("%s ...", what)
    started = time.perf_counter()
    yield
    log.info("%s: done in %s", what, duration(time.perf_counter() - started))


def track(items: Iterable, desc: str, total: int | None = None, unit: str = "it") -> Iterator:
    """Iterate with a tqdm bar and a log line every LOG_EVERY of `total` (with rate and ETA)."""
    from tqdm.auto import tqdm

    total = total if total is not None else len(items)  # type: ignore[arg-type]
    every = max(1, math.ceil(total * LOG_EVERY))
    started = time.perf_counter()
    with tqdm(items, desc=desc, total=total, unit=unit, leave=False) as bar:
        for done, item in enumerate(bar, start=1):
            yield item
            if done % every == 0 or done == total:
                rate = done / max(time.perf_counter() - started, 1e-9)
                log.info("%s", progress_line(desc, done, total, rate, unit))


def progress_line(desc: str, done: int, total: int, rate: float, unit: str = "it", **extra: str) -> str:
    """`desc: done/total (pct), [extra, ]rate unit/s, ETA t`."""
    eta = (total - done) / rate if rate > 0 else 0.0
    parts = [f"{desc}: {done}/{total} ({done / max(total, 1):.0%})", *extra.values(),
             f"{rate:,.1f} {unit}/s", f"ETA {duration(eta)}"]
    return ", ".join(parts)


def training_callback(train_set):
    """A TrainerCallback that logs `train step s/total, loss, tokens/s, ETA` at every loss log of the Trainer
    (train.logging_steps) and the validation loss at each evaluation; the Trainer draws its own tqdm bar."""
    from transformers import TrainerCallback

    from ftlab_pipelines.core.text.tokenize import lengths_of

    total_tokens = float(lengths_of(train_set).sum()) if "length" in train_set.column_names else 0.0

    class TrainingProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            self.started, self.first_step = time.perf_counter(), state.global_step
            # Real tokens (not padding) per optimizer step, whether a batch holds rows or packed bins: this
            # process's batches per epoch carry all of the train set's tokens across the processes.
            try:
                steps_per_epoch = max(len(train_dataloader) // args.gradient_accumulation_steps, 1)
            except TypeError:  # no dataloader or one without a length
                steps_per_epoch = max(state.max_steps / max(args.num_train_epochs, 1e-9), 1)
            self.tokens_per_step = total_tokens / steps_per_epoch
            if state.is_world_process_zero:
                log.info("training: %d examples, %d steps (from step %d)", len(train_set), state.max_steps,
                         state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            if "loss" in logs:
                log.info("%s", self.line(args, state, float(logs["loss"])))
            if "eval_loss" in logs:
                log.info("validation loss %.4f at step %d/%d", logs["eval_loss"], state.global_step, state.max_steps)

        def line(self, args, state, loss: float) -> str:
            # Steps of this process only: after a resume the rate must not count the checkpoint's steps.
            steps_per_s = (state.global_step - self.first_step) / max(time.perf_counter() - self.started, 1e-9)
            tokens_per_s = steps_per_s * self.tokens_per_step
            return progress_line("train step", state.global_step, state.max_steps, steps_per_s, unit="steps",
                                 loss=f"loss {loss:.4f}", tokens=f"{tokens_per_s:,.0f} tokens/s")

    return TrainingProgress()
