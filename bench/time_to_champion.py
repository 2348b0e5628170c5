"""Time to the first champion: `ftlab run <lab>` from a fresh FTLAB_HOME with the venv present, as a new user's
`make demo` does, repeated; the median, min and max wall time, each stage's median, and the champion's test metric.

The model cache (converted offline models) is shared, as it is across a user's clones. Every run starts from an
empty home: no cached stage, no MLflow store, no champion.
`--seeds 42,7,1234` runs once per training seed instead: a single seed's test F1 is one draw (on sms_spam one message
of 131 test spam is 0.004 of F1), so the quality is the median over seeds; the time is the same either way.
Each run also records the validation metric, which is what a setting is chosen by (`--set` measures one).
Writes bench/results/time_to_champion.json (`--fp32`: time_to_champion_fp32.json; `--set`: demo_settings/<changes>.json,
which bench/summarize.py tabulates).

    python bench/time_to_champion.py [--lab sms_spam] [--repeats 3 | --seeds 42,7,1234] [--fp32] [--quick]
                                     [--set train.base_dropout=0 ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from common import (  # noqa: E402
    lab_env,
    labs_dir,
    parse_sets,
    save,
    timed_output,
    use_quick_labs,
    write_lab,
)
from quality import binary_scores, latest, machine  # noqa: E402

RESULTS = REPO / "bench" / "results" / "time_to_champion.json"
STAGE_LINE = re.compile(r"^\s+(\w+)\s+([\d.]+) s$")


def stage_times(stdout: str) -> dict[str, float]:
    """The `stage times:` block `ftlab run` prints last (one line per stage, then the total)."""
    block = stdout.split("stage times:", 1)[-1].splitlines()
    found = {m.group(1): float(m.group(2)) for m in map(STAGE_LINE.match, block) if m}
    found.pop("total", None)
    return found


def validation_metrics(home: Path, lab: str) -> dict[str, float]:
    """The fine-tuned model's primary metric and average precision on the validation split: what a lab's settings
    are chosen by (AP needs no threshold, so it moves less with one message than F1 does)."""
    from ftlab_pipelines.core.stages.results import Evaluation

    evaluation = Evaluation.read(latest(home, lab, "evaluation", "result.json").parent)
    validation = evaluation.metrics["fine_tuned"]["validation"]
    names = dict.fromkeys([evaluation.primary_metric, "average_precision"])
    return {f"validation_{name}": round(validation[name], 4) for name in names if name in validation}


def score_figures(home: Path, lab_file: Path) -> dict[str, float]:
    """A binary lab's figures from the evaluation's predictions.parquet: validation log loss (threshold-free, like
    AP, to choose settings by) and `oracle_test_f1`, the test F1 at the best threshold in hindsight. No threshold
    tuned on validation can beat the oracle, so it tells a weak model from an unlucky threshold: a diagnostic,
    never a figure to choose by."""
    from sklearn.metrics import log_loss

    from ftlab_pipelines.core.config.loading import load_lab
    from ftlab_pipelines.core.evaluation.metrics import tune_threshold

    lab = load_lab(lab_file, REPO / "data_contracts")
    if not lab.is_binary:
        return {}
    scored = binary_scores(home, lab.name, lab.source.label_column, lab.positive_label)
    # plain max F1 on test itself: the midpoint threshold it returns keeps the best cut's decisions on these rows
    oracle = tune_threshold(*scored["test"], tie_errors=0)["f1"]
    validation_loss = log_loss(*scored["validation"], labels=[False, True])
    return {"validation_log_loss": round(validation_loss, 4), "oracle_test_f1": round(float(oracle), 4)}


def one_run(lab: str, root: Path, fp32: bool = False, seed: int | None = None,
            changes: dict[str, dict] | None = None) -> dict:
    # --fp32: the lab with train.bf16 off, which training and evaluation both follow: nothing is autocast, as on
    # a CPU without native bf16
    overrides = {"bf16": "off"} if fp32 else {}
    if seed is not None:
        overrides["seed"] = seed
    labs = write_lab(root, lab, changes=changes, **overrides) if overrides or changes else labs_dir()
    env = {**lab_env(root), "FTLAB_LABS_DIR": str(labs)}
    wall, stdout = timed_output([sys.executable, "-m", "ftlab_pipelines.cli", "run", lab], env)
    (champion,) = [e for e in json.loads((root / "home" / "registry" / f"{lab}.json").read_text()) if e["champion"]]
    metric = next(k for k in champion if k.startswith("test_"))
    return {"wall_seconds": round(wall, 1), "stages": stage_times(stdout), metric: round(champion[metric], 4),
            **validation_metrics(root / "home", lab), **score_figures(root / "home", labs / f"{lab}.yaml"),
            **({"seed": overrides["seed"]} if "seed" in overrides else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="sms_spam")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the tiny-model lab once, nothing written")
    parser.add_argument("--fp32", action="store_true",
                        help="as on a CPU without bf16: nothing autocast (writes time_to_champion_fp32.json)")
    parser.add_argument("--seeds", help="training seeds, comma-separated: one run each (instead of --repeats "
                                        "of the lab's own seed)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="SECTION.KEY=VALUE",
                        help="change the lab (train.base_dropout=0), to measure a setting before it is adopted; "
                             "the result file's name says what was changed")
    args = parser.parse_args()
    if args.quick:
        use_quick_labs()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [None] * args.repeats
    seeds = seeds[:1] if args.quick else seeds
    repeats = len(seeds)
    runs = []
    changes = parse_sets(args.set)
    for i, seed in enumerate(seeds):
        runs.append(one_run(args.lab, Path(tempfile.mkdtemp(prefix="bench-champion-")), args.fp32, seed, changes))
        print(f"run {i + 1}/{repeats}: {json.dumps(runs[-1])}", flush=True)
    walls = [r["wall_seconds"] for r in runs]
    metric = next(k for k in runs[0] if k.startswith("test_"))
    measured = [metric, *(k for k in runs[0] if k.startswith(("validation_", "oracle_")))]
    payload = {
        "benchmark": "time_to_champion", "machine": machine(), "date": dt.date.today().isoformat(),
        "command": f"python bench/time_to_champion.py --lab {args.lab} "
                   + (f"--seeds {args.seeds}" if args.seeds else f"--repeats {repeats}")
                   + (" --fp32" if args.fp32 else "") + (f" --set {' '.join(args.set)}" if args.set else ""),
        "lab": args.lab, "bf16": not args.fp32, "changes": changes,
        "median_seconds": statistics.median(walls), "min_seconds": min(walls), "max_seconds": max(walls),
        "stage_median_seconds": {s: statistics.median(r["stages"][s] for r in runs) for s in runs[0]["stages"]},
        **{name: [r[name] for r in runs] for name in measured},
        **{f"median_{name}": statistics.median(r[name] for r in runs) for name in measured},
        "runs": runs,
    }
    print(json.dumps(payload, indent=2))
    changed = "_".join(s.replace(".", "-").replace("=", "-") for s in args.set)
    name = f"demo_settings/{changed}" if changed else "time_to_champion"
    save(payload, RESULTS.parent / f"{name}{'_fp32' if args.fp32 else ''}.json", args.quick)


if __name__ == "__main__":
    main()
