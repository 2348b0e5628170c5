"""A BERT classifier whose encoder runs on real tokens only (core/training/real_tokens.py) computes the padded
forward's logits, loss and LoRA gradients; batches it cannot take, and other model families, keep the padded
forward."""

from __future__ import annotations

import pytest
import torch

from ftlab_pipelines.core.config.labs import ModelConfig, PeftConfig
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.training import cpu_dropout, real_tokens


@pytest.fixture
def classifier(tiny_models):
    torch.manual_seed(0)
    model = models.attach_lora(models.load_classifier(ModelConfig(name=str(tiny_models.classifier)), ["ham", "spam"]),
                               PeftConfig(r=4, alpha=8, dropout=0.0, target_modules=["query", "key", "value", "dense"]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # a fresh adapter adds nothing: give it weights so its gradients and outputs count
            torch.nn.init.normal_(parameter, std=0.05)
    assert cpu_dropout.use_fast_attention_dropout(model)
    return model


def batch(right_padded: bool = True) -> dict:
    torch.manual_seed(1)
    ids = torch.randint(5, 1000, (4, 12))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    mask[2, 9:] = 0
    if not right_padded:
        mask[3, :4] = 0
    token_types = torch.zeros_like(ids)
    token_types[1, 6:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types, "labels": torch.tensor([0, 1, 1, 0])}


def forward_and_gradients(model, inputs: dict, rows_seen: list) -> tuple[torch.Tensor, torch.Tensor, dict]:
    embeddings = model.get_base_model().bert.embeddings.word_embeddings
    hook = embeddings.register_forward_hook(lambda module, args, out: rows_seen.append(tuple(args[0].shape)))
    model.zero_grad()
    output = model(**inputs)
    output.loss.backward()
    hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return output.logits.detach(), output.loss.detach(), grads


def test_real_token_forward_gives_the_padded_logits_loss_and_gradients(classifier):
    classifier.eval()  # no dropout: both forwards compute the same function
    inputs = batch()
    shapes: list = []
    logits, loss, grads = forward_and_gradients(classifier, inputs, shapes)
    assert real_tokens.use_real_tokens_only(classifier)
    new_logits, new_loss, new_grads = forward_and_gradients(classifier, inputs, shapes)

    assert shapes == [(4, 12), (1, int(inputs["attention_mask"].sum()))]  # the encoder saw the real tokens only
    torch.testing.assert_close(new_logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new_loss, loss, rtol=1e-5, atol=1e-6)
    assert new_grads.keys() == grads.keys() and any("lora_A" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(new_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_logits = classifier(**inputs).logits.float()
    torch.testing.assert_close(bf16_logits, logits, rtol=0, atol=0.02)


def test_training_forward_on_real_tokens_drops_and_reaches_every_adapter_weight(classifier):
    assert real_tokens.use_real_tokens_only(classifier)
    inputs = batch()
    classifier.eval()
    with torch.no_grad():
        eval_logits = classifier(**inputs).logits
    classifier.train()
    shapes: list = []
    logits, loss, grads = forward_and_gradients(classifier, inputs, shapes)
    assert shapes == [(1, int(inputs["attention_mask"].sum()))] and torch.isfinite(loss)
    assert not torch.allclose(logits, eval_logits)  # dropout (hidden and attention) is on in training
    trainable = {n for n, p in classifier.named_parameters() if p.requires_grad}
    # every adapter weight but the pooler's gets a gradient (the pooler's lora_B too: it starts at non-zero here)
    assert {n for n in trainable if "lora_" in n} <= {n for n, g in grads.items() if g.abs().sum() > 0}


def test_batches_it_cannot_take_and_other_families_keep_the_padded_forward(classifier, tiny_models):
    classifier.eval()
    inputs = batch(right_padded=False)  # row 3 starts with padding: its first token is not where the pooler reads
    shapes: list = []
    logits, _, _ = forward_and_gradients(classifier, inputs, shapes)
    assert real_tokens.use_real_tokens_only(classifier)
    new_logits, _, _ = forward_and_gradients(classifier, inputs, shapes)
    assert shapes == [(4, 12), (4, 12)]
    torch.testing.assert_close(new_logits, logits)

    other = models.load_classifier(ModelConfig(name=str(tiny_models.classifier)), ["ham", "spam"])
    assert not real_tokens.use_real_tokens_only(other)  # still on sdpa: its attention would not take the rows
    llama = models.load_classifier(ModelConfig(name=str(tiny_models.causal_lm)), ["ham", "spam"])
    assert not real_tokens.use_real_tokens_only(llama)
