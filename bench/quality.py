"""make bench-quality: run each lab in full through Dagster and record test quality.

Writes bench/results/quality.json (format: ../shared/BENCH_FORMAT.md). Each lab runs in a fresh
FTLAB_HOME so nothing is reused from an earlier run, and the wall time is the whole chain.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "quality.json"
LABS = sys.argv[1:] or ["sms_spam", "financial_sentiment", "financial_sentiment_allagree", "sms_spam_smollm2",
                        "creditcard_fraud", "persona_chat", "psychology_instruct"]
GENERATION_KEYS = ("eval_loss", "perplexity", "persona_score", "preference_accuracy", "loss_reduction")


def machine() -> str:
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    amx = " (AMX bf16)" if "amx_bf16" in flags else ""
    return f"{os.cpu_count()} cores, {cpu}{amx}, torch {torch.__version__}, {platform.python_version()}"


def latest(home: Path, lab: str, stage: str, name: str) -> Path:
    return max((home / "artifacts" / lab / stage).glob(f"*/{name}"), key=os.path.getmtime)


def predictions(home: Path, lab: str):
    """The lab's latest evaluation predictions.parquet: every validation and test row, its split, prediction and
    class probabilities."""
    import pandas as pd

    return pd.read_parquet(latest(home, lab, "evaluation", "predictions.parquet"))


def split_scores(scored, label_column: str, positive: str) -> dict:
    """{split: (is positive, positive-class score)} of a binary lab's predictions frame."""
    return {split: ((part[label_column].astype(str) == positive).to_numpy(), part[f"prob_{positive}"].to_numpy())
            for split, part in scored.groupby("split")}


def binary_scores(home: Path, lab: str, label_column: str, positive: str) -> dict:
    """split_scores of the lab's latest predictions."""
    return split_scores(predictions(home, lab), label_column, positive)


def generation_result(home: Path, lab: str, metrics: dict, rows: dict, wall: float) -> dict:
    adapter = json.loads(latest(home, lab, "adapter", "manifest.json").read_text())["metrics"]
    pick = lambda m: {k: m[k] for k in GENERATION_KEYS if m.get(k) is not None}  # noqa: E731
    return {
        "test": pick(metrics["fine_tuned"]),
        "base": pick(metrics["base_model"]),
        "rows": rows,
        "eval_tokens": metrics["fine_tuned"]["eval_tokens"],
        "train": {k: adapter[k] for k in ("train_steps", "epochs", "train_seconds", "tokens_per_s", "peak_rss_mb",
                                          "trainable_params")},
        "wall_seconds": round(wall, 1),
    }


def run_lab(lab: str) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"bench-{lab}-"))
    env = {**os.environ, "FTLAB_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ftlab_pipelines.cli", "run", lab], env=env, cwd=REPO,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{lab} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads(latest(home, lab, "evaluation", "metrics.json").read_text())
    splits = latest(home, lab, "splits", "result.json")
    import pandas as pd

    rows = {s: len(pd.read_parquet(splits.parent / f"{s}.parquet")) for s in ("train", "validation", "test")}
    if "base_model" in metrics and "eval_loss" in metrics["base_model"]:
        return generation_result(home, lab, metrics, rows, wall)
    pick = lambda m: {k: round(m[k], 4) for k in ("f1", "accuracy", "macro_f1", "precision", "recall",  # noqa: E731
                                                   "average_precision", "roc_auc") if m.get(k) is not None}
    baseline_name = next(n for n in ("hist_gradient_boosting", "tfidf_logreg", "logreg_features") if n in metrics)
    extra = {}
    from ftlab_pipelines.core.config.loading import load_lab

    threshold = load_lab(REPO / "labs" / f"{lab}.yaml").eval.threshold
    if threshold.mode == "target_recall":
        extra["target_recall"] = threshold.target_recall
        extra["test"] = {**pick(metrics["fine_tuned"]),
                         "precision_at_target_recall": round(metrics["fine_tuned"]["precision"], 4)}
    return {
        "test": pick(metrics["fine_tuned"]),
        "baseline": pick(metrics[baseline_name]),
        "baseline_name": baseline_name,
        "other_baselines": {n: pick(m) for n, m in metrics.items()
                            if n not in ("fine_tuned", "base_model", baseline_name)},
        "base": pick(metrics["base_model"]),
        "threshold": metrics["fine_tuned"].get("threshold"),
        "per_class": {label: {k: round(v, 4) for k, v in stats.items()}
                      for label, stats in metrics["fine_tuned"]["per_class"].items()},
        "baseline_per_class": {label: {k: round(v, 4) for k, v in stats.items()}
                               for label, stats in metrics[baseline_name]["per_class"].items()},
        "rows": rows,
        "wall_seconds": round(wall, 1),
        **extra,
    }


def main() -> None:
    existing = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"labs": {}}
    labs = existing.get("labs", {})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for lab in LABS:
        print(f"bench-quality: running {lab} ...", flush=True)
        # Each lab records where and when it was measured: a partly refreshed file stays honest.
        labs[lab] = {**run_lab(lab), "machine": machine(), "date": dt.date.today().isoformat()}
        print(json.dumps(labs[lab], indent=1), flush=True)
        # Written after every lab, so an interrupted run keeps the labs it finished.
        RESULTS.write_text(json.dumps({
            "benchmark": "quality", "machine": machine(), "date": dt.date.today().isoformat(),
            "command": "make bench-quality", "labs": labs,
        }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
