"""How far does persona_chat's held-out reply loss fall? Train-set size and LoRA settings, on this CPU.

The issue's target is a test loss 40% below the base model's. This trains the persona_chat adapter with the
lab's own code (model, LoRA, TRL trainer with reply-only loss, keep_best) on:
  - the learning curve: 1/4, 1/2 and all of the train split (smaller sets get more epochs, keep_best picks
    the checkpoint of lowest validation loss), and
  - LoRA / optimiser variants on all train rows,
and measures every adapter on the lab's validation and test splits exactly as the evaluation asset does
(token-weighted NLL of reply tokens). Validation and test rows never change. A log-linear fit of test loss
against train rows says how many rows the target would need at the measured rate.

    python bench/persona_scaling.py [--model NAME_OR_DIR] [--shares 1 0.5 0.25] [--variants NAME ...] [--quick]

Writes bench/results/persona_scaling.json (persona_scaling_<model>.json with --model) after every point;
--resume continues an interrupted run from it. Without a bf16 CPU (AMX / avx512_bf16) each full-data point takes ~20 min.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, lab_env, timed, use_quick_labs, with_changes, write_lab  # noqa: E402
from quality import machine  # noqa: E402

LAB = "persona_chat"
TARGET_REDUCTION = 0.40
CURVE_EPOCHS = {1.0: 4, 0.5: 6, 0.25: 8}  # share of train rows: epochs (keep_best picks the best checkpoint)
VARIANTS = {  # name: (what it changes, overrides of the lab's peft / train sections); trained on all train rows
    "qv": ("LoRA on q_proj, v_proj only (the issue's default)", {"peft": {"target_modules": ["q_proj", "v_proj"]}}),
    "r64": ("rank 64, alpha 128", {"peft": {"r": 64, "alpha": 128}}),
    "lr2e-4": ("learning rate 2e-4, 8 epochs", {"train": {"learning_rate": 2e-4, "epochs": 8}}),
    "lr1e-3": ("learning rate 1e-3", {"train": {"learning_rate": 1e-3}}),
    "regularized": ("LoRA dropout 0.1, weight decay 0.1", {"peft": {"dropout": 0.1}, "train": {"weight_decay": 0.1}}),
}


def tokenize_lab(root: Path, model: str | None) -> Path:
    """The lab's chain up to the tokenized asset, in its own FTLAB_HOME; returns the tokenized dataset dir."""
    write_lab(root, LAB, model_name=model)
    timed([sys.executable, "-m", "ftlab_pipelines.cli", "run", LAB, "--only", "raw_dataset", "validated_dataset",
           "splits", "tokenized"], lab_env(root))
    return max((root / "home" / "artifacts" / LAB / "tokenized").glob("*/dataset"), key=os.path.getmtime)


def held_out_loss(model, tokenizer, dataset, lab) -> dict:
    from ftlab_pipelines.core.evaluation import generation
    from ftlab_pipelines.core.modeling import models

    bf16, batch = models.use_bf16(lab.train.bf16), lab.train.eval_batch_size
    return {split: generation.completion_loss(model, dataset[split], tokenizer.pad_token_id, batch, bf16)["eval_loss"]
            for split in ("validation", "test")}


