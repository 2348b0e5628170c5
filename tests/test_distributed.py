"""train.num_processes: 2 -> two DDP ranks on gloo through accelerate, on disjoint shards; rank 0 logs and saves.
An interrupted two-rank run resumed is `make test-slow` (two launches); DDP resume is in the default suite on Ray
(tests/ray_cluster/)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import adapter_run, requires_data, tiny_lab
from mlflow import MlflowClient

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.evaluation import inference
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.stages.adapter import checkpoint_dir
from ftlab_pipelines.core.stages.pipeline import DECLARATIONS, STAGES
from ftlab_pipelines.core.stages.results import Tokenized
from ftlab_pipelines.core.stages.runner import StageContext, run_stage
from ftlab_pipelines.core.text import tokenize
from ftlab_pipelines.core.training import distributed
from ftlab_pipelines.core.training.recipe import TrainingJob

LABELS = ["ham", "spam"]
TRAIN_ROWS = 32  # 2 ranks x batch 4 x 4 steps: no example is repeated to even out a last batch


@pytest.fixture(scope="module")
def lab_config(tiny_models):
    """make(**train): the sms_spam lab on the tiny BERT with two processes."""
    def make(**train) -> LabConfig:
        raw = tiny_lab("sms_spam", tiny_models.classifier)
        raw["train"].update({"num_processes": 2, "batch_size": 4, "epochs": 1, "max_steps": -1, "save_steps": 2,
                             "logging_steps": 1, **train})
        return LabConfig.model_validate({**raw, "name": "sms_spam"})
    return make


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, lab_config) -> Tokenized:
    half = TRAIN_ROWS // 2
    frame = pd.DataFrame({"text": [f"see you at {i} pm" for i in range(half)] + [f"WIN £{i}00 now!!" for i in range(half)],
                          "label": ["ham"] * half + ["spam"] * half})
    out = tmp_path_factory.mktemp("tok") / "dataset"
    tokenize.tokenize_splits({"train": frame}, models.load_tokenizer(lab_config().model), text_column="text",
                             label_column="label", labels=LABELS, template="{text}", max_length=32, out_dir=out)
    return Tokenized(key="tiny", dir=str(out.parent))


def rank_shards(out: Path) -> list[dict]:
    return [json.loads((out / distributed.RANK_EXAMPLES / f"rank{r}.json").read_text()) for r in (0, 1)]


def train_set_lengths(tokenized: Tokenized) -> dict[str, int]:
    """Real tokens of each train example, by fingerprint (the 32 rows are distinct)."""
    return {distributed.fingerprint(row["input_ids"]): row["length"]
            for row in tokenize.load_tokenized(tokenized.dataset_path)["train"]}


def test_two_ranks_train_disjoint_shards_and_rank0_alone_logs_and_saves(tokenized, lab_config, tmp_path):
    lab = lab_config()
    settings, run = Settings.from_env(), adapter_run(lab.name, tmp_path)
    done = run_stage(STAGES["adapter"], lab, {"tokenized": tokenized}, StageContext(settings, run))
    out = done.result.path

    ranks = rank_shards(out)
    assert [(r["rank"], r["world_size"], r["examples"]) for r in ranks] == [(0, 2, 16), (1, 2, 16)]
    shards = [set(r["fingerprints"]) for r in ranks]
    lengths = train_set_lengths(tokenized)
    assert len(lengths) == TRAIN_ROWS and all(len(shard) == 16 for shard in shards)
    assert shards[0] | shards[1] == set(lengths)  # 2 x 16 distinct of 32: disjoint, covering the epoch
    # tokens/s counts the tokens both ranks trained, once each
    manifest = artifacts.read_json(out / "manifest.json")
    assert manifest["metrics"]["train_tokens"] == sum(lengths.values())
    assert manifest["num_processes"] == 2 and manifest["metrics"]["world_size"] == 2.0
    assert manifest["metrics"]["resumed"] == 0.0 and manifest["metrics"]["train_steps"] == 4
    assert done.report.metadata["world_size"] == 2
    for name in ("adapter_model.safetensors", "adapter_config.json", "log_history.json", "loss_curves.png"):
        assert (out / name).is_file(), name
    key = DECLARATIONS["adapter"].cache_key(lab, settings, {"tokenized": tokenized.key}, {})
    assert out.name == key and not checkpoint_dir(settings, lab.name, key).exists()

    # Rank 0 alone streamed the loss: one point per step, not one per rank.
    history = run.client.get_metric_history(run.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    # ... and it is the loss of a batch, not the world size times it: an untrained two-class head starts near ln 2.
    first = min(history, key=lambda m: (m.step, m.timestamp)).value
    assert abs(first - math.log(2)) < 0.25, first

    model = models.load_adapter_classifier(out, lab.model, LABELS)
    probs = inference.predict_texts(model, models.load_tokenizer(lab.model), ["see you at 3 pm", "WIN £500 now!!"],
                                    lab.model.template, lab.model.max_length)
    assert probs.shape == (2, 2) and abs(probs.sum(axis=1) - 1).max() < 1e-4


@pytest.mark.slow  # a second launch; resume itself is the same code as one process's (tests/test_crash_resume.py)
def test_an_interrupted_two_rank_run_resumes_without_repeating_an_example(tokenized, lab_config, tmp_path):
    """An interrupted first attempt (2 of 4 steps, checkpointed) and the adapter stage resuming it."""
    lab = lab_config()
    settings, run = Settings.from_env(), adapter_run(lab.name, tmp_path)
    key = DECLARATIONS["adapter"].cache_key(lab, settings, {"tokenized": tokenized.key}, {})
    distributed.launch(TrainingJob.from_lab(lab_config(max_steps=2)), tokenized.dataset_path, "partial",
                       checkpoint_dir(settings, lab.name, key), tmp_path / "partial", run)
    done = run_stage(STAGES["adapter"], lab, {"tokenized": tokenized}, StageContext(settings, run))
    out = done.result.path

    runs = rank_shards(tmp_path / "partial") + rank_shards(out)
    assert [(r["rank"], r["world_size"], r["examples"]) for r in runs] == [(0, 2, 8), (1, 2, 8)] * 2
    shards = [set(r["fingerprints"]) for r in runs]
    lengths = train_set_lengths(tokenized)
    assert all(len(shard) == 8 for shard in shards)
    assert set().union(*shards) == set(lengths)  # 4 x 8 distinct of 32: pairwise disjoint, resume repeats nothing

    # tokens/s after a resume: each attempt counts the tokens both ranks trained in it, and only those.
    trained = [sum(lengths[f] for r in attempt for f in r["fingerprints"]) for attempt in (runs[:2], runs[2:])]
    counted = [artifacts.read_json(d / "manifest.json")["metrics"]["train_tokens"] for d in (tmp_path / "partial", out)]
    assert counted == trained and sum(trained) == sum(lengths.values())
    manifest = artifacts.read_json(out / "manifest.json")
    assert manifest["metrics"]["resumed"] == 1.0 and manifest["metrics"]["train_steps"] == 4
    assert sorted(m.step for m in run.client.get_metric_history(run.run_id, "loss")) == [1, 2, 3, 4]


def test_failed_launch_raises_with_the_tail_of_its_output():
    command = [sys.executable, "-c", "import sys; print('loading'); sys.exit('worker: no such dataset')"]
    with pytest.raises(distributed.DistributedTrainingError, match="exit code 1") as failure:
        distributed.run_streaming(command, dict(os.environ), 2)
    assert "loading\nworker: no such dataset" in str(failure.value)


@pytest.mark.slow
@requires_data
def test_two_process_lab_through_dagster(trained_home):
    """The session's tiny sms_spam lab, copied, with train.num_processes: 2: a new adapter, trained by two ranks.

    Slow tier: the adapter asset calls the build_adapter that the two-rank test above runs (shards, resume, rank 0's
    MLflow stream), and every tiny chain covers the asset wiring."""
    import dagster as dg
    import yaml

    from ftlab_pipelines.definitions import build_definitions
    from ftlab_pipelines.defs.resources import default_resources

    lab_file = trained_home["labs"] / "sms_spam.yaml"
    raw = yaml.safe_load(lab_file.read_text())
    raw["train"]["num_processes"] = 2
    lab_file.write_text(yaml.safe_dump(raw))
    defs = build_definitions(str(trained_home["labs"]))
    result = dg.materialize(list(defs.assets), instance=trained_home["instance"], resources=default_resources(),
                            raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    published = result.output_for_node("sms_spam__published_adapter").path
    assert (published / "adapter_model.safetensors").is_file()
    adapter = result.output_for_node("sms_spam__adapter")
    assert (adapter.path / distributed.RANK_EXAMPLES / "rank1.json").is_file()
    client = MlflowClient(Settings.from_env().mlflow_tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ftlab/sms_spam").experiment_id],
                                filter_string=f"tags.asset = 'adapter' and tags.dagster_run_id = '{result.run_id}'")
    metrics = run.data.metrics
    assert metrics["world_size"] == 2.0 and metrics["train_steps"] == 12 and metrics["tokens_per_s"] > 0
    assert metrics["reused"] == 0.0  # a new adapter: the single-process one of the session is not reused
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in losses) == [3, 6, 9, 12]
