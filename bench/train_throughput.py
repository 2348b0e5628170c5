"""Training throughput: ftlab's training path vs the seed-style HF Trainer loop, same model, data, steps, seed.

Baseline (what the seed notebooks did): HF Trainer defaults, fp32, every row padded to max_length
(`padding="max_length"`), random batches. ftlab: `train.train_adapter` as the adapter asset runs it
(bf16 autocast where the CPU/GPU has it, dropout masks from 8-bit slices of random words on CPU, dynamic
padding to a multiple of 8, length-grouped batches for classification, and for SFT: eager attention on CPU and
the LM head on reply tokens only).
Both train the lab's model as its peft.method says (a LoRA adapter, or every weight) on the lab's tokenized
train split for the same number of optimizer steps with the same learning-rate schedule (the Trainer's default,
no warmup), each in its own process, then are scored on the validation split by the same code, in fp32 for all
of them.

Real tokens/s counts only non-pad tokens of the batches actually trained on. The host's speed drifts by 10-20%
within an hour here, so each case runs `--repeats` rounds (default 3) of every variant in turn and reports the
median with min and max; the speedup is the median of the rounds' paired ratios. MFU: the matmul FLOPs a real
token needs (4N with LoRA, 6N trained whole; see `flops_per_token`) x real tokens/s over the bf16 matmul peak
measured in the same run.
Writes bench/results/train_throughput.json.

    python bench/train_throughput.py [--cases minilm_sms_spam smollm2_psychology] [--fp32] [--levers] [--quick]
    python bench/train_throughput.py --cases smollm2_psychology --seed-check 7 1234   # metric noise, ~10 min
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import labs_dir, parse_sets, save, use_quick_labs, with_changes  # noqa: E402
from quality import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "train_throughput.json"
# case -> (lab, optimizer steps, validation rows scored); steps cover ~one epoch of MiniLM's train split
CASES = {"minilm_sms_spam": ("sms_spam", 70, None), "smollm2_psychology": ("psychology_instruct", 16, 40)}


def prepare(lab: str, home: Path) -> Path:
    """Materialize the lab's data stages once; both variants read the same tokenized Arrow set."""
    env = {**os.environ, "FTLAB_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    subprocess.run([sys.executable, "-m", "ftlab_pipelines.cli", "run", lab, "--only", "raw_dataset",
                    "validated_dataset", "splits", "tokenized"], env=env, cwd=REPO, check=True, capture_output=True)
    return next((home / "artifacts" / lab / "tokenized").glob("*/dataset"))


def pad_to_max_length(dataset, max_length: int, pad_id: int, sft: bool):
    """The seed's tokenization: every row padded to max_length (labels -100 on padding and prompt)."""
    def pad(row):
        ids = row["input_ids"][:max_length]
        n = len(ids)
        out = {"input_ids": ids + [pad_id] * (max_length - n), "attention_mask": [1] * n + [0] * (max_length - n)}
        if sft:
            mask = row["completion_mask"][:max_length]
            out["labels"] = [t if m else -100 for t, m in zip(ids, mask)] + [-100] * (max_length - n)
        return out

    keep = ["input_ids", "attention_mask"] + ([] if sft else ["labels"])
    return dataset.map(pad, remove_columns=[c for c in dataset.column_names if c not in keep])


def build_model(lab):
    """The model exactly as the adapter stage builds it (`recipe.build_model`); the seed set first for an LM's LoRA
    initialisation, as before."""
    from ftlab_pipelines.core.training import recipe

    if lab.is_generative:
        from transformers import set_seed

        set_seed(lab.train.seed)
    return recipe.build_model(recipe.TrainingJob.from_lab(lab))


def real_tokens(inputs: dict) -> int:
    """Non-pad tokens of a batch: the attention mask's ones; a packed padding-free batch has no padding."""
    return int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else int(inputs["input_ids"].numel())


def count_real_tokens(trainer, counter: dict) -> None:
    from ftlab_pipelines.core.training import train

    def on_batch(inputs):
        counter["tokens"] += real_tokens(inputs)

    train.watch_train_batches(trainer, on_batch)


