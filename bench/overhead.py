"""Orchestration overhead: a lab materialized through Dagster with MLflow tracking vs the same core stage
functions called in sequence from a plain script (no Dagster, no MLflow), each a fresh process and home.

The plain script writes the same artifacts (datasets, adapter, evaluation, release directory); it skips
only what needs a tracking store (MLflow runs and the model registry). Medians over --repeats pairs.
Writes bench/results/overhead.json.

    python bench/overhead.py [--lab sms_spam] [--epochs 2] [--repeats 3] [--quick]
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
from common import REPO, ftlab_run, lab_env, save, timed, use_quick_labs, write_lab  # noqa: E402
from quality import machine  # noqa: E402

RESULTS = REPO / "bench" / "results" / "overhead.json"


class NoTracking:
    """Stands in for the MLflow AssetRun: the stages' logging calls do nothing."""

    run_id = "plain"
    client = None

    def __init__(self, scratch: Path):
        self.scratch = scratch

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def plain_pipeline(lab_name: str) -> None:
    """The chain of stages, in order, through the same stage runner the assets use, with no Dagster or MLflow."""
    from ftlab_pipelines.core import artifacts
    from ftlab_pipelines.core.config.loading import load_labs
    from ftlab_pipelines.core.config.settings import Settings
    from ftlab_pipelines.core.modeling import models
    from ftlab_pipelines.core.release import release_dir
    from ftlab_pipelines.core.stages.pipeline import stage_for
    from ftlab_pipelines.core.stages.runner import StageContext, run_stage

    settings = Settings.from_env()
    lab = load_labs(settings=settings)[lab_name]
    ctx = StageContext(settings, NoTracking(settings.home))
    results = {}
    for name in ("raw_dataset", "validated_dataset", "splits", "tokenized", "adapter", "evaluation"):
        results[name] = run_stage(stage_for(lab, name), lab, results, ctx).result
    release = artifacts.stage_dir(settings, lab.name, "published_adapter", "plain")
    with artifacts.atomic_dir(release) as tmp:
        release_dir.write_release_dir(lab, results["adapter"].path, results["evaluation"],
                                      models.load_tokenizer(lab.model), tmp, results["tokenized"].render)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="sms_spam")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few training steps once on a tiny model, nothing written")
    parser.add_argument("--plain", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain_pipeline(args.plain)
        return
    overrides = {"max_steps": 3, "save_steps": 3} if args.quick else {"epochs": args.epochs}
    if args.quick:
        use_quick_labs()
    pairs = []
    for _ in range(1 if args.quick else args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as a, tempfile.TemporaryDirectory() as b:
            write_lab(Path(a), args.lab, **overrides)
            write_lab(Path(b), args.lab, **overrides)
            dagster = ftlab_run(args.lab, Path(a))
            script = timed([sys.executable, __file__, "--plain", args.lab], lab_env(Path(b)))
        pairs.append({"dagster_seconds": round(dagster, 1), "script_seconds": round(script, 1)})
        print(pairs[-1], flush=True)
    dagster = statistics.median(p["dagster_seconds"] for p in pairs)
    script = statistics.median(p["script_seconds"] for p in pairs)
    payload = {"benchmark": "overhead", "machine": machine(), "date": dt.date.today().isoformat(),
               "command": "python bench/overhead.py", "lab": args.lab, "train_overrides": overrides,
               "script_seconds": script, "dagster_seconds": dagster,
               "overhead_fraction": round((dagster - script) / script, 4), "runs": pairs}
    print(json.dumps(payload, indent=1))
    save(payload, RESULTS, args.quick)


if __name__ == "__main__":
    main()
