"""Dropout on CPU with a cheaper random mask.

torch's CPU dropout draws one Bernoulli sample per element from its Mersenne Twister generator, serially: in
MiniLM LoRA training on sms_spam (batch 32) the 57 dropout masks of a step (LoRA's, the model's own and the
attention probabilities') took 38% of the step's CPU time (torch.profiler). Here each 64-bit draw of the same
generator gives four 16-bit uniform numbers, and an element is kept when its number is above round(p * 65536):
the drop rate is p to within 1/65536, a layer's dropout costs about half, and training runs 1592 instead of
1198 real tokens/s (bench/train_throughput.py --levers, median of 3 rounds).
The global torch generator is still the source, so a seed gives the same masks and a resumed run (whose
checkpoint holds the generator's state) continues the same sequence.

Only `nn.Dropout` modules are replaced: attention-probability dropout, which transformers applies inside its
attention functions, keeps torch's. On a GPU dropout is a fused kernel and nothing is replaced.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_LEVELS = 1 << 16


def keep_mask(shape: torch.Size, p: float, device: torch.device | None = None) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - p (to within 1/65536)."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    uniform16 = words.view(torch.int16)[:n]  # each int16 is uniform on [-32768, 32767]
    return (uniform16 >= round(p * _LEVELS) - _LEVELS // 2).view(shape)


class FastDropout(nn.Dropout):
    """nn.Dropout (same p, same scaling by 1 / (1 - p) in training, identity in eval) with `keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        return x * keep_mask(x.shape, self.p, x.device) * (1 / (1 - self.p))


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every plain `nn.Dropout` with p > 0 in `model` by `FastDropout`; return how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                setattr(parent, name, FastDropout(child.p).train(child.training))
                replaced += 1
    return replaced
