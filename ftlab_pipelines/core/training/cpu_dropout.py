"""Dropout on CPU with a cheaper random mask.

torch's CPU dropout draws one Bernoulli sample per element from its Mersenne Twister generator, serially: in
MiniLM LoRA training on sms_spam (batch 32) the 57 dropout masks of a step (LoRA's, the model's own and the
attention probabilities') took 38% of the step's CPU time (torch.profiler). Here each 64-bit draw of the same
generator gives eight 8-bit uniform numbers, and an element is kept when its number is above round(p * 256): the
drop rate is p rounded to 1/256 (0.1 -> 0.1016), kept elements are scaled by 1 / (1 - that rate), so the mean is
exact, and a layer's dropout costs well under half. With four 16-bit numbers per draw training ran 1592 instead of
1198 real tokens/s (bench/train_throughput.py --levers, median of 3 rounds); eight 8-bit numbers make a mask of
2.4M elements 2.8 instead of 4.1 ms and a MiniLM step 536 instead of 611 ms (8 paired rounds, in one process).
The global torch generator is still the source, so a seed gives the same masks and a resumed run (whose
checkpoint holds the generator's state) continues the same sequence.

`use_fast_dropout` replaces `nn.Dropout` modules. Attention-probability dropout happens inside transformers'
attention function, so `use_fast_attention_dropout` registers one (transformers' eager attention with this
mask: BERT-family models train about 9% faster per step than with sdpa, whose dropout falls back to torch's
mask) and switches the model to it. On a GPU dropout is a fused kernel and nothing is replaced.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_LEVELS = 1 << 8


def drop_rate(p: float) -> float:
    """The rate `keep_mask` drops at: p rounded to a multiple of 1/256 (0.1 -> 26/256 = 0.1016)."""
    return round(p * _LEVELS) / _LEVELS


def keep_mask(shape: torch.Size, p: float, device: torch.device | None = None) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - drop_rate(p)."""
    n = math.prod(shape)
    words = torch.empty((n + 7) // 8, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    uniform8 = words.view(torch.int8)[:n]  # each int8 is uniform on [-128, 127]
    return (uniform8 >= int(drop_rate(p) * _LEVELS) - _LEVELS // 2).view(shape)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`nn.functional.dropout` with `keep_mask`: kept elements scaled by 1 / (1 - drop_rate(p)), so the mean is
    kept exactly; identity when not training."""
    rate = drop_rate(p)
    if not training or rate == 0:
        return x
    if rate == 1:
        return x * 0
    # The mask in x's dtype with the scale folded in: one multiply each way, and no bool-to-float copy of the mask
    # in the forward and again in the backward, as `x * mask * scale` makes.
    scale = torch.full((), 1 / (1 - rate), dtype=x.dtype, device=x.device)
    return x * torch.where(keep_mask(x.shape, p, x.device), scale, 0)


class FastDropout(nn.Dropout):
    """nn.Dropout (p rounded to 1/256, kept elements scaled to keep the mean, identity in eval) with `keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every plain `nn.Dropout` with p > 0 in `model` by `FastDropout`; return how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                setattr(parent, name, FastDropout(child.p).train(child.training))
                replaced += 1
    return replaced


FAST_ATTENTION = "ftlab_eager_fast_dropout"


def eager_attention_fast_dropout(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attention_mask: torch.Tensor | None, scaling: float | None = None,
                                 dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' eager attention of the BERT family (models/bert/modeling_bert.py), with `fast_dropout` on the
    attention probabilities. `attention_mask` is the additive mask transformers builds for eager attention."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = fast_dropout(torch.softmax(weights, dim=-1), dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def use_fast_attention_dropout(model: nn.Module) -> bool:
    """Train a BERT-family model (its config names `attention_probs_dropout_prob`) with
    `eager_attention_fast_dropout`; other models (grouped-query attention, their own eager forms) are left as they
    are. Also without attention dropout: sdpa's bf16 backward on CPU is slower than eager (MiniLM on sms_spam, base
    dropout 0: 1,819 and 1,745 real tok/s with sdpa in two runs, 2,434 and 2,469 eager). Returns whether the model
    was switched."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    config = getattr(model, "config", None)
    if getattr(config, "attention_probs_dropout_prob", None) is None or getattr(config, "num_key_value_heads", None):
        return False
    AttentionInterface.register(FAST_ATTENTION, eager_attention_fast_dropout)
    AttentionMaskInterface.register(FAST_ATTENTION, eager_mask)
    model.set_attn_implementation(FAST_ATTENTION)
    return True
