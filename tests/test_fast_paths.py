"""The speed levers compute the same thing as the slow paths they replace, with the real tokenizers and the tiny
Llama (SmolLM2's architecture and tokenizer); the 4-bit and bf16 tests also on SmolLM2 in `make test-slow`.

- tokenization: the direct fast-tokenizer path (and its de-duplication) gives transformers' ids;
- the reply-only LM head gives the model's own loss and gradients;
- packed SFT rows never attend to each other: a packed batch's loss is the rows' losses, unpacked.
"""

from __future__ import annotations

import types

import datasets
import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ftlab_pipelines.core.config.labs import (
    ModelConfig,
    PeftConfig,
    PromptConfig,
    TrainConfig,
)
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.text import prompts, tokenize
from ftlab_pipelines.core.training import reply_loss, train

SMOL = ModelConfig(name="smollm2-135m-instruct")
PERSONA = PromptConfig(system="You are gloomy.", user_column="user", response_column="reply")
TEXTS = ["Free entry in 2 a wkly comp to win FA Cup final tkts", "see you at 5", "", "  spaces  around ",
         "Ünïcödé and emoji \U0001F480 text", "see you at 5", "word " * 200]


@pytest.fixture(scope="module")
def smol_tokenizer():
    return models.load_tokenizer(SMOL)


@pytest.fixture(scope="module")
def tiny_llama(tiny_models) -> ModelConfig:
    return ModelConfig(name=str(tiny_models.causal_lm))


@pytest.fixture(scope="module")
def smol_lora(tiny_llama):
    torch.manual_seed(0)
    model = models.attach_lora(models.load_causal_lm(tiny_llama), PeftConfig(r=4, alpha=8, dropout=0.0,
                                                                             target_modules=["q_proj", "v_proj"]),
                               task_type="CAUSAL_LM")
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter: B starts at zero, which would hide gradient errors
            torch.nn.init.normal_(param, std=0.02)
    return model


@pytest.mark.parametrize("model_name", ["all-minilm-l6-v2", "smollm2-135m-instruct"])
def test_fast_tokenizer_path_gives_transformers_ids(model_name):
    tokenizer = models.load_tokenizer(ModelConfig(name=model_name))
    ids, lengths = tokenize.TextEncoder(tokenizer, max_length=32).encode(TEXTS)
    expected = tokenizer(TEXTS, truncation=True, max_length=32)["input_ids"]
    assert ids.to_pylist() == expected
    assert lengths.tolist() == [len(e) for e in expected]
    assert max(lengths) == 32  # the long text was cut


def test_encoder_remembers_a_bounded_number_of_texts_and_keeps_ids(smol_tokenizer):
    encoder = tokenize.TextEncoder(smol_tokenizer, max_length=32, remembered_texts=2)
    expected = smol_tokenizer(TEXTS, truncation=True, max_length=32)["input_ids"]
    for _ in range(2):  # the second call reads two texts from memory and encodes the rest again
        ids, _ = encoder.encode(TEXTS)
        assert ids.to_pylist() == expected
    assert len(encoder.known) == 2


