"""What the finished runs of one binary lab say together (one run per training seed, same splits): the test F1 that
averaging k runs' probabilities would reach, and the test rows most runs get wrong. Reads the evaluation's
predictions.parquet of finished homes (time_to_champion.py leaves each run's home under the temp dir).

    python bench/across_seeds.py /tmp/bench-champion-*/home [--lab sms_spam] [--sizes 2 3] [--quick]

An ensemble is scored as the lab would score it: its averaged validation probabilities tune the threshold with the
lab's rule (eval.threshold), and test F1 is read at that threshold. `--quick` (no homes) runs the tiny-model lab
twice and reads those: a smoke run whose numbers mean nothing.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from collections import Counter
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import labs_dir, quick_homes  # noqa: E402
from quality import predictions, split_scores  # noqa: E402
from threshold_rules import tuned  # noqa: E402


def tuned_test_f1(validation: tuple, test: tuple, threshold_rule: dict) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(test[0], test[1] >= tuned(**threshold_rule)(*validation)))


def averaged(runs: tuple[dict, ...], split: str) -> tuple:
    """(is positive, mean positive-class score) of `split` over `runs`; every run scored the same rows."""
    truth = runs[0][split][0]
    if any(not np.array_equal(run[split][0], truth) for run in runs):
        raise SystemExit(f"the runs' {split} splits differ: ensembles need runs of the same splits")
    return truth, np.mean([run[split][1] for run in runs], axis=0)


def ensemble_f1s(runs: list[dict], size: int, threshold_rule: dict) -> list[float]:
    return [tuned_test_f1(averaged(group, "validation"), averaged(group, "test"), threshold_rule)
            for group in itertools.combinations(runs, size)]


def persistent_errors(frames: list, label_column: str, text_column: str) -> Counter:
    """{(true label, text): how many runs predicted it wrong} over the test rows of the runs' predictions."""
    wrong = Counter()
    for scored in frames:
        test = scored[scored["split"] == "test"]
        for label, text in test.loc[test["prediction"].astype(str) != test[label_column].astype(str),
                                    [label_column, text_column]].itertuples(index=False):
            wrong[(str(label), str(text))] += 1
    return wrong


def main() -> None:
    from ftlab_pipelines.core.config.loading import load_lab

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("homes", nargs="*", type=Path)
    parser.add_argument("--lab", default="sms_spam")
    parser.add_argument("--sizes", nargs="+", type=int, default=[2, 3], help="ensemble sizes to score")
    parser.add_argument("--show", type=int, default=12, help="print this many of the most often wrong test rows")
    parser.add_argument("--quick", action="store_true", help="smoke run: the tiny-model lab twice, instead of homes")
    args = parser.parse_args()
    if args.quick:
        args.homes, args.sizes = quick_homes(args.lab, 2), [2]
    if not args.homes:
        parser.error("name the finished homes to read (or --quick)")
    written = args.homes[0].parent / "labs" / f"{args.lab}.yaml"  # a run with --seeds or --set wrote its lab here
    lab = load_lab(written if written.is_file() else labs_dir() / f"{args.lab}.yaml", BENCH.parent / "data_contracts")
    if not lab.is_binary or lab.eval.prevalence is not None:
        raise SystemExit(f"{args.lab}: ensembles are scored with the threshold tuned on all of validation, so the "
                         "lab must be binary and have no eval.prevalence (that tunes on part of validation)")
    rule = lab.eval.threshold.model_dump(include={"mode", "beta", "target_recall", "value", "tie_errors"})
    label, text = lab.source.label_column, lab.source.text_column
    frames = [predictions(home, args.lab) for home in args.homes]
    runs = [split_scores(frame, label, lab.positive_label) for frame in frames]
    single = [tuned_test_f1(run["validation"], run["test"], rule) for run in runs]
    print(f"{len(runs)} runs, each alone: test F1 median {statistics.median(single):.4f} "
          f"(min {min(single):.4f}, max {max(single):.4f})")
    for size in args.sizes:
        f1s = ensemble_f1s(runs, size, rule)
        print(f"mean of {size} runs' probabilities, all {len(f1s)} groups: test F1 median "
              f"{statistics.median(f1s):.4f}, mean {statistics.mean(f1s):.4f}, "
              f"share >= 0.96 {np.mean(np.asarray(f1s) >= 0.96):.2f}")
    wrong = persistent_errors(frames, label, text)
    per_label = Counter()
    for (true_label, _), count in wrong.items():
        per_label[true_label] += count
    print("test errors per run, by true label: "
          + ", ".join(f"{k} {v / len(runs):.1f}" for k, v in sorted(per_label.items())))
    print(f"the {args.show} test rows most often wrong (runs wrong / {len(runs)}):")
    for (true_label, row_text), count in wrong.most_common(args.show):
        print(f"  {count:>3}  {true_label}: {row_text[:120]!r}")


if __name__ == "__main__":
    main()
