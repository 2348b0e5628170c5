"""Length-grouped batches trained in random order: little padding, and no long runs from long to short batches."""

from __future__ import annotations

import numpy as np
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from ftlab_pipelines.core.training.sampling import windowed_sampler


def _batches(window: int, lengths: list[int], batch: int = 16) -> list[list[int]]:
    """The train batches in the order the Trainer would train them."""
    sampler = windowed_sampler(LengthGroupedSampler(batch, lengths=lengths, generator=torch.Generator().manual_seed(0)),
                               window)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))  # every example once per epoch
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def _longest_run_in_length_order(batches: list[list[int]], lengths: np.ndarray) -> int:
    """Most consecutive batches whose mean length keeps falling (the Trainer's sorted order: a whole window)."""
    means = [lengths[b].mean() for b in batches]
    longest = run = 1
    for previous, current in zip(means, means[1:]):
        run = run + 1 if current < previous else 1
        longest = max(longest, run)
    return longest


def _padded_per_real(batches: list[list[int]], lengths: np.ndarray) -> float:
    return sum(len(b) * lengths[b].max() for b in batches) / lengths.sum()


def _spam_like_lengths() -> np.ndarray:
    labels = np.array([0] * 1600 + [1] * 1600)  # positives tend to be longer, as spam is
    return np.where(labels == 1, 20, 10) + np.random.default_rng(0).integers(0, 30, size=len(labels))


def test_a_wide_window_trains_its_batches_in_random_order_not_longest_to_shortest():
    # In the Trainer's order a window of 50 batches runs from its longest to its shortest: where length predicts
    # the label (spam is longer than ham) that is a long streak of one-class steps, which hurt early training.
    lengths = _spam_like_lengths()
    assert _longest_run_in_length_order(_batches(50, lengths.tolist()), lengths) <= 8


def test_a_wide_window_cuts_padding():
    lengths = _spam_like_lengths()
    wide, narrow = (_padded_per_real(_batches(w, lengths.tolist()), lengths) for w in (50, 4))
    assert wide < 1.05 < 1.1 < narrow


def test_the_longest_batch_comes_first():
    lengths = _spam_like_lengths()
    first = _batches(50, lengths.tolist())[0]
    assert lengths[first].max() == lengths.max()


def test_other_samplers_are_left_alone():
    sampler = torch.utils.data.RandomSampler(range(10))
    assert windowed_sampler(sampler, 4) is sampler
