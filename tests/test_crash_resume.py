"""SIGKILL the adapter stage after its first checkpoint; re-materializing resumes from the last checkpoint, redoes
at most one checkpoint interval, and ends where an uninterrupted run with the same seed ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from conftest import new_home, tiny_lab, write_labs

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.stages import adapter as adapter_stage
from ftlab_pipelines.core.stages.pipeline import DECLARATIONS
from ftlab_pipelines.core.stages.results import RESULT_FILE
from ftlab_pipelines.core.training import checkpoints as ckpt
from ftlab_pipelines.core.training import recipe
from ftlab_pipelines.definitions import build_definitions
from ftlab_pipelines.defs.resources import default_resources

CORPUS = Path(__file__).parent / "bad_inputs"
LAB = "sms_spam"
SAVE_STEPS = 4
MAX_STEPS = 12
LOSS_TOLERANCE = 1e-3  # per-step training loss, resumed vs uninterrupted (same seed, same data order)
WEIGHT_TOLERANCE = 1e-4  # max |difference| of any final adapter weight

DRIVER = """
import sys
import dagster as dg
from ftlab_pipelines.definitions import build_definitions
from ftlab_pipelines.defs.resources import default_resources
defs = build_definitions(sys.argv[1])
with dg.DagsterInstance.local_temp(tempdir=sys.argv[2]) as instance:
    dg.materialize(list(defs.assets), selection=[dg.AssetKey(["sms_spam", "adapter"])], instance=instance,
                   resources=default_resources())
"""


def lab_config(model) -> dict:
    lab = tiny_lab("sms_spam", model)
    lab["source"] = {"local_path": str(CORPUS / "good.csv")}
    lab["train"].update(max_steps=MAX_STEPS, save_steps=SAVE_STEPS, logging_steps=1, batch_size=8,
                        group_by_length=False)
    return lab


def wait_for_complete_checkpoint(checkpoints: Path, process: subprocess.Popen, deadline_s: float = 300) -> Path:
    """Poll until a checkpoint with trainer_state.json (written last) exists; fail if the process ends first."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        done = [c for c in ckpt.checkpoints_newest_first(checkpoints) if (c / ckpt.TRAINER_STATE).is_file()]
        if done:
            return done[0]
        assert process.poll() is None, f"the adapter process ended before its first checkpoint:\n{process.stdout.read()}"
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint under {checkpoints} after {deadline_s} s")


def killed_run_last_step(home: Path) -> int:
    """The last step the adapter process logged: its MLflow adapter run (left RUNNING) has loss at every step."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"ftlab/{LAB}")
    runs = client.search_runs([experiment.experiment_id], "tags.asset = 'adapter' and attributes.status = 'RUNNING'")
    assert len(runs) == 1
    return max((m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")), default=0)


def wait_for_step(home: Path, step: int, process: subprocess.Popen, deadline_s: float = 120) -> None:
    """Let the process train past its checkpoint, so the kill loses steps that must be redone."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and killed_run_last_step(home) < step:
        assert process.poll() is None, "the adapter process ended before it was killed"
        time.sleep(0.05)


def losses(log_history: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in log_history if "loss" in e}


@pytest.fixture
def upstream(tmp_path, monkeypatch, tiny_models, mlflow_store_template):
    """raw -> tokenized materialized in a persistent instance that a subprocess can open too."""
    home, instance_dir = new_home(tmp_path / "home", mlflow_store_template), tmp_path / "dagster"
    monkeypatch.setenv("FTLAB_HOME", str(home))
    labs = write_labs(tmp_path / "labs", {LAB: lab_config(tiny_models.classifier)})
    defs = build_definitions(str(labs))
    instance_dir.mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(instance_dir)) as instance:
        upto = [dg.AssetKey([LAB, s]) for s in ("raw_dataset", "validated_dataset", "splits", "tokenized")]
        result = dg.materialize(list(defs.assets), selection=upto, instance=instance, resources=default_resources())
        tokenized = result.asset_value(dg.AssetKey([LAB, "tokenized"]))
    return {"home": home, "labs": labs, "instance_dir": instance_dir, "defs": defs, "tokenized": tokenized}


def test_sigkill_after_first_checkpoint_then_resume_matches_uninterrupted(upstream, tmp_path):
    from ftlab_pipelines.core.config.loading import load_lab

    lab, settings = load_lab(upstream["labs"] / f"{LAB}.yaml"), Settings.from_env()
    key = DECLARATIONS["adapter"].cache_key(lab, settings, {"tokenized": upstream["tokenized"].key}, {})
    checkpoints = adapter_stage.checkpoint_dir(settings, lab.name, key)
    env = {**os.environ, "FTLAB_HOME": str(upstream["home"])}
    process = subprocess.Popen([sys.executable, "-c", DRIVER, str(upstream["labs"]), str(upstream["instance_dir"])],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = wait_for_complete_checkpoint(checkpoints, process)
        wait_for_step(upstream["home"], SAVE_STEPS + 2, process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert first.name == f"checkpoint-{SAVE_STEPS}"
    reached = killed_run_last_step(upstream["home"])
    resume_from = ckpt.resumable_checkpoint(checkpoints)  # what the re-run will pick (a half-written one set aside)
    resumed_step = int(Path(resume_from).name.split("-")[1])
    assert not (artifacts.stage_dir(settings, lab.name, "adapter", key) / RESULT_FILE).exists()

    with dg.DagsterInstance.local_temp(tempdir=str(upstream["instance_dir"])) as instance:
        result = dg.materialize(list(upstream["defs"].assets), selection=[dg.AssetKey([LAB, "adapter"])],
                                instance=instance, resources=default_resources())
    adapter = result.asset_value(dg.AssetKey([LAB, "adapter"]))
    metrics = adapter.metrics
    assert metrics["resumed"] == 1.0 and metrics["train_steps"] == MAX_STEPS
    redone = reached - resumed_step
    assert reached >= SAVE_STEPS + 2 and 0 <= redone <= SAVE_STEPS  # killed with progress past the checkpoint lost
    assert not checkpoints.exists()  # deleted only now that the finished adapter is in place
    assert not list(adapter.path.parent.glob(".tmp-*"))  # the killed run's temp dir was swept

    reference = recipe.fit(recipe.TrainingJob.from_lab(lab), upstream["tokenized"].dataset_path,
                           tmp_path / "ref-ckpt", tmp_path / "ref-out")
    resumed_losses = losses(json.loads((adapter.path / "log_history.json").read_text()))
    reference_losses = losses(reference.log_history)
    after = [s for s in reference_losses if s > resumed_step]
    assert after and all(s in resumed_losses for s in after)
    loss_diff = max(abs(resumed_losses[s] - reference_losses[s]) for s in after)
    weight_diff = max_weight_difference(adapter.path, tmp_path / "ref-out")
    print(f"\nkill-and-resume: killed at step {reached}, resumed from checkpoint-{resumed_step}, {redone} steps redone; "
          f"max |loss diff| over steps {after[0]}..{after[-1]} = {loss_diff:.2e}; max |weight diff| = {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOLERANCE
    assert weight_diff <= WEIGHT_TOLERANCE


def max_weight_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    first, second = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert first.keys() == second.keys()
    return max(float((first[k].float() - second[k].float()).abs().max()) for k in first)
