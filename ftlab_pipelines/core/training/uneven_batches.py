"""A classification batch whose rows differ much in length runs as two forward passes, each padded only to its
own rows.

Length-grouped batches (core/training/sampling.py) sort only windows of 4 batches, so one long message pads a
batch of short ones: on sms_spam's train split 14 rows of 96-128 tokens each pad a batch of 32 rows, and the lab
trains 1.71 padded tokens per real one. Cut in two at the length that saves the most, the same batches pad to
1.25. The rows stay the same, and so does the loss: the batch's mean, each part weighted by its share of the
rows, then one backward. Only rounding and dropout's random draws differ from the whole batch's.
"""

from __future__ import annotations

import torch

PAD_MULTIPLE = 8  # the collator's: on this CPU, lengths off a multiple of 8 trained 30% slower
# A second pass costs a second set of small ops: MiniLM's steps on sms_spam took about 50 ms + 0.17 ms a padded
# token here, so a split pays only where it saves well over 300 padded tokens.
MIN_SAVED_TOKENS = 640


def padded(length: int) -> int:
    return -(-length // PAD_MULTIPLE) * PAD_MULTIPLE


def best_split(lengths_descending: list[int]) -> tuple[int, int]:
    """Where to cut rows sorted longest first, and how many padded tokens the cut saves."""
    n = len(lengths_descending)
    cost, cut = min((cut * padded(lengths_descending[0]) + (n - cut) * padded(lengths_descending[cut]), cut)
                    for cut in range(1, n))
    return cut, n * padded(lengths_descending[0]) - cost


def row_groups(attention_mask: torch.Tensor) -> list[torch.Tensor] | None:
    """The batch's rows in two groups (longest first), or None where a split would not pay or the padding is not
    on the right."""
    if attention_mask.dim() != 2 or attention_mask.shape[0] < 2:
        return None
    if not torch.equal(attention_mask.cumprod(dim=1), attention_mask):
        return None
    lengths = attention_mask.sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    cut, saved = best_split(lengths[order].tolist())
    return [order[:cut], order[cut:]] if saved >= MIN_SAVED_TOKENS else None


def part(inputs: dict, rows: torch.Tensor) -> dict:
    """`inputs` for `rows` only, cut to the padded length of their longest row."""
    batch, width = inputs["attention_mask"].shape
    length = min(padded(int(inputs["attention_mask"][rows].sum(dim=1).max())), width)
    chosen = {}
    for key, value in inputs.items():
        if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == batch:
            value = value[rows]
            if value.dim() >= 2 and value.shape[1] == width:
                value = value[:, :length]
        chosen[key] = value
    return chosen


def splitting_uneven_batches(trainer_class):
    """`trainer_class` whose training loss runs uneven batches in two parts. For losses that are a mean over rows
    (the model's own classification loss), in a single process: under DDP each forward pass expects its own
    backward."""

    class SplitUneven(trainer_class):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            groups = None
            if not return_outputs and model.training and self.args.world_size == 1 and "attention_mask" in inputs:
                groups = row_groups(inputs["attention_mask"])
            if groups is None:
                return super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            rows = inputs["attention_mask"].shape[0]
            return sum(super(SplitUneven, self).compute_loss(model, part(inputs, group), **kwargs)
                       * (len(group) / rows) for group in groups)

    SplitUneven.__name__ = SplitUneven.__qualname__ = trainer_class.__name__
    return SplitUneven