def train_point(lab, tokenizer, dataset, rows: int, overrides: dict, workdir: Path) -> dict:
    """Train one adapter as the adapter asset does, on the first `rows` of the shuffled train split, and score the
    saved adapter as the evaluation asset does."""
    from datasets import DatasetDict

    from ftlab_pipelines.core.modeling import models
    from ftlab_pipelines.core.stages.generation_eval import load_fine_tuned
    from ftlab_pipelines.core.text import tokenize
    from ftlab_pipelines.core.training.recipe import TrainingJob, fit

    half_epoch = max(1, math.ceil(rows / lab.train.batch_size) // 2)
    point = with_changes(lab, peft=overrides.get("peft", {}),
                         train={"save_steps": half_epoch, **overrides.get("train", {})})
    tokenize.save_splits(DatasetDict({**dataset, "train": dataset["train"].shuffle(seed=0).select(range(rows))}),
                         workdir / "dataset")
    m = fit(TrainingJob.from_lab(point), workdir / "dataset", workdir / "checkpoints", workdir / "adapter").metrics
    loss = held_out_loss(load_fine_tuned(models.load_causal_lm(lab.model), workdir / "adapter"), tokenizer, dataset,
                         lab)
    return {"train_rows": rows, "epochs": point.train.epochs, "learning_rate": point.train.learning_rate,
            "train_steps": int(m["train_steps"]), "best_step": m.get("best_step"),
            "validation_loss": loss["validation"], "test_loss": loss["test"],
            "train_loss": round(m["train_loss"], 4), "train_seconds": m["train_seconds"],
            "trainable_params": int(m["trainable_params"])}


def rows_for_target(points: list[dict], target: float) -> dict:
    """Least-squares test loss = a + b * log2(rows) over the learning curve, solved for the target loss."""
    x = np.log2([p["train_rows"] for p in points])
    y = np.array([p["test_loss"] for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    fit = {"loss_change_per_doubling": round(float(slope), 4)}
    if slope < 0:
        fit["train_rows_for_target"] = int(round(2 ** ((target - intercept) / slope)))
    return fit


def earlier_points(out: Path, result: dict) -> dict[str, dict]:
    """Points of an earlier run of the same model, data and base loss (to resume after an interruption)."""
    if not out.is_file():
        return {}
    earlier = json.loads(out.read_text())
    if any(earlier.get(k) != result[k] for k in ("model", "rows", "base")):
        print(f"{out.name} is from another model, data or base loss: starting over", flush=True)
        return {}
    return {**{f"curve {p['train_rows']}": p for p in earlier["learning_curve"]}, **earlier["variants"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="another base model (offline alias or a local directory) for the same data")
    parser.add_argument("--shares", nargs="+", type=float, default=list(CURVE_EPOCHS), choices=list(CURVE_EPOCHS),
                        help="learning-curve points, as shares of the train split (all rows first: the lab itself)")
    parser.add_argument("--variants", nargs="*", default=[], choices=list(VARIANTS), metavar="NAME",
                        help="LoRA / optimiser variants trained on all rows after the curve: "
                             + "; ".join(f"{k}: {d}" for k, (d, _) in VARIANTS.items()))
    parser.add_argument("--resume", action="store_true",
                        help="keep the points already in the results file (same model, rows and base loss)")
    parser.add_argument("--quick", action="store_true", help="2 steps on 16 rows of a tiny model: proves the script works (CI smoke)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-persona-scaling-") as tmp:  # datasets, checkpoints, adapters
        if args.quick and not args.model:
            use_quick_labs(Path(tmp) / "quick")
        run(args, Path(tmp))


def run(args: argparse.Namespace, root: Path) -> None:
    """Tokenize the lab under `root`, score the base model, then train and score every planned point."""
    from ftlab_pipelines.core.config.loading import load_lab
    from ftlab_pipelines.core.modeling import models
    from ftlab_pipelines.core.text.tokenize import load_tokenized

    dataset = load_tokenized(tokenize_lab(root, args.model))
    lab = load_lab(root / "labs" / f"{LAB}.yaml")
    tokenizer = models.load_tokenizer(lab.model)
    base = held_out_loss(models.load_causal_lm(lab.model), tokenizer, dataset, lab)
    target = round(base["test"] * (1 - TARGET_REDUCTION), 4)
    print(f"base model: {base}; target test loss {target}", flush=True)

    full = len(dataset["train"])
    curve_plan = [(16, {"train": {"max_steps": 2}})] if args.quick else [
        (round(full * share), {"train": {"epochs": CURVE_EPOCHS[share]}}) for share in args.shares]
    variants = {} if args.quick else {VARIANTS[k][0]: VARIANTS[k][1] for k in args.variants}
    suffix = "" if not args.model else "_" + re.sub(r"[^a-z0-9]+", "_", Path(args.model).name.lower()).strip("_")
    out = REPO / "bench" / "results" / f"persona_scaling{suffix}.json"
    command = ("python bench/persona_scaling.py" + (f" --model {args.model}" if args.model else "")
               + (f" --shares {' '.join(map(str, args.shares))}" if args.shares != list(CURVE_EPOCHS) else "")
               + (f" --variants {' '.join(args.variants)}" if args.variants else ""))
    result = {
        "benchmark": "persona_scaling",
        "machine": machine(),
        "date": dt.date.today().isoformat(),
        "command": command,
        "model": lab.model.name,
        "rows": {split: len(dataset[split]) for split in ("train", "validation", "test")},
        "base": {"validation_loss": base["validation"], "test_loss": base["test"]},
        "target": {"test_loss_reduction": TARGET_REDUCTION, "test_loss": target},
        "learning_curve": [],
        "variants": {},
    }

    done = earlier_points(out, result) if args.resume else {}

    def write() -> None:
        if len(result["learning_curve"]) >= 2:
            result["fit"] = rows_for_target(result["learning_curve"], target)
        if not args.quick:
            out.write_text(json.dumps(result, indent=2) + "\n")

    def measure(key: str, rows: int, overrides: dict, workdir: Path) -> dict:
        if key in done:
            print(f"{key}: kept from {out.name}", flush=True)
            return done[key]
        point = train_point(lab, tokenizer, dataset, rows, overrides, workdir)
        point["test_loss_reduction"] = round(1 - point["test_loss"] / base["test"], 4)
        print(key, json.dumps(point), flush=True)
        return point

    for i, (rows, overrides) in enumerate(curve_plan):
        result["learning_curve"].append(measure(f"curve {rows}", rows, overrides, root / f"curve-{i}"))
        write()
    for i, (name, overrides) in enumerate(variants.items()):
        result["variants"][name] = measure(name, full, overrides, root / f"variant-{i}")
        write()
    print("quick run: nothing written" if args.quick else f"wrote {out}")


if __name__ == "__main__":
    main()