def test_tokenized_splits_keep_row_order_labels_and_duplicates(tmp_path, smol_tokenizer, monkeypatch):
    monkeypatch.setattr(tokenize, "CHUNK_ROWS", 8)  # 21 rows: three chunks streamed to disk, the last one short
    frame = pd.DataFrame({"text": TEXTS * 3, "label": ["ham", "spam"] * 10 + ["ham"]})
    empty = frame.iloc[:0]
    stats = tokenize.tokenize_splits({"train": frame, "test": empty}, smol_tokenizer, text_column="text", label_column="label",
                                     labels=["ham", "spam"], template="Message: {text}", max_length=24,
                                     out_dir=tmp_path / "ds")
    data = tokenize.load_tokenized(tmp_path / "ds")["train"]
    prompts_ = [f"Message: {t}" for t in frame["text"]]
    assert data["input_ids"] == smol_tokenizer(prompts_, truncation=True, max_length=24)["input_ids"]
    assert data["labels"] == [0 if v == "ham" else 1 for v in frame["label"]]
    assert data["length"] == [len(ids) for ids in data["input_ids"]]
    assert stats["train"]["rows"] == 21
    assert len(tokenize.load_tokenized(tmp_path / "ds")["test"]) == 0 and stats["test"]["rows"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # the per-chunk staging files are gone


def test_reply_only_head_gives_the_models_loss_and_gradients(smol_lora, smol_tokenizer):
    model = smol_lora
    assert reply_loss.head_reads_last_hidden_state(model)
    ids = smol_tokenizer(["### User:\nHi\n\n### Response:\nGo away, quietly.", "### User:\nNo\n\n### Response:\nYes"],
                         padding=True, return_tensors="pt")
    labels = ids["input_ids"].clone()
    labels[:, :6] = -100
    labels[ids["attention_mask"] == 0] = -100

    def loss_and_grads(compute):
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    own, own_grads = loss_and_grads(lambda: model(**ids, labels=labels).loss)
    ours, our_grads = loss_and_grads(lambda: reply_loss.compute_loss_func(model, bf16=False)(
        model(**ids, **reply_loss.FORWARD_KWARGS), labels, num_items_in_batch=None))
    assert torch.isclose(ours, own, rtol=1e-5)
    assert max((our_grads[n] - own_grads[n]).abs().max().item() for n in own_grads) < 1e-5
    assert any(g.abs().max() > 0 for g in own_grads.values())


def test_qlora_gradients_reach_every_layer_after_an_eval_forward(smol_tokenizer, causal_lm_name):
    """bitsandbytes repacks NF4 weights for CPU inference on any eval-mode no-grad forward, and that layout has
    no backward. After such a forward (a validation step), LoRA on q_proj must still get gradients, which reach
    it only through the frozen 4-bit o_proj."""
    model = models.attach_lora(models.load_causal_lm(ModelConfig(name=causal_lm_name, quantization="4bit")),
                               PeftConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]),
                               task_type="CAUSAL_LM")
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    ids = smol_tokenizer(["### User:\nHi\n\n### Response:\nGo away, quietly."], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        model(**ids)
    model.train()
    model(**ids, labels=ids["input_ids"]).loss.backward()
    q_grad = dict(model.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"].grad
    assert q_grad is not None and q_grad.abs().max() > 0


def test_packed_rows_do_not_attend_to_each_other(smol_lora, smol_tokenizer, tmp_path):
    """TRL packs rows into one padding-free sequence with restarting position ids; transformers builds a
    block-diagonal causal mask from them. The packed loss must equal the loss of the same rows one by one."""
    model = smol_lora
    model.set_attn_implementation("eager")
    users = ["Do you like summer?", "Any plans for the weekend?", "What is your favourite colour?"]
    replies = ["Too much sun.", "I will visit a crypt and count the stones.", "Black. It goes with everything."]
    rendered = [prompts.render_prompt(PERSONA, smol_tokenizer, u) for u in users]
    completions = [prompts.render_completion(PERSONA, smol_tokenizer, u, r) for u, r in zip(users, replies)]
    encoded = tokenize.encode_prompt_completion(smol_tokenizer, rendered, completions, 128, True)
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict(encoded)})
    config = TrainConfig(max_steps=1, packing=True, packing_tokens=256)
    trainer = train.sft_trainer(model, smol_tokenizer, dataset, config, tmp_path, False, [], 128)
    assert len(trainer.train_dataset) == 1  # all three rows share one bin
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    assert batch["position_ids"][0].tolist().count(0) == 3

    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"]).loss
        total, count = 0.0, 0
        for ids, mask in zip(encoded["input_ids"], encoded["completion_mask"]):
            labels = torch.tensor([t if m else -100 for t, m in zip(ids, mask)])[None]
            n = int((labels[0, 1:] != -100).sum())
            total += model(input_ids=torch.tensor(ids)[None], labels=labels).loss.item() * n
            count += n
    assert packed.item() == pytest.approx(total / count, rel=1e-4)
    # Each packed row's logits are its own, and they would not be if rows could see each other (no position ids).
    ids, positions = batch["input_ids"], batch["position_ids"]
    starts = [i for i, p in enumerate(positions[0].tolist()) if p == 0] + [ids.shape[1]]
    packed_diff = leaked_diff = 0.0
    with torch.no_grad():
        packed_logits = model(input_ids=ids, position_ids=positions).logits[0]
        leaked_logits = model(input_ids=ids).logits[0]
        for start, end in zip(starts, starts[1:]):
            alone = model(input_ids=ids[:, start:end]).logits[0]
            packed_diff = max(packed_diff, (packed_logits[start:end] - alone).abs().max().item())
            leaked_diff = max(leaked_diff, (leaked_logits[start:end] - alone).abs().max().item())
    assert packed_diff < 1e-4 and leaked_diff > 1e-2, (packed_diff, leaked_diff)


