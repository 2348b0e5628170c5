"""Length-grouped batches with a small sorting window: no long streaks of one-class batches."""

from __future__ import annotations

import numpy as np
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from ftlab_pipelines.core.training.sampling import windowed_sampler


def _longest_streak(window: int, lengths: list[int], labels: np.ndarray, batch: int = 16) -> int:
    """Most consecutive batches with the same majority label, in the order the Trainer would train them."""
    sampler = windowed_sampler(LengthGroupedSampler(batch, lengths=lengths, generator=torch.Generator().manual_seed(0)),
                               window)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))  # every example once per epoch
    majority = [labels[order[i:i + batch]].mean() > 0.5 for i in range(0, len(order), batch)]
    longest = streak = 0
    for previous, current in zip([None, *majority], majority):
        streak = streak + 1 if current == previous else 1
        longest = max(longest, streak)
    return longest


def test_small_window_avoids_long_streaks_of_one_class_where_length_predicts_the_label():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 1600 + [1] * 1600)  # positives tend to be longer, as spam is
    lengths = (np.where(labels == 1, 20, 10) + rng.integers(0, 30, size=len(labels))).tolist()
    assert _longest_streak(4, lengths, labels) <= 4 < 10 <= _longest_streak(50, lengths, labels)


def test_other_samplers_are_left_alone():
    sampler = torch.utils.data.RandomSampler(range(10))
    assert windowed_sampler(sampler, 4) is sampler
