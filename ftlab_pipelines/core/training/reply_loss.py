"""Causal-LM loss that runs the LM head only on the tokens that carry a label (the replies).

A causal LM's forward computes logits for every position: with SmolLM2's 49k vocabulary that is a
(tokens x 49,152) fp32 tensor, upcast, log-softmaxed and back-propagated, and on a CPU those memory-bound
passes took about half of each SFT step. With completion-only loss half the positions are prompt tokens
whose logits are thrown away. Here the model returns its final hidden states (and one position's
logits), and the head runs on the labelled positions only: the same loss, the same gradients.

Before training, a tiny forward checks that the head applied to the returned last hidden state gives the
logits the model computed itself; where it does not, training keeps the model's own loss.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

FORWARD_KWARGS = {"output_hidden_states": True, "logits_to_keep": 1}


def shifted_reply_loss(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor,
                       num_items_in_batch=None, bf16: bool = False) -> torch.Tensor:
    """Next-token cross-entropy on positions whose next label is not -100, like transformers' ForCausalLMLoss:
    summed and divided by `num_items_in_batch` when given (gradient accumulation), else the mean.

    `bf16`: run the head under bf16 autocast, as the model's forward did (the Trainer autocasts only that)."""
    targets = labels[..., 1:]
    keep = targets != -100
    with torch.autocast(hidden.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = head(hidden[..., :-1, :][keep])
    logits = logits.float()
    loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    if num_items_in_batch is None:
        return loss / keep.sum().clamp(min=1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def head_reads_last_hidden_state(model) -> bool:
    """True when the LM head applied to the returned last hidden state gives the model's own logits (a tiny
    forward, no gradients): then `shifted_reply_loss` computes exactly the model's loss."""
    head = model.get_output_embeddings()
    if head is None:
        return False
    ids = torch.tensor([[1, 2, 3]], device=head.weight.device)
    with torch.no_grad():
        outputs = model(input_ids=ids, **FORWARD_KWARGS)
        if not getattr(outputs, "hidden_states", None):
            return False
        ours = head(outputs.hidden_states[-1][..., -1:, :]).float()
        agrees = bool(torch.allclose(ours, outputs.logits[..., -1:, :].float(), rtol=1e-3, atol=1e-3))
    if not agrees:
        log.warning("%s: the last hidden state is not the LM head's input; training uses the model's own loss "
                    "(logits for every position)", type(model).__name__)
    return agrees


def compute_loss_func(model, bf16: bool):
    """A Trainer `compute_loss_func` for a model called with FORWARD_KWARGS (the unwrapped model owns the head)."""

    def loss(outputs, labels, num_items_in_batch=None):
        return shifted_reply_loss(model.get_output_embeddings(), outputs.hidden_states[-1], labels, num_items_in_batch,
                                  bf16=bf16)

    return loss
