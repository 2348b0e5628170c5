"""creditcard_fraud: how much precision at recall 0.9 these rows allow, whatever the model.

Issue 22 asks the text route for precision >= 0.273 at recall >= 0.9 at the natural fraud rate. This bench asks
what any model reaches on the same splits. Strong tabular models on the 30 raw features, and logistic
regression on the 15 rendered columns as one-hot train deciles (the words the text route reads, as a bag of
words), are each measured two ways:

- as the lab measures a model (`evaluation.score_models`): threshold tuned on half of validation, recall on the
  other half's frauds, false positives on the natural-rate test's legit rows;
- the ceiling: the best precision of any threshold whose recall reaches 0.9 on *all* validation frauds, the
  threshold chosen in hindsight on those same rows (an upper bound for a tuned threshold), with a bootstrap
  95% interval over frauds and legit rows.

The data stages are the lab's own (raw, validated, splits). Nothing is trained on test. bench/summarize.py shows
the fine-tuned text route's figures from bench/results/fraud_variants.json beside them.
Writes bench/results/fraud_ceiling.json.

    python bench/fraud_ceiling.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import labs_dir, save, use_quick_labs  # noqa: E402
from fraud_variants import summary  # noqa: E402
from quality import machine  # noqa: E402

RESULTS = BENCH / "results" / "fraud_ceiling.json"
LAB = "creditcard_fraud"
TARGET_RECALL = 0.9


def tabular_models(quick: bool, seed: int) -> dict:
    """Unfitted models on the raw numeric features, strongest known kinds for this data first."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )

    from ftlab_pipelines.core.evaluation.baselines import feature_model

    trees = 50 if quick else 500
    return {
        "hist_gradient_boosting": feature_model("hist_gradient_boosting", seed),
        "hist_gradient_boosting_slow": HistGradientBoostingClassifier(learning_rate=0.05, max_iter=400,
                                                                      random_state=seed),
        "random_forest": RandomForestClassifier(trees, n_jobs=2, random_state=seed),
        "extra_trees": ExtraTreesClassifier(trees, n_jobs=2, random_state=seed),
        "logreg_features": feature_model("logreg_features", seed),
    }


def one_hot_bins(frames: dict, columns: list[str], bins: int) -> dict[str, np.ndarray]:
    """Each column as the one-hot of its train quantile bin (edges fitted as the tokenized stage fits them)."""
    from ftlab_pipelines.core.text.tabular import fit_bin_edges

    edges = fit_bin_edges(frames["train"], columns, bins)
    return {split: np.concatenate([np.eye(bins)[np.searchsorted(edges[c], frame[c].to_numpy(float), side="right")]
                                   for c in columns], axis=1)
            for split, frame in frames.items()}


def ceiling(positive_scores: np.ndarray, negative_scores: np.ndarray, prevalence: float, resamples: int,
            seed: int) -> dict:
    """Hindsight-best precision at recall >= TARGET_RECALL on all `positive_scores`, and AP, at the natural rate,
    with `prevalence.estimate`'s bootstrap intervals. Only those two are read, so its tune rows and threshold
    (required by `estimate`) are a stand-in: the positives themselves at a fixed 0.5."""
    from ftlab_pipelines.core.evaluation import prevalence as natural_rate

    sample = natural_rate.Sample(tune_y=np.ones(len(positive_scores), dtype=int), tune_scores=positive_scores,
                                 check_positive_scores=positive_scores, negative_scores=negative_scores)
    found = natural_rate.estimate(sample, prevalence, lambda y, scores: 0.5, resamples, seed=seed,
                                  target_recall=TARGET_RECALL)
    out = {}
    for metric in ("best_precision_at_recall", "average_precision"):
        out[metric] = round(found[metric], 4)
        out[f"{metric}_ci95"] = [round(found[f"{metric}_low"], 4), round(found[f"{metric}_high"], 4)]
    return {**out, "positives": found["check_positives"], "negatives": found["negatives"]}


def measure(quick: bool) -> dict:
    import yaml
    from sklearn.base import clone

    from ftlab_pipelines.core.config.labs import LabConfig
    from ftlab_pipelines.core.config.settings import Settings
    from ftlab_pipelines.core.stages.evaluation import feature_columns, score_models
    from ftlab_pipelines.core.stages.pipeline import STAGES
    from ftlab_pipelines.core.stages.runner import StageContext, run_stage
    from ftlab_pipelines.core.tracking import Tracker

    root = Path(tempfile.mkdtemp(prefix="bench-fraud-ceiling-"))
    os.environ["FTLAB_HOME"] = str(root / "home")
    if quick:
        use_quick_labs(root / "quick")
    raw = yaml.safe_load((labs_dir() / f"{LAB}.yaml").read_text())
    if quick:
        raw["eval"]["prevalence"]["resamples"] = 100
    lab = LabConfig.model_validate({**raw, "name": LAB})
    settings = Settings.from_env()
    tracker, bench_run = Tracker(settings), f"bench-fraud-ceiling-{uuid.uuid4().hex[:8]}"
    upstream: dict = {}
    for stage in ("raw_dataset", "validated_dataset", "splits"):
        with tracker.asset_run(lab.name, stage, bench_run, {}) as asset_run:
            upstream[stage] = run_stage(STAGES[stage], lab, upstream, StageContext(settings, asset_run)).result
    frames = upstream["splits"].frames()
    ids = {name: i for i, name in enumerate(lab.labels)}
    y = {split: np.array([ids[str(v)] for v in frame[lab.source.label_column]]) for split, frame in frames.items()}
    pos = ids[lab.positive_label]
    columns = feature_columns(lab, frames["train"])
    features = {split: frame[columns].to_numpy(float) for split, frame in frames.items()}
    models = tabular_models(quick, lab.split.seed)
    inputs = {name: features for name in models}
    models["logreg_rendered_deciles"] = clone(models["logreg_features"])
    inputs["logreg_rendered_deciles"] = one_hot_bins(frames, lab.render.columns, 10)

    probs, seconds = {}, {}
    for name, model in models.items():
        started = time.perf_counter()
        model.fit(inputs[name]["train"], y["train"])
        probs[name] = {s: model.predict_proba(inputs[name][s]) for s in ("validation", "test")}
        seconds[name] = round(time.perf_counter() - started, 1)
    measured = score_models(lab, probs, {s: y[s] for s in ("validation", "test")})
    resamples = lab.eval.prevalence.resamples
    results = {}
    for name, p in probs.items():
        results[name] = {
            "inputs": f"{len(lab.render.columns)} rendered columns as one-hot train deciles"
                      if name == "logreg_rendered_deciles" else f"{len(columns)} raw features",
            "as_the_lab_measures": summary(measured[name]),
            "ceiling": ceiling(p["validation"][y["validation"] == pos, pos], p["test"][y["test"] != pos, pos],
                               lab.eval.prevalence.rate, resamples, lab.split.seed),
            "fit_seconds": seconds[name],
        }
        print(name, json.dumps(results[name]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 rows, 50 trees, 100 resamples, nothing written")
    args = parser.parse_args()
    results = measure(args.quick)
    payload = {"benchmark": "fraud_ceiling", "machine": machine(), "date": dt.date.today().isoformat(),
               "command": "python bench/fraud_ceiling.py", "lab": LAB, "target_recall": TARGET_RECALL,
               "target_precision": 0.273, "models": results,
               "highest_ceiling": max(results, key=lambda m: results[m]["ceiling"]["best_precision_at_recall"])}
    print(json.dumps(payload, indent=2))
    save(payload, RESULTS, args.quick)


if __name__ == "__main__":
    main()
