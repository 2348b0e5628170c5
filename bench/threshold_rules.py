"""Threshold rules of a binary lab compared on validation alone: each finished run's validation split is cut in two
halves (stratified) many times; a rule tunes its threshold on one half and is scored by F1 on the other. The mean
over cuts and runs says which rule generalizes best, without touching test. Reads the evaluation's
predictions.parquet of finished homes (time_to_champion.py leaves each run's home under the temp dir).
`--test` also prints each rule's test F1, tuned on all of validation: a diagnostic, never what a rule is chosen by.
`--quick` (no homes) runs the tiny-model lab once and reads that: a smoke run whose numbers mean nothing.

    python bench/threshold_rules.py /tmp/bench-champion-*/home [--lab sms_spam] [--cuts 300] [--test] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import quick_homes  # noqa: E402
from quality import binary_scores  # noqa: E402


def tuned(**rule):
    """A rule of the evaluation's own tune_threshold (metrics.py)."""
    def threshold(positive: np.ndarray, scores: np.ndarray) -> float:
        from ftlab_pipelines.core.evaluation.metrics import tune_threshold

        return tune_threshold(positive, scores, **rule)["threshold"]
    return threshold


def flag_as_many(positive: np.ndarray, scores: np.ndarray) -> float:
    """The k-th highest score, k = the positives: no F1 curve, so no noisy argmax."""
    return float(np.sort(scores)[::-1][max(int(positive.sum()), 1) - 1])


RULES = {"fixed 0.5": tuned(mode="fixed"), "max F1": tuned(tie_errors=0),
         "max F1, ties within 1 error to 0.5": tuned(tie_errors=1),
         "max F1, ties within 2 errors to 0.5": tuned(tie_errors=2),
         "as many flagged as there are positives": flag_as_many}


def half_cuts(positive: np.ndarray, cuts: int, seed: int = 0):
    """(tune rows, score rows) pairs: half of each class's rows to tune on, the rest to score."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    for _ in range(cuts):
        tune = np.concatenate([rng.choice(pos, len(pos) // 2, replace=False),
                               rng.choice(neg, len(neg) // 2, replace=False)])
        yield tune, np.setdiff1d(np.arange(len(positive)), tune)


def cross_fitted_f1(positive: np.ndarray, scores: np.ndarray, cuts: int) -> dict[str, float]:
    from sklearn.metrics import f1_score

    found = {rule: [] for rule in RULES}
    for tune, held in half_cuts(positive, cuts):
        for rule, threshold in RULES.items():
            found[rule].append(f1_score(positive[held], scores[held] >= threshold(positive[tune], scores[tune])))
    return {rule: float(np.mean(values)) for rule, values in found.items()}


def test_f1(validation: tuple, test: tuple) -> dict[str, float]:
    from sklearn.metrics import f1_score

    return {rule: float(f1_score(test[0], test[1] >= threshold(*validation))) for rule, threshold in RULES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("homes", nargs="*", type=Path)
    parser.add_argument("--lab", default="sms_spam")
    parser.add_argument("--positive", default="spam", help="the lab's positive label")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--cuts", type=int, default=300)
    parser.add_argument("--test", action="store_true", help="also each rule's test F1 (diagnostic)")
    parser.add_argument("--quick", action="store_true", help="smoke run: the tiny-model lab once, instead of homes")
    args = parser.parse_args()
    if args.quick:
        args.homes, args.cuts, args.test = quick_homes(args.lab, 1), 3, True
    if not args.homes:
        parser.error("name the finished homes to read (or --quick)")
    per_run, on_test = [], []
    for home in args.homes:
        scored = binary_scores(home, args.lab, args.label_column, args.positive)
        per_run.append(cross_fitted_f1(*scored["validation"], args.cuts))
        print(home, {k: round(v, 4) for k, v in per_run[-1].items()}, flush=True)
        if args.test:
            on_test.append(test_f1(scored["validation"], scored["test"]))
    print(f"mean over {len(per_run)} runs of the held-out half's F1 ({args.cuts} cuts each):")
    for rule in RULES:
        values = [run[rule] for run in per_run]
        print(f"  {rule}: mean {statistics.mean(values):.4f}, median {statistics.median(values):.4f}")
    if on_test:
        print("test F1, each rule tuned on all of validation (a diagnostic, not chosen by):")
        for rule in RULES:
            values = [run[rule] for run in on_test]
            print(f"  {rule}: mean {statistics.mean(values):.4f}, median {statistics.median(values):.4f}")


if __name__ == "__main__":
    main()
