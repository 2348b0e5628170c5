"""A lab materialized on a real two-node Ray cluster on 127.0.0.1 (a head and a worker node, each its own
`ray start`). Runs inside tests/test_ray_two_nodes.py's loopback-only network namespace, in this order: the whole chain
launched through Dagster with deploy/ray/dagster.yaml's run launcher (one Ray job runs the run's steps; the adapter
trains on two Ray Train workers, one per node: also the uninterrupted reference), then a worker node killed
mid-training and resumed, and last a stopped head node.

`make test-slow` (`-m slow`) holds the two runs that cost two more Ray Train fits or seven more Ray jobs: the worker
node killed mid-training and its re-materialization (about 80 CPU-s, a third of this module's), and the whole chain
with every step a Ray job of its own (FTLAB_RAY_STEP_JOBS)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from cluster import TwoNodeCluster
from conftest import REPO, adapter_run, artifact_files, new_home, tiny_lab, write_labs
from mlflow import MlflowClient
from test_crash_resume import (
    LOSS_TOLERANCE,
    WEIGHT_TOLERANCE,
    losses,
    max_weight_difference,
)

from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.evaluation import inference
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.stages.adapter import checkpoint_dir
from ftlab_pipelines.core.stages.pipeline import DECLARATIONS, STAGES
from ftlab_pipelines.core.stages.results import Adapter, Tokenized
from ftlab_pipelines.core.stages.runner import StageContext, run_stage
from ftlab_pipelines.core.text import tokenize
from ftlab_pipelines.core.tracking import AssetRun
from ftlab_pipelines.core.training import checkpoints as ckpt
from ftlab_pipelines.core.training import distributed

LAB = "sms_spam"
STEPS_OF_A_RUN = ["raw_dataset", "validated_dataset", "splits", "tokenized", "adapter", "evaluation",
                  "published_adapter"]
SAVE_STEPS = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> TwoNodeCluster:
    started = TwoNodeCluster(tmp_path_factory.mktemp("ray_cluster")).start()
    yield started
    started.stop()


def chain_lab(model) -> dict:
    """The sms_spam lab on the tiny BERT, one epoch at batch 4 on each of two Ray Train workers: 340 rows give 160
    train rows, 20 steps with no row repeated to even out the last one, a checkpoint every 4 steps."""
    raw = tiny_lab(LAB, model, max_rows=340, split__minority_share=0.2)  # the row counts above, whatever the lab's
    raw["train"].update({"ray": {"num_workers": 2}, "batch_size": 4, "epochs": 1, "max_steps": -1,
                         "save_steps": SAVE_STEPS, "logging_steps": 1, "group_by_length": False})
    return raw


def dagster_env(root: Path, home: Path, cluster: TwoNodeCluster, **extra: str) -> dict:
    return {**cluster.env(), "FTLAB_HOME": str(home), "FTLAB_LABS_DIR": str(root / "labs"),
            "DAGSTER_HOME": str(root / "dagster"), "FTLAB_RAY_ADDRESS": cluster.jobs_address, **extra}


def dagster(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dagster", *args, "-m", "ftlab_pipelines.definitions"], env=env,
                          cwd=root, capture_output=True, text=True, timeout=600)


def ray_profile_home(root: Path, model: Path) -> None:
    """The lab, a DAGSTER_HOME whose run launcher is deploy/ray/dagster.yaml's. On sqlite storage here, and runs
    are launched at once rather than queued for the daemon (the profile's QueuedRunCoordinator)."""
    write_labs(root / "labs", {LAB: chain_lab(model)})
    profile = yaml.safe_load((REPO / "deploy" / "ray" / "dagster.yaml").read_text())
    (root / "dagster").mkdir()
    (root / "dagster" / "dagster.yaml").write_text(yaml.safe_dump(
        {"telemetry": {"enabled": False}, "run_launcher": profile["run_launcher"],
         "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}}))


def launch_run(root: Path, home: Path, cluster: TwoNodeCluster) -> tuple[subprocess.CompletedProcess, str]:
    """`dagster job launch` of the lab's job preset: the Ray run launcher submits the run as a Ray job."""
    run_id = str(uuid.uuid4())
    done = dagster(root, dagster_env(root, home, cluster), "job", "launch", "-j", f"{LAB}_pipeline", "--run-id", run_id)
    return done, run_id


def wait_for_job(cluster: TwoNodeCluster, submission_id: str, timeout_s: float = 600):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(cluster.jobs_address)
    end = time.monotonic() + timeout_s
    while not (job := client.get_job_info(submission_id)).status.is_terminal() and time.monotonic() < end:
        time.sleep(0.5)
    return job, client.get_job_logs(submission_id)


def step_ray_jobs(cluster: TwoNodeCluster) -> list:
    """The Ray jobs of single steps (dagster-ray's executor), once Ray has marked them finished: Dagster sees a
    step's success before Ray does."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(cluster.jobs_address)
    end = time.monotonic() + 60
    while True:
        jobs = [j for j in client.list_jobs() if (j.submission_id or "").startswith("dagster-step-")]
        if all(j.status.is_terminal() for j in jobs) or time.monotonic() > end:
            return jobs
        time.sleep(0.5)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_models, cluster, mlflow_store_template):
    """`dagster job launch` with the Ray profile: the run is one Ray job on the cluster, and its adapter step drives
    two Ray Train workers on the cluster it runs on (train.ray.address: auto)."""
    root = tmp_path_factory.mktemp("chain")
    home = new_home(root / "home", mlflow_store_template)
    ray_profile_home(root, tiny_models.classifier)
    started = time.monotonic()
    launched, run_id = launch_run(root, home, cluster)
    assert launched.returncode == 0, launched.stdout[-4000:] + launched.stderr[-4000:]
    job, logs = wait_for_job(cluster, f"dagster-run-{run_id}")
    seconds = time.monotonic() - started
    with dg.DagsterInstance.from_config(str(root / "dagster")) as instance:
        run_status = instance.get_run_by_id(run_id).status
        step_events = [(e.step_key, e.dagster_event.event_type, e.dagster_event.pid, e.timestamp)
                       for e in instance.all_logs(run_id) if e.step_key and e.dagster_event]
    stage = lambda name: home / "artifacts" / LAB / name  # noqa: E731
    adapter = [Adapter.read(p.parent) for p in stage("adapter").glob("*/result.json")]
    tokenized = [Tokenized.read(p.parent) for p in stage("tokenized").glob("*/result.json")]
    return {"root": root, "home": home, "seconds": seconds, "run_id": run_id, "job": job, "logs": logs,
            "run_status": run_status, "step_events": step_events,
            "adapter": adapter[0] if adapter else None, "tokenized": tokenized[0] if tokenized else None,
            "client": MlflowClient(f"sqlite:///{home / 'mlflow.db'}")}


def rank_records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / distributed.RANK_EXAMPLES).glob("rank*.json"))]


def test_only_loopback_exists_here():
    assert [name for _, name in socket.if_nameindex()] == ["lo"]


def test_the_whole_chain_ran_as_one_ray_job_launched_by_the_run_launcher(chain, cluster):
    from ray.job_submission import JobStatus

    job, logs, run_id = chain["job"], chain["logs"], chain["run_id"]
    started = {step: t for step, kind, _, t in chain["step_events"] if kind == dg.DagsterEventType.STEP_START}
    succeeded = {step: (pid, t) for step, kind, pid, t in chain["step_events"]
                 if kind == dg.DagsterEventType.STEP_SUCCESS}
    steps = {step.split("__")[1]: round(t - started[step], 1) for step, (_, t) in succeeded.items()}
    print(f"\nwhole chain as one Ray job: {chain['seconds']:.1f} s (the job itself "
          f"{(job.end_time - job.start_time) / 1000:.1f} s); seconds per step: {steps}")
    assert job.status == JobStatus.SUCCEEDED, logs[-6000:]
    assert job.metadata["dagster/run-id"] == run_id and job.metadata["dagster/job"] == f"{LAB}_pipeline"
    assert chain["run_status"] == dg.DagsterRunStatus.SUCCESS
    # Every step succeeded in one process, the run's Ray job: its log holds that process's events. The step events
    # come from Dagster's event log, not from the Ray job's log, which can miss a step's last second of output
    # (Dagster's compute-log capture tails the output a second at a time: dagster-io/dagster#23336).
    assert sorted(steps) == sorted(STEPS_OF_A_RUN)
    pids = {pid for pid, _ in succeeded.values()}
    assert len(pids) == 1 and f"{run_id} - {pids.pop()} - {LAB}__raw_dataset - " in logs, logs[:6000]
    assert step_ray_jobs(cluster) == []
    assert str(chain["client"].get_model_version_by_alias(f"ftlab-{LAB}", "champion").version) == "1"


@pytest.mark.slow  # the opt-in executor; its wiring (executor, op tags) is tested in tests/test_ray.py
def test_with_step_jobs_every_step_of_the_chain_is_a_ray_job_of_its_own(tmp_path, tiny_models, cluster,
                                                                      mlflow_store_template):
    root, home = tmp_path, new_home(tmp_path / "home", mlflow_store_template)
    ray_profile_home(root, tiny_models.classifier)
    started = time.monotonic()
    done = dagster(root, dagster_env(root, home, cluster, FTLAB_RAY_STEP_JOBS="1"), "job", "execute",
                   "-j", f"{LAB}_pipeline")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    from ray.job_submission import JobStatus

    jobs = step_ray_jobs(cluster)
    steps = {j.metadata["dagster/op"]: j for j in jobs}
    seconds = {name.split("__")[1]: round((j.end_time - j.start_time) / 1000, 1) for name, j in steps.items()}
    print(f"\nwhole chain, a Ray job per step: {time.monotonic() - started:.1f} s; Ray job seconds: {seconds}")
    assert sorted(steps) == sorted(f"{LAB}__{s}" for s in STEPS_OF_A_RUN)
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs)


def test_two_workers_on_two_nodes_trained_disjoint_shards_covering_the_epoch(chain, cluster):
    adapter: Adapter = chain["adapter"]
    records = rank_records(adapter.path)
    assert [(r["rank"], r["world_size"]) for r in records] == [(0, 2), (1, 2)]
    assert {r["node_id"] for r in records} == {n["id"] for n in cluster.alive_nodes()}  # one worker per node
    shards = [set(r["fingerprints"]) for r in records]
    rows = [distributed.fingerprint(ids)
            for ids in tokenize.load_tokenized(chain["tokenized"].dataset_path)["train"]["input_ids"]]
    train_set = set(rows)
    # Disjoint, except where the last step is padded with rows from the start so that both workers' batches are
    # full (accelerate's even_batches), and rows whose tokens are identical after truncation (one fingerprint).
    per_step = 2 * 4  # workers x batch_size
    padded = -len(rows) % per_step
    assert shards[0] | shards[1] == train_set
    assert len(shards[0] & shards[1]) <= padded + len(rows) - len(train_set)
    assert [r["examples"] for r in records] == [(len(rows) + padded) // 2] * 2
    steps = int(adapter.metrics["train_steps"])
    assert steps == (len(rows) + padded) // per_step == 20 and adapter.metrics["world_size"] == 2.0
    client: MlflowClient = chain["client"]
    (run,) = client.search_runs([client.get_experiment_by_name(f"ftlab/{LAB}").experiment_id],
                                filter_string="tags.asset = 'adapter'")
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(1, steps + 1))


def test_the_adapter_trained_on_the_cluster_loads_and_predicts(chain):
    lab = LabConfig.model_validate(yaml.safe_load((chain["root"] / "labs" / f"{LAB}.yaml").read_text()))
    model = models.load_adapter_classifier(chain["adapter"].path, lab.model, lab.labels)
    probs = inference.predict_texts(model, models.load_tokenizer(lab.model), ["see you at 3 pm", "WIN £500 now!!"],
                                    lab.model.template, lab.model.max_length)
    assert probs.shape == (2, 2) and abs(probs.sum(axis=1) - 1).max() < 1e-4


def last_logged_step(client: MlflowClient, run_id: str) -> int:
    return max((m.step for m in client.get_metric_history(run_id, "loss")), default=0)


def kill_worker_node_past_a_checkpoint(cluster: TwoNodeCluster, checkpoints: Path, run: AssetRun, state: dict) -> None:
    """Wait for the first complete checkpoint and for rank 0 to log two steps past it, then SIGKILL the worker node:
    the steps since the checkpoint are lost and must be redone."""
    end = time.monotonic() + 300
    while time.monotonic() < end:
        done = [c for c in ckpt.checkpoints_newest_first(checkpoints) if (c / ckpt.TRAINER_STATE).is_file()]
        if done and last_logged_step(run.client, run.run_id) >= ckpt.step_of(done[-1]) + 2:
            state["first_checkpoint"] = done[-1].name
            state["killed_at_s"] = round(time.monotonic() - state["started"], 1)
            cluster.worker.kill()
            state["killed"] = True
            return
        time.sleep(0.05)


@pytest.fixture
def lab_outside_the_cluster(chain, cluster) -> LabConfig:
    """The chain's lab, run from this process: train.ray.address names the head."""
    raw = yaml.safe_load((chain["root"] / "labs" / f"{LAB}.yaml").read_text())
    raw["train"]["ray"]["address"] = cluster.address
    return LabConfig.model_validate(raw)


@pytest.mark.slow  # two more Ray Train fits; `make test` keeps the cluster's other tests within its budget
def test_worker_node_killed_mid_training_fails_clearly_and_rematerializing_resumes(chain, lab_outside_the_cluster,
                                                                                 cluster, tmp_path):
    lab, tokenized = lab_outside_the_cluster, chain["tokenized"]
    settings = Settings.from_env()  # a home of its own: nothing of the chain's is reused
    key = DECLARATIONS["adapter"].cache_key(lab, settings, {"tokenized": tokenized.key}, {})
    checkpoints = checkpoint_dir(settings, lab.name, key)
    state = {"started": time.monotonic()}
    first_run = adapter_run(lab.name, tmp_path)
    killer = threading.Thread(target=kill_worker_node_past_a_checkpoint, args=(cluster, checkpoints, first_run, state))
    killer.start()
    try:
        with pytest.raises(distributed.DistributedTrainingError, match=cluster.address) as failure:
            run_stage(STAGES["adapter"], lab, {"tokenized": tokenized}, StageContext(settings, first_run))
    finally:
        killer.join()
    assert state.get("killed"), f"training ended before the worker node was killed: {state}"
    failed_at = time.monotonic() - state.pop("started")
    print(f"\nworker node killed ({state}), the run failed at {failed_at:.1f} s: {str(failure.value)[:600]}")
    reached = last_logged_step(first_run.client, first_run.run_id)
    resumed_step = ckpt.step_of(ckpt.resumable_checkpoint(checkpoints, world_size=2))
    assert not list((settings.artifacts_dir / lab.name / "adapter").glob("*/result.json"))  # nothing published

    # The run's placement group (one CPU per worker, SPREAD, one CPU per node) waits for the restarted node.
    cluster.start_worker(wait=False)
    resumed_at = time.monotonic()
    done = run_stage(STAGES["adapter"], lab, {"tokenized": tokenized}, StageContext(settings, adapter_run(lab.name, tmp_path)))
    print(f"the worker node restarted and the resumed run took {time.monotonic() - resumed_at:.1f} s")
    metrics, reference = done.result.metrics, chain["adapter"]
    assert metrics["resumed"] == 1.0 and metrics["train_steps"] == reference.metrics["train_steps"]
    # At most one checkpoint interval redone (none when the kill, which lags the loss it waits for, landed just
    # after a checkpoint).
    assert 0 <= reached - resumed_step <= SAVE_STEPS
    assert len({r["node_id"] for r in rank_records(done.result.path)}) == 2  # the restarted node took a worker
    assert not checkpoints.exists()

    resumed = losses(json.loads((done.result.path / "log_history.json").read_text()))
    uninterrupted = losses(json.loads((reference.path / "log_history.json").read_text()))
    after = [s for s in uninterrupted if s > resumed_step]
    loss_diff = max(abs(resumed[s] - uninterrupted[s]) for s in after)
    weight_diff = max_weight_difference(done.result.path, reference.path)
    print(f"killed at step {reached}, resumed from step {resumed_step}; max |loss diff| {loss_diff:.2e}, "
          f"max |weight diff| {weight_diff:.2e}")
    assert loss_diff <= LOSS_TOLERANCE and weight_diff <= WEIGHT_TOLERANCE


def test_a_stopped_head_fails_the_next_run_at_once_naming_the_address_and_keeps_the_champion(
        chain, lab_outside_the_cluster, cluster, tmp_path):
    home, root = chain["home"], chain["root"]
    stored = lambda: (artifact_files(home), sorted((home / "work").rglob("*")))  # noqa: E731
    before = stored()
    cluster.stop_head()

    # A run launched with the Ray profile and a changed lab (a new adapter is needed): it cannot be submitted.
    lab_file = root / "labs" / f"{LAB}.yaml"
    raw = yaml.safe_load(lab_file.read_text())
    raw["train"]["learning_rate"] *= 2
    lab_file.write_text(yaml.safe_dump(raw))
    started = time.monotonic()
    done, _ = launch_run(root, home, cluster)
    seconds = time.monotonic() - started
    print(f"\nstopped head: launching the Dagster run failed in {seconds:.1f} s: {done.stderr.strip()[-600:]}")
    assert done.returncode != 0 and cluster.jobs_address in done.stdout + done.stderr
    assert seconds < 60
    assert stored() == before  # nothing half-written
    assert str(chain["client"].get_model_version_by_alias(f"ftlab-{LAB}", "champion").version) == "1"

    # The adapter stage run directly against the stopped head: ftlab's own check, before Ray is asked.
    with pytest.raises(distributed.DistributedTrainingError,
                       match=f"no Ray cluster at train.ray.address '{cluster.address}'"):
        run_stage(STAGES["adapter"], lab_outside_the_cluster, {"tokenized": chain["tokenized"]},
                  StageContext(Settings.from_env(), adapter_run(lab_outside_the_cluster.name, tmp_path)))