def train_baseline(lab, model, tokenizer, data, steps: int, out: Path, counter: dict):
    from transformers import Trainer, TrainingArguments, default_data_collator

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=lab.train.batch_size,
                             learning_rate=lab.train.learning_rate, max_steps=steps, seed=lab.train.seed,
                             save_strategy="no", report_to="none", logging_steps=10_000, use_cpu=True,
                             disable_tqdm=True)
    train_set = pad_to_max_length(data["train"], lab.model.max_length, tokenizer.pad_token_id, lab.is_generative)
    trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=default_data_collator)
    count_real_tokens(trainer, counter)
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def train_ftlab(lab, model, tokenizer, data, steps: int, out: Path, counter: dict):
    from ftlab_pipelines.core.training import train

    # The baseline's schedule (the Trainer's default: no warmup): the comparison measures the speed levers, not
    # the lab's warmup, which alone moves 16-step SmolLM2 validation loss by 0.010 (1.2373 -> 1.2477).
    config = lab.train.model_copy(update={"max_steps": steps, "save_steps": 10_000, "keep_best": False,
                                          "logging_steps": 10_000, "warmup_ratio": 0.0})
    hook = {"on_train_batch": lambda inputs: counter.__setitem__("tokens", counter["tokens"] + real_tokens(inputs))}
    train_only = {"train": data["train"]}
    result = train.train_adapter(model, tokenizer, train_only, config, checkpoint_dir=out / "ckpt", out_dir=out,
                                 sft_max_length=lab.model.max_length if lab.is_generative else None, **hook)
    return result.metrics["train_seconds"]


def validation_metric(lab, model, tokenizer, data, rows: int | None) -> dict:
    import numpy as np

    from ftlab_pipelines.core.evaluation import generation, inference, metrics

    val = data["validation"]
    if rows:
        val = val.select(range(min(rows, len(val))))
    bf16 = False  # every variant is scored the same way, in fp32: the metric measures the trained weights
    if lab.is_generative:
        return {"eval_loss": generation.completion_loss(model, val, tokenizer.pad_token_id, bf16=bf16)["eval_loss"]}
    from sklearn.metrics import log_loss

    probs = inference.predict_proba(model, tokenizer, val["input_ids"], bf16=bf16)
    pos = lab.labels.index(lab.positive_label) if lab.is_binary else None
    labels = np.asarray(val["labels"])
    scores = metrics.classification_metrics(labels, probs, lab.labels, pos, 0.5)
    # F1 at 0.5 after a part of an epoch moves by ~0.007 with each validation message; AP and log loss, which no
    # threshold cuts, tell a real gap from seed noise with fewer seeds.
    ranking = {"average_precision": round(scores["average_precision"], 4)} if pos is not None else {}
    return {"f1": round(scores["f1"], 4), "accuracy": round(scores["accuracy"], 4), **ranking,
            "log_loss": round(float(log_loss(labels, probs, labels=list(range(len(lab.labels))))), 4)}


def load_variant_inputs(lab_name: str, data_path: str | Path, overrides: dict | None = None) -> tuple:
    """What every variant starts from: the lab (with `overrides`, as `parse_sets` gives them), its tokenizer, the
    tokenized splits and a fresh model to train (LoRA-wrapped, or whole for peft.method full)."""
    from ftlab_pipelines.core.config.loading import load_lab
    from ftlab_pipelines.core.modeling import models
    from ftlab_pipelines.core.text import tokenize

    lab = load_lab(labs_dir() / f"{lab_name}.yaml")
    if overrides:
        lab = with_changes(lab, **overrides)
    return lab, models.load_tokenizer(lab.model), tokenize.load_tokenized(data_path), build_model(lab)


def run_variant(variant: str, lab_name: str, data_path: str, steps: int, eval_rows: int | None,
                overrides: dict | None = None) -> dict:
    """In this process: build the model, train `steps` steps the `variant` way, score on validation."""
    import torch

    from ftlab_pipelines.core.modeling.device import placement

    lab, tokenizer, data, model = load_variant_inputs(lab_name, data_path, overrides)
    counter = {"tokens": 0}
    with tempfile.TemporaryDirectory() as out:
        trainer = train_baseline if variant == "baseline" else train_ftlab
        seconds = trainer(lab, model, tokenizer, data, steps, Path(out), counter)
    n_train = len(data["train"])
    return {"tokens_per_s": round(counter["tokens"] / seconds, 1), "train_seconds": round(seconds, 2),
            "real_tokens": counter["tokens"], "steps": steps, "batch_size": lab.train.batch_size,
            "seconds_per_epoch": round(seconds / (steps * lab.train.batch_size) * n_train, 1),
            "train_rows": n_train, "threads": torch.get_num_threads(),
            "bf16": variant == "ftlab" and placement(lab.train.bf16).bf16,
            "metric": validation_metric(lab, model, tokenizer, data, eval_rows)}


