"""FastDropout (core/training/cpu_dropout.py) computes what nn.Dropout does: it drops at rate p, scales by
1 / (1 - p), is the identity in eval mode, follows torch's seed and passes gradients through the kept elements."""

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
    assert abs(dropped - p) < 0.003  # 1M elements: the standard error is under 0.0005
    assert torch.equal(y[y != 0], (x * (1 / (1 - p)))[y != 0])
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.005
    assert torch.equal(layer.eval()(x), x)


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
    assert torch.equal(x.grad, (first != 0).float() / 0.7)


def test_every_dropout_module_of_a_lora_classifier_is_replaced_and_eval_is_unchanged(tiny_models):
    torch.manual_seed(0)
    config = ModelConfig(name=str(tiny_models.classifier))
    model = models.attach_lora(models.load_classifier(config, ["ham", "spam"]),
                               PeftConfig(r=4, alpha=8, dropout=0.1, target_modules=["query", "value"]))
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

