"""Scale-out: sms_spam training on 1 and 2 Ray workers against `train.num_processes: 2` on one node.

A real two-node Ray cluster on 127.0.0.1 (head and worker as separate `ray start` processes, 1 CPU each, the test
suite's tests/ray_cluster/cluster.py) inside a network namespace that has only loopback (`unshare -n`: Ray would
otherwise advertise the machine's interface address). The data stages run once; then the adapter stage runs per
variant at equal steps, per-worker batch and seed, and each adapter is scored on validation as the evaluation
stage scores it:

- `ray_1_worker`: train.ray.num_workers 1 (half the examples per step);
- `ray_2_workers`: num_workers 2, one per node (SPREAD), DDP over gloo;
- `num_processes_2`: accelerate DDP, two processes of one thread on this node.

Reported per variant: tokens/s over the training loop (steady state: `train_seconds` is the Trainer's loop), the
stage's wall seconds, the fixed start-up cost (wall minus the loop) and the validation spam F1 at the threshold
tuned there.
Writes bench/results/scale_out.json (needs root for `unshare -n`).

    python bench/scale_out.py [--steps 48] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO / "tests"), str(REPO / "tests" / "ray_cluster")]
from cluster import IN_NETNS, in_loopback_netns, netns_unavailable  # noqa: E402
from common import labs_dir, save, use_quick_labs  # noqa: E402
from quality import machine  # noqa: E402

RESULTS = REPO / "bench" / "results" / "scale_out.json"
LAB = "sms_spam"


def in_loopback_namespace(argv: list[str]) -> int:
    """Run this script again inside `unshare -n` with loopback up. Without the privilege (root or CAP_SYS_ADMIN) a
    --quick run skips, unless FTLAB_REQUIRE_RAY_NETNS=1 (CI), as the two-node tests do."""
    reason = netns_unavailable()
    if reason:
        if "--quick" in argv and os.environ.get("FTLAB_REQUIRE_RAY_NETNS") != "1":
            print(f"scale_out: skipped, {reason}")
            return 0
        raise SystemExit(reason)
    env = {**os.environ, IN_NETNS: "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.call(in_loopback_netns([sys.executable, __file__, *argv]), env=env, cwd=REPO)


def variants(cluster_address: str) -> dict[str, dict]:
    ray = {"address": cluster_address, "cpus_per_worker": 1}
    return {"ray_1_worker": {"ray": {**ray, "num_workers": 1}},
            "ray_2_workers": {"ray": {**ray, "num_workers": 2}},
            "num_processes_2": {"num_processes": 2, "num_threads": 1}}


def validation_f1(lab, settings, data: dict, adapter) -> float:
    """Spam F1 on validation at the threshold tuned there, as the evaluation stage tunes it (test is not reported)."""
    from ftlab_pipelines.core.modeling import models
    from ftlab_pipelines.core.stages.evaluation import (
        FINE_TUNED,
        collect_probabilities,
        tune_on_validation,
    )

    collected = collect_probabilities(lab, models.resolved(lab.model, settings.model_cache), data["splits"],
                                      data["tokenized"], adapter)
    tuned = tune_on_validation(lab, collected["y"]["validation"], collected["probs"][FINE_TUNED]["validation"])
    return round(tuned["f1"], 4)


def measure(steps: int, batch_size: int, quick: bool) -> dict:
    import yaml
    from cluster import TwoNodeCluster

    from ftlab_pipelines.core.config.labs import LabConfig
    from ftlab_pipelines.core.config.settings import Settings
    from ftlab_pipelines.core.stages.pipeline import STAGES
    from ftlab_pipelines.core.stages.runner import StageContext, run_stage
    from ftlab_pipelines.core.tracking import Tracker

    root = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    os.environ["FTLAB_HOME"] = str(root / "home")
    if quick:
        use_quick_labs(root / "quick")
    raw = yaml.safe_load((labs_dir() / f"{LAB}.yaml").read_text())
    raw["train"].update({"max_steps": steps, "batch_size": batch_size, "save_steps": steps, "logging_steps": 4,
                         "group_by_length": False})
    raw["eval"]["baselines"] = []  # only the fine-tuned adapter is scored
    settings = Settings.from_env()
    tracker, bench_run = Tracker(settings), f"bench-scale-out-{uuid.uuid4().hex[:8]}"

    def run(name: str, lab: LabConfig, upstream: dict):
        with tracker.asset_run(lab.name, name, bench_run, {}) as asset_run:
            return run_stage(STAGES[name], lab, upstream, StageContext(settings, asset_run)).result

    base = LabConfig.model_validate({**raw, "name": LAB})
    data = {}
    for name in ("raw_dataset", "validated_dataset", "splits", "tokenized"):
        data[name] = run(name, base, data)
    started = time.perf_counter()
    cluster = TwoNodeCluster(root / "cluster").start()
    results = {"cluster_start_seconds": round(time.perf_counter() - started, 1), "variants": {}}
    try:
        for name, train in variants(cluster.address).items():
            lab = LabConfig.model_validate({**raw, "name": LAB, "train": {**raw["train"], **train}})
            started = time.perf_counter()
            adapter = run("adapter", lab, {"tokenized": data["tokenized"]})
            wall = time.perf_counter() - started
            m = adapter.metrics
            results["variants"][name] = {
                "steps": int(m["train_steps"]), "world_size": int(m["world_size"]),
                "tokens_per_s": m["tokens_per_s"], "train_tokens": m["train_tokens"],
                "train_seconds": m["train_seconds"], "stage_seconds": round(wall, 1),
                "startup_seconds": round(wall - m["train_seconds"], 1),
                "validation_f1": validation_f1(lab, settings, data, adapter),
            }
            print(name, results["variants"][name], flush=True)
    finally:
        cluster.stop()
    ray2, ddp = results["variants"]["ray_2_workers"], results["variants"]["num_processes_2"]
    results["ray_2_workers_vs_num_processes_2"] = round(ray2["tokens_per_s"] / ddp["tokens_per_s"], 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48, help="optimizer steps of every variant")
    parser.add_argument("--batch-size", type=int, default=16, help="per-worker batch")
    parser.add_argument("--quick", action="store_true", help="tiny BERT, 8 steps, nothing written (CI smoke)")
    args = parser.parse_args()
    if os.environ.get(IN_NETNS) != "1":
        sys.exit(in_loopback_namespace(sys.argv[1:]))
    steps = 8 if args.quick else args.steps
    results = measure(steps, args.batch_size, args.quick)
    payload = {"benchmark": "scale_out", "machine": machine(), "date": dt.date.today().isoformat(),
               "command": "python bench/scale_out.py" + (f" --steps {steps}" if steps != 48 else ""),
               "lab": LAB, "model": "tiny BERT" if args.quick else "all-minilm-l6-v2", "steps": steps,
               "per_worker_batch": args.batch_size, **results}
    print(json.dumps(payload, indent=2))
    save(payload, RESULTS, args.quick)


if __name__ == "__main__":
    main()
