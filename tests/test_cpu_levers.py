"""Two training speed levers compute what the paths they replace compute:

- FastDropout drops at rate p, scales by 1 / (1 - p), is the identity in eval mode and follows torch's seed;
- frozen Linear weights held in bf16 under autocast give the products (and LoRA gradients) autocast gave, and the
  model is fp32 again afterwards, with a tied LM head left alone.
"""

from __future__ import annotations

import pytest
import torch

from ftlab_pipelines.core.config.labs import ModelConfig, PeftConfig
from ftlab_pipelines.core.modeling import lora_precision, models
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


def lora_classifier(path, seed=0):
    torch.manual_seed(seed)
    model = models.attach_lora(models.load_classifier(ModelConfig(name=str(path)), ["ham", "spam"]),
                               PeftConfig(r=4, alpha=8, dropout=0.0, target_modules=["query", "value", "dense"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model


def test_frozen_linears_in_bf16_give_autocasts_products_and_gradients_then_fp32_again(tiny_models):
    model = lora_classifier(tiny_models.classifier).eval()  # dropout off: the same forward twice
    ids, labels = torch.randint(5, 1000, (4, 12)), torch.tensor([0, 1, 1, 0])
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    def step():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    logits, grads = step()
    with lora_precision.frozen_linears_in_bf16(model) as held:
        assert held == sum(isinstance(m, torch.nn.Linear) and not m.weight.requires_grad for m in model.modules())
        assert held > 0
        bf16_logits, bf16_grads = step()
    assert torch.equal(bf16_logits, logits)
    assert grads.keys() == bf16_grads.keys()
    assert all(torch.equal(bf16_grads[n], g) for n, g in grads.items())
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32
        if name in frozen:
            assert torch.equal(param, frozen[name])


def test_an_lm_head_tied_to_the_embeddings_stays_fp32():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, tie_word_embeddings=True)).requires_grad_(False)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with lora_precision.frozen_linears_in_bf16(model):
        assert model.lm_head.weight.dtype == torch.float32
        assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
