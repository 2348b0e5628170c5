"""Length-grouped batches sorted within a few batches, not fifty.

The HF Trainer's length grouping sorts a random window of 50 batches by length and trains them in that
order, so 50 consecutive steps go from the longest to the shortest texts. When length predicts the label
(spam is longer than ham) that is a long streak of spam-heavy steps, then of ham-heavy ones, and early
training suffers: on sms_spam, 70 steps reach validation F1 0.879 with a window of 50 and 0.955 with a
window of 4, which still cuts most padding (2,145 vs 1,453 real tokens/s; seed-style loop 337).
SFT replies carry no label, but a wide window still biases early training: 16 SmolLM2 steps on
psychology_instruct reach validation loss 1.285 with a window of 50 (538 real tokens/s), 1.247 with 4
(402 tok/s) and 1.250 with plain random batches (448 tok/s), so SFT trains on random batches unless a lab
sets `train.length_group_batches`.
"""

from __future__ import annotations

CLASSIFICATION_WINDOW = 4


def windowed_sampler(sampler, batches_per_window: int):
    """The Trainer's LengthGroupedSampler, re-made to sort windows of `batches_per_window` batches."""
    from transformers.trainer_pt_utils import (
        LengthGroupedSampler,
        get_length_grouped_indices,
    )

    class WindowedLengthGroupedSampler(LengthGroupedSampler):
        def __iter__(self):
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, batches_per_window, self.generator))

    if type(sampler) is not LengthGroupedSampler:
        return sampler
    return WindowedLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths, generator=sampler.generator)


def with_length_window(trainer_class, batches_per_window: int):
    """`trainer_class` whose length-grouped train sampler sorts windows of `batches_per_window` batches."""

    class Windowed(trainer_class):
        def _get_train_sampler(self, *args, **kwargs):
            return windowed_sampler(super()._get_train_sampler(*args, **kwargs), batches_per_window)

    Windowed.__name__ = Windowed.__qualname__ = trainer_class.__name__
    return Windowed