# variant -> train.KEY=VALUE overrides; ftlab_fp32: ftlab's path with bf16 autocast off, to separate bf16's effect
VARIANTS = {"baseline": [], "ftlab": [], "ftlab_fp32": ["train.bf16=off"]}
# `--levers`: ftlab with one speed lever switched off, to measure what each one carries on its own.
# Rejected and removed after measuring (bench/RESULTS.md): the frozen base's Linear weights held in bf16 under autocast.
LEVERS = {"without_fast_dropout": ["train.fast_dropout=false"],
          "without_fast_attention_dropout": ["train.fast_attention_dropout=false"],
          "with_lora_dropout": ["peft.dropout=0.1"]}


def measured_variants(fp32: bool) -> dict[str, list[str]]:
    """VARIANTS, without ftlab_fp32 unless `fp32`."""
    return {v: sets for v, sets in VARIANTS.items() if fp32 or v != "ftlab_fp32"}


def run_variant_process(case: str, variant: str, data: Path, steps: int, sets: list[str]) -> dict:
    """One variant in its own process (peak memory and threads are per process); returns its result."""
    lab, _, eval_rows = CASES[case]
    kind = "baseline" if variant == "baseline" else "ftlab"
    proc = subprocess.run([sys.executable, __file__, "--variant", kind, "--lab", lab, "--data", str(data),
                           "--steps", str(steps), "--eval-rows", str(eval_rows or 0), "--set", *sets],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{case} {variant} {' '.join(sets)} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(case, variant, *sets, result, flush=True)
    return result


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def flops_per_token(case: str, data: Path) -> float:
    """Matmul FLOPs one real token costs a training step: 4N with LoRA (forward 2N, activation gradients 2N; a
    frozen base gets no weight gradients), 6N when every weight trains (peft.method full: weight gradients 2N more),
    N = the Linear weights every token goes through. A classifier's pooler and head run once per row and are left
    out; an LM's head runs on reply tokens only (core/reply_loss.py) and counts by the reply share, as in
    bench/mfu.py."""
    import torch

    from ftlab_pipelines.core.config.loading import load_lab
    from ftlab_pipelines.core.modeling import models

    lab = load_lab(labs_dir() / f"{CASES[case][0]}.yaml")
    if lab.is_generative:
        from mfu import matmul_parameters, reply_share

        n, n_head = matmul_parameters()
        return 4 * (n - n_head + n_head * reply_share(data))
    model = models.load_classifier(lab.model, lab.labels)
    per_row = {"pooler", "classifier", "score"}
    return (6.0 if lab.peft.method == "full" else 4.0) * sum(m.weight.numel() for name, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and not per_row & set(name.split(".")))


def run_case(case: str, quick: bool, fp32: bool, levers: bool, repeats: int, peak: dict) -> dict:
    """`repeats` rounds; each round runs every variant once, in turn, so a slow spell of the host falls on all of
    them alike. Speed is the median over rounds (min and max beside it), the speedup the median of the rounds'
    paired ratios ftlab / baseline."""
    lab, steps, _ = CASES[case]
    steps = 2 if quick else steps
    variants = measured_variants(fp32)
    if levers:
        variants.update(LEVERS)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        data = prepare(lab, Path(tmp) / "home")
        flops = flops_per_token(case, data)
        for _ in range(repeats):
            for variant, sets in variants.items():
                runs[variant].append(run_variant_process(case, variant, data, steps, sets))
    base = runs["baseline"]
    result = {"lab": lab, "repeats": repeats, "flops_per_token": round(flops)}
    for variant, done in runs.items():
        speed = spread([r["tokens_per_s"] for r in done])
        ratios = spread([r["tokens_per_s"] / b["tokens_per_s"] for r, b in zip(done, base)])
        metrics = {k: round(statistics.median(r["metric"][k] for r in done), 4) for k in done[0]["metric"]}
        peak_used = peak["bf16"] if done[0].get("bf16") else peak["fp32"]
        result[variant] = {"tokens_per_s": speed, "speedup": ratios,
                           "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in done),
                           "metric": metrics, "mfu": round(flops * speed["median"] / 1e9 / peak_used, 4),
                           "runs": done}
    return result


def seed_check(case: str, seeds: list[int], fp32: bool) -> dict:
    """Every variant again with other seeds (initialisation, batch order, dropout masks): is a metric gap more than
    seed noise?
    Merged with the main run's seed into `runs`, with medians and paired differences. Runs already in the
    result file are reused; ftlab without bf16 runs at the new seeds only with `fp32`."""
    lab, steps, _ = CASES[case]
    previous = json.loads(RESULTS.read_text())["cases"][case]
    main_seed = str(load_lab_seed(lab))
    runs = {main_seed: {v: previous[v]["metric"] for v in VARIANTS if v in previous}}
    for seed, run in previous.get("seed_check", {}).get("runs", {}).items():
        runs.setdefault(seed, {}).update(run)
    with tempfile.TemporaryDirectory(prefix="bench-seeds-") as tmp:
        data = None
        for seed in seeds:
            run = runs.setdefault(str(seed), {})
            for variant, sets in measured_variants(fp32).items():
                if variant not in run:
                    data = data or prepare(lab, Path(tmp) / "home")
                    run[variant] = run_variant_process(case, variant, data, steps,
                                                       [*sets, f"train.seed={seed}"])["metric"]
    runs = {seed: runs[seed] for seed in (main_seed, *map(str, seeds))}
    measured = [v for v in VARIANTS if all(v in r for r in runs.values())]
    names = [m for m in previous["baseline"]["metric"] if all(m in r[v] for r in runs.values() for v in measured)]
    return {"metrics": names, "runs": runs,
            "medians": {m: {v: round(statistics.median(r[v][m] for r in runs.values()), 4) for v in measured}
                        for m in names},
            "paired_differences": {m: {v: [round(r[v][m] - r["baseline"][m], 4) for r in runs.values()]
                                       for v in measured if v != "baseline"} for m in names}}


def load_lab_seed(lab_name: str) -> int:
    from ftlab_pipelines.core.config.loading import load_lab

    return load_lab(labs_dir() / f"{lab_name}.yaml").train.seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--quick", action="store_true",
                        help="2 steps per variant on tiny models and 200 rows, nothing written (CI smoke)")
    parser.add_argument("--variant", choices=["baseline", "ftlab"], help=argparse.SUPPRESS)
    parser.add_argument("--lab", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--eval-rows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="change the lab's config (lever experiments): train.seed=7, peft.dropout=0")
    parser.add_argument("--fp32", action="store_true",
                        help="also run ftlab with bf16 autocast off (bf16's share of speed and metric; ~3 more min)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of paired runs (median, min, max)")
    parser.add_argument("--levers", action="store_true",
                        help="also ftlab with each speed lever switched off alone (LEVERS; ~1 min more a round)")
    parser.add_argument("--seed-check", type=int, nargs="+", metavar="SEED",
                        help="after a full run: baseline and ftlab of --cases again with these seeds (metric noise)")
    args = parser.parse_args()
    if args.seed_check:
        payload = json.loads(RESULTS.read_text())
        for case in args.cases:
            payload["cases"][case]["seed_check"] = seed_check(case, args.seed_check, args.fp32)
            print(json.dumps(payload["cases"][case]["seed_check"], indent=1))
        payload["seed_check_command"] = (f"python bench/train_throughput.py --cases {' '.join(args.cases)} "
                                         f"--seed-check {' '.join(map(str, args.seed_check))}"
                                         + (" --fp32" if args.fp32 else ""))
        save(payload, RESULTS, False)
        return
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.lab, args.data, args.steps, args.eval_rows or None,
                                     parse_sets(args.set))))
        return
    started = time.perf_counter()
    from mfu import matmul_gflops

    # A CPU without bf16 instructions emulates bf16 matmuls at a few GFLOP/s: the smoke run keeps them tiny.
    size, rounds = (256, 2) if args.quick else (2048, 10)
    peak = {"bf16": matmul_gflops("bfloat16", size, rounds), "fp32": matmul_gflops("float32", size, rounds)}
    if args.quick:
        use_quick_labs()
    repeats = 1 if args.quick else args.repeats
    command = "python bench/train_throughput.py" + "".join(f" {a}" for a in sys.argv[1:])
    cases = {case: {**run_case(case, args.quick, args.fp32, args.levers, repeats, peak), "command": command,
                    "date": dt.date.today().isoformat(), "peak_gflops": {k: round(v, 1) for k, v in peak.items()}}
             for case in args.cases}
    if RESULTS.is_file() and set(args.cases) != set(CASES):  # a subset re-run keeps the other cases' results
        cases = {**json.loads(RESULTS.read_text())["cases"], **cases}
    payload = {"benchmark": "train_throughput", "machine": machine(), "date": dt.date.today().isoformat(),
               "command": command,
               "peak_gflops": {k: round(v, 1) for k, v in peak.items()}, "cases": cases,
               "wall_seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps({c: {k: v for k, v in r.items() if not isinstance(v, dict) or "runs" not in v}
                      for c, r in cases.items()}, indent=1))
    save(payload, RESULTS, args.quick)


if __name__ == "__main__":
    main()
