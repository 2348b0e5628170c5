"""FastDropout (core/training/cpu_dropout.py) computes what nn.Dropout does: it drops at rate p, scales by
1 / (1 - p), is the identity in eval mode, follows torch's seed and passes gradients through the kept elements.
The attention function with that mask computes what transformers' attention does, padding included."""

from __future__ import annotations

import pytest
import torch

from ftlab_pipelines.core.config.labs import ModelConfig, PeftConfig
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.training import cpu_dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_drops_at_rate_p_and_keeps_the_mean(p):
    torch.manual_seed(0)
    layer = cpu_dropout.FastDropout(p)
    x = torch.rand(1000, 1001) + 1  # an odd element count: the last 64-bit word is only partly used
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    rate = cpu_dropout.drop_rate(p)
    assert abs(rate - p) <= 1 / 512
    assert abs(dropped - rate) < 0.002  # 1M elements: the standard error is under 0.0005
    assert torch.equal(y[y != 0], (x * (1 / (1 - rate)))[y != 0])
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.005
    assert torch.equal(layer.eval()(x), x)


def test_fast_dropout_at_the_ends_of_its_resolution():
    x = torch.rand(64, 64) + 1
    assert torch.equal(cpu_dropout.fast_dropout(x, 0.001), x)  # rounds to 0: nothing dropped
    assert torch.equal(cpu_dropout.fast_dropout(x, 0.999), torch.zeros_like(x))  # rounds to 1: all dropped


def test_fast_dropout_follows_the_seed_and_passes_gradients_through_the_kept_elements():
    layer = cpu_dropout.FastDropout(0.3)
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(5)
    first = layer(x)
    torch.manual_seed(5)
    again = layer(x)
    assert torch.equal(first, again)
    assert not torch.equal(first, layer(x))  # the generator moved on
    first.sum().backward()
    assert torch.equal(x.grad, (first != 0).float() / (1 - cpu_dropout.drop_rate(0.3)))


def _lora_classifier(name: str):
    torch.manual_seed(0)
    return models.attach_lora(models.load_classifier(ModelConfig(name=name), ["ham", "spam"]),
                              PeftConfig(r=4, alpha=8, dropout=0.1, target_modules=["query", "value"]))


def test_every_dropout_module_of_a_lora_classifier_is_replaced_and_eval_is_unchanged(tiny_models):
    model = _lora_classifier(str(tiny_models.classifier))
    before = sum(type(m) is torch.nn.Dropout and m.p > 0 for m in model.modules())
    ids = torch.randint(5, 1000, (4, 12))
    with torch.no_grad():
        expected = model.eval()(input_ids=ids).logits
        assert cpu_dropout.use_fast_dropout(model) == before > 0
        assert not any(type(m) is torch.nn.Dropout and m.p > 0 for m in model.modules())
        assert torch.equal(model(input_ids=ids).logits, expected)
        model.train()
        torch.manual_seed(1)
        assert not torch.equal(model(input_ids=ids).logits, expected)


def test_fast_attention_dropout_matches_sdpa_in_eval_and_drops_attention_probabilities_in_training(tiny_models):
    model = _lora_classifier(str(tiny_models.classifier))
    ids = torch.randint(5, 1000, (4, 12))
    mask = torch.ones_like(ids)
    mask[:2, 7:] = 0  # padded rows: the eager mask must hide the same keys sdpa's did
    with torch.no_grad():
        expected = model.eval()(input_ids=ids, attention_mask=mask).logits
        assert model.config._attn_implementation == "sdpa"
        assert cpu_dropout.use_fast_attention_dropout(model)
        assert model.config._attn_implementation == cpu_dropout.FAST_ATTENTION
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-5)

    p = model.config.attention_probs_dropout_prob
    attention = next(m for m in model.modules() if type(m).__name__ == "BertSelfAttention").train()
    torch.manual_seed(3)
    q, k, v = (torch.randn(8, 2, 64, 16) for _ in range(3))
    _, weights = cpu_dropout.eager_attention_fast_dropout(attention, q, k, v, None, dropout=p)
    assert abs((weights == 0).float().mean().item() - p) < 0.01  # 65,536 probabilities
    assert abs(weights.sum(-1).mean().item() - 1) < 0.02  # rows still sum to 1 in expectation


def test_fast_attention_dropout_leaves_other_model_families_alone(tiny_models):
    """A Llama has no attention_probs_dropout_prob (and grouped-query heads): its attention is its own."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models.causal_lm)
    before = model.config._attn_implementation
    assert not cpu_dropout.use_fast_attention_dropout(model)
    assert model.config._attn_implementation == before


def test_base_dropout_zero_makes_training_forwards_repeat_while_lora_keeps_its_own(tiny_models):
    model = _lora_classifier(str(tiny_models.classifier))
    lora_dropouts = [m for n, m in model.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
    assert lora_dropouts
    assert models.set_base_dropout(model, 0.0) > 0
    assert all(m.p == 0.1 for m in lora_dropouts)
    assert model.config.hidden_dropout_prob == model.config.attention_probs_dropout_prob == 0.0
    ids = torch.randint(5, 1000, (4, 12))
    model.train()
    for m in lora_dropouts:
        m.p = 0.0
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
        models.set_base_dropout(model, 0.1)
        torch.manual_seed(1)
        assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