def test_packing_bins_carry_about_a_batch_of_rows():
    assert train.packing_tokens([90, 100, 110], batch_size=8, max_length=256) == 832  # 8 x 100, up to 64s
    assert train.packing_tokens([10, 10], batch_size=2, max_length=256) == 256  # never below a whole row
    assert train.attention_for_training("sdpa") == "sdpa"


def test_lora_update_survives_bf16_autocast(causal_lm_name):
    """A young adapter's update is far below bf16's resolution of the frozen layer's output: PEFT's bf16 sum
    drops most of it. Summed in fp32 (lora_precision), the update seen under autocast matches fp32's."""
    from ftlab_pipelines.core.modeling import lora_precision

    torch.manual_seed(0)
    base = models.load_causal_lm(ModelConfig(name=causal_lm_name))
    layers = base.config.num_hidden_layers
    model = models.attach_lora(base, PeftConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]),
                               task_type="CAUSAL_LM")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=1e-4)  # a few steps into training
    x = torch.randn(2, 16, layer.in_features)
    with torch.no_grad():
        exact = layer.lora_B["default"](layer.lora_A["default"](x)) * layer.scaling["default"]

        def update_under_autocast():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return layer(x).float() - layer.base_layer(x).float()

        def error():
            return ((update_under_autocast() - exact).norm() / exact.norm()).item()

        ours = error()
        layer.forward = types.MethodType(type(layer).forward, layer)  # PEFT's own bf16 sum
        peft_own = error()
    assert lora_precision.sum_lora_in_fp32(model) == 2 * layers  # q and v in every layer; it re-patches this one
    print(f"relative error of the update: fp32 sum {ours:.4f}, PEFT's bf16 sum {peft_own:.4f}")
    assert ours < 0.05 < peft_own


class CountActivationCasts(TorchDispatchMode):
    """Counts fp32 -> bf16 copies of activations (3-D tensors: batch, sequence, features)."""

    def __init__(self):
        super().__init__()
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (func is torch.ops.aten._to_copy.default and args[0].dim() == 3 and args[0].dtype == torch.float32
                and out.dtype == torch.bfloat16):
            self.casts += 1
        return out


def test_lora_layers_reading_the_same_input_cast_it_once_under_autocast(tiny_models):
    """Query, key and value read the same hidden states: they share one bf16 copy, and the base matmul and the
    adapter use the same one. A BERT layer has 3 distinct fp32 LoRA inputs (the attention's input, the
    intermediate's, the output's; the context is already bf16), so a forward casts 3 activations per layer, 5 when
    each LoRA layer casts its own, and 10 when autocast casts for each matmul. Logits are unchanged and the
    gradients agree with casting per layer."""
    from ftlab_pipelines.core.modeling import lora_precision

    torch.manual_seed(0)
    model = models.attach_lora(models.load_classifier(ModelConfig(name=str(tiny_models.classifier)), ["a", "b"]),
                               PeftConfig(r=4, alpha=8, dropout=0.0, target_modules=["query", "key", "value", "dense"]))
    for module in model.modules():
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.02)
    layers = model.config.num_hidden_layers
    ids = torch.randint(5, 1000, (4, 12))

    def forward_and_backward():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16), CountActivationCasts() as counter:
            logits = model(input_ids=ids).logits
        logits.float().square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        return counter.casts, logits.detach(), grads

    shared_casts, shared_logits, shared_grads = forward_and_backward()
    for module in model.modules():  # one copy per layer: query, key and value each cast again
        if hasattr(module, "shared_cast"):
            module.shared_cast = lora_precision.SharedCast()
    own_casts, own_logits, own_grads = forward_and_backward()
    print(f"activation casts per layer: shared {shared_casts / layers}, per LoRA layer {own_casts / layers}")
    assert shared_casts == 3 * layers
    assert own_casts == 5 * layers
    assert torch.equal(shared_logits, own_logits)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # as evaluation scores
        assert torch.equal(model(input_ids=ids).logits, own_logits)
    for shared, own in zip(shared_grads, own_grads):
        torch.testing.assert_close(shared, own, rtol=0.05, atol=0.01 * own.abs().max().item())


def test_encoder_leaves_the_tokenizers_own_settings_as_they_were(smol_tokenizer):
    backend = smol_tokenizer.backend_tokenizer
    before = (backend.truncation, backend.padding)
    ids, _ = tokenize.TextEncoder(smol_tokenizer, max_length=8).encode(TEXTS)
    assert max(len(row) for row in ids.to_pylist()) == 8
    assert (backend.truncation, backend.padding) == before
