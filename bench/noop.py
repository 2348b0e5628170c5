"""No-op re-materialization: `ftlab run` on a lab that is already materialized and unchanged.

The first run trains; the timed second run must find every stage's keyed result (adapter, evaluation,
release) and train nothing. Training steps of the second run are read from its MLflow adapter run (the
loss history rank 0 logs per step). Medians over --repeats re-runs. Writes bench/results/noop.json.

    python bench/noop.py [--lab sms_spam] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, ftlab_run, save, use_quick_labs, write_lab  # noqa: E402
from quality import machine  # noqa: E402

RESULTS = REPO / "bench" / "results" / "noop.json"


def training_steps_of_last_run(home: Path, lab: str) -> tuple[int, str]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"ftlab/{lab}").experiment_id
    (run,) = client.search_runs([experiment], "tags.asset = 'adapter'", order_by=["attributes.start_time DESC"],
                                max_results=1)
    return len(client.get_metric_history(run.info.run_id, "loss")), run.data.tags.get("reused", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="sms_spam")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one re-run on a tiny model, nothing written")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory(prefix="bench-noop-") as tmp:
        root = Path(tmp)
        if args.quick:
            use_quick_labs(root / "quick")
        write_lab(root, args.lab, max_steps=6, save_steps=3, logging_steps=1)
        first = ftlab_run(args.lab, root)
        first_steps, _ = training_steps_of_last_run(root / "home", args.lab)
        reruns = []
        for _ in range(repeats):
            seconds = ftlab_run(args.lab, root)
            steps, reused = training_steps_of_last_run(root / "home", args.lab)
            reruns.append({"seconds": round(seconds, 1), "training_steps": steps, "reused": reused})
            print(reruns[-1], flush=True)
    payload = {"benchmark": "noop", "machine": machine(), "date": dt.date.today().isoformat(),
               "command": "python bench/noop.py", "lab": args.lab,
               "seconds": statistics.median(r["seconds"] for r in reruns),
               "training_steps": max(r["training_steps"] for r in reruns),
               "first_run": {"seconds": round(first, 1), "logged_training_steps": first_steps}, "reruns": reruns,
               "note": "seconds: whole `ftlab run` process, Python start-up and imports included"}
    print(json.dumps(payload, indent=1))
    save(payload, RESULTS, args.quick)


if __name__ == "__main__":
    main()
