"""Training and loading guards: nan loss, memory estimate (real MiniLM's size), trust_remote_code, safetensors only
(tiny BERT), atomic artifact directories."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.labs import (
    LabConfigError,
    ModelConfig,
    PeftConfig,
    TrainConfig,
)
from ftlab_pipelines.core.config.loading import load_lab
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.text import tokenize
from ftlab_pipelines.core.training import checkpoints as ckpt
from ftlab_pipelines.core.training import memory, nan_guard, train

LABELS = ["ham", "spam"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tokenizer = models.load_tokenizer(ModelConfig())
    frame = pd.DataFrame({"text": [f"see you at {i} pm" for i in range(16)] + [f"WIN {i}00 now" for i in range(16)],
                          "label": ["ham"] * 16 + ["spam"] * 16})
    out = tmp_path_factory.mktemp("tok") / "dataset"
    tokenize.tokenize_splits({"train": frame}, tokenizer, text_column="text", label_column="label", labels=LABELS,
                             template="{text}", max_length=16, out_dir=out)
    return tokenizer, tokenize.load_tokenized(out)


def test_nan_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(dataset, tiny_models, tmp_path):
    tokenizer, data = dataset
    model = models.attach_lora(models.load_classifier(ModelConfig(name=str(tiny_models.classifier)), LABELS),
                               PeftConfig(r=4, alpha=8))
    # Warmup keeps the first steps sane; then a learning rate of 1e10 blows the weights up.
    config = TrainConfig(max_steps=8, batch_size=8, save_steps=1, logging_steps=1, learning_rate=1e10, warmup_ratio=0.5)
    checkpoints = tmp_path / "ckpt"
    with pytest.raises(nan_guard.NonFiniteLoss) as error:
        train.train_adapter(model, tokenizer, data, config, checkpoint_dir=checkpoints, out_dir=tmp_path / "out")
    message = str(error.value)
    step = int(message.split(" at step ")[1].split(":")[0])
    assert "training loss is nan" in message and "Lower train.learning_rate (now 1e+10)" in message
    kept = ckpt.checkpoints_newest_first(checkpoints)
    assert len(kept) == 1 and str(kept[0]) in message and int(kept[0].name.split("-")[1]) < step - 1
    assert ckpt.weights_are_finite(kept[0])
    assert (checkpoints / f"nonfinite-checkpoint-{step - 1}").is_dir()  # the weights that produced the nan
    assert ckpt.resumable_checkpoint(checkpoints) == str(kept[0])
    assert not (tmp_path / "out").exists()


def test_memory_estimate_from_parameter_count_and_dtype():
    path = models.resolve_model("all-minilm-l6-v2")
    estimate = memory.check_memory("all-minilm-l6-v2", path, "none")
    assert 20e6 < estimate["params"] < 25e6  # MiniLM-L6: 22.7M parameters
    assert estimate["need_mb"] == pytest.approx(estimate["params"] * 4 * 1.5 / 2**20, rel=1e-3)
    with pytest.raises(memory.InsufficientMemory, match=r"model.name 'all-minilm-l6-v2': training needs about "
                                                        r"1\d\d MB .* only 50 MB is available .*use a smaller model"):
        memory.check_memory("all-minilm-l6-v2", path, "none", limit_mb=50)
    assert memory.check_memory("all-minilm-l6-v2", path, "4bit", limit_mb=50)["need_mb"] < 50  # NF4: 0.5 B/weight


def test_trust_remote_code_is_off_by_default_and_logged_when_set(caplog, tiny_models, tmp_path):
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text("contract: sms_spam\nlabels: [ham, spam]\nsource: {local_path: x.csv}\n")
    assert load_lab(lab_file).model.trust_remote_code is False
    tiny = str(tiny_models.classifier)
    with caplog.at_level(logging.WARNING, logger="ftlab_pipelines.core.modeling.models"):
        models.load_classifier(ModelConfig(name=tiny), LABELS)
        assert not [r for r in caplog.records if "trust_remote_code" in r.getMessage()]
        models.load_classifier(ModelConfig(name=tiny, trust_remote_code=True), LABELS)
    assert [r.levelno for r in caplog.records if "trust_remote_code is true" in r.getMessage()] == [logging.WARNING]


def test_base_model_with_pickle_weights_only_is_refused(tmp_path, tiny_models):
    import torch
    from safetensors.torch import load_file

    source = tiny_models.classifier
    pickled = tmp_path / "minilm-bin"
    shutil.copytree(source, pickled, ignore=shutil.ignore_patterns("*.safetensors", "*.onnx", "onnx", "openvino"))
    torch.save(load_file(f"{source}/model.safetensors"), pickled / "pytorch_model.bin")
    with pytest.raises(models.ModelError, match=r"cannot be loaded"):
        models.load_classifier(ModelConfig(name=str(pickled)), LABELS)


def test_no_lab_key_can_hold_a_secret(tmp_path):
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text("contract: sms_spam\nlabels: [ham, spam]\nsource: {local_path: x.csv}\n"
                        "publish: {hub_repo: me/x, hub_token: hf_abc}\n")
    with pytest.raises(LabConfigError, match="unknown key 'publish.hub_token'"):
        load_lab(lab_file)


def test_atomic_dir_leaves_nothing_behind_on_failure_and_sweeps_dead_writers(tmp_path):
    final = tmp_path / "stage" / "key"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_dir(final) as tmp:
            (tmp / "half.json").write_text("{")
            raise RuntimeError("failed halfway")
    assert not final.exists() and not list(final.parent.iterdir())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = final.parent / f"{artifacts._tmp_prefix(final)}{int(dead.stdout)}-deadbeef"
    orphan.mkdir()  # what a SIGKILLed writer leaves
    live = final.parent / f"{artifacts._tmp_prefix(final)}1-cafef00d"  # pid 1 is alive: a concurrent writer
    live.mkdir()
    with artifacts.atomic_dir(final) as tmp:
        artifacts.write_json(tmp / "manifest.json", {"ok": True})
    assert json.loads((final / "manifest.json").read_text()) == {"ok": True}
    assert not orphan.exists() and live.exists()


def test_make_ui_binds_both_uis_to_loopback():
    from conftest import REPO

    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nui:", 1)[1].split("\n\n", 1)[0]
    mlflow = next(line for line in recipe.splitlines() if "mlflow ui" in line)
    dagster = next(line for line in recipe.splitlines() if "dagster dev" in line)
    assert "--host 127.0.0.1" in mlflow and "-h 127.0.0.1" in dagster
    assert "0.0.0.0" not in recipe
