"""evaluation of classification labs: fine-tuned model vs base model (untrained head) vs TF-IDF+LR, threshold tuned
on validation. Generation labs are evaluated by generation_eval.py, under the same declaration."""

from __future__ import annotations

import numpy as np

from ftlab_pipelines.core import artifacts
from ftlab_pipelines.core.config.labs import ModelConfig
from ftlab_pipelines.core.evaluation import (
    baselines,
    inference,
    metrics,
    plots,
    prevalence,
)
from ftlab_pipelines.core.modeling import models
from ftlab_pipelines.core.stages import Markdown
from ftlab_pipelines.core.stages.results import Adapter, Evaluation, Splits, Tokenized
from ftlab_pipelines.core.stages.runner import Prepared, Report, StageContext, Target
from ftlab_pipelines.core.text import tokenize

FINE_TUNED = "fine_tuned"
PREDICTIONS = "predictions.parquet"


def _model_probs(model, tokenizer, dataset, lab, name: str) -> dict[str, np.ndarray]:
    bf16 = models.use_bf16(lab.train.bf16)
    return {split: inference.predict_proba(model, tokenizer, dataset[split]["input_ids"],
                                           batch_size=lab.train.eval_batch_size, bf16=bf16,
                                           desc=f"evaluate {name} on {split}")
            for split in ("validation", "test")}


def collect_probabilities(lab, model: ModelConfig, splits: Splits, tokenized: Tokenized, adapter: Adapter) -> dict:
    """Validation and test class probabilities of every model in the comparison table (`model`: resolved), with
    the labels and the split frames they were scored on."""
    dataset = tokenize.load_tokenized(tokenized.dataset_path)
    tokenizer = models.load_tokenizer(model)
    probs = {FINE_TUNED: _model_probs(models.load_adapter_classifier(adapter.path, model, lab.labels),
                                      tokenizer, dataset, lab, FINE_TUNED)}
    if "base_model" in lab.eval.baselines:
        base = models.load_classifier(model, lab.labels, seed=lab.train.seed)
        probs["base_model"] = _model_probs(base, tokenizer, dataset, lab, "base_model")
    frames = splits.frames()
    if "tfidf_logreg" in lab.eval.baselines:
        text, label = lab.source.text_column, lab.source.label_column
        ids = {name: i for i, name in enumerate(lab.labels)}
        probs["tfidf_logreg"] = baselines.tfidf_logreg(
            frames["train"][text].astype(str).tolist(), [ids[str(v)] for v in frames["train"][label]],
            {s: frames[s][text].astype(str).tolist() for s in ("validation", "test")},
            n_classes=len(lab.labels), seed=lab.split.seed,
        )
    for kind in ("logreg_features", "hist_gradient_boosting"):
        if kind in lab.eval.baselines:
            probs[kind] = _feature_baseline(kind, lab, frames)
    return {"probs": probs, "y": {s: tokenize.column_array(dataset[s], "labels") for s in ("validation", "test")},
            "frames": frames}


def feature_columns(lab, frame) -> list[str]:
    """Every numeric column but the label: the classical models see all raw features, not only the rendered."""
    return [c for c in frame.select_dtypes("number").columns if c != lab.source.label_column]


def _feature_baseline(kind: str, lab, frames: dict) -> dict[str, np.ndarray]:
    columns = feature_columns(lab, frames["train"])
    if not columns:
        raise ValueError(f"eval.baselines has {kind}, but the data has no numeric columns; remove it")
    ids = {name: i for i, name in enumerate(lab.labels)}
    y = [ids[str(v)] for v in frames["train"][lab.source.label_column]]
    return baselines.feature_baseline(kind, frames["train"][columns].to_numpy(), y,
                                      {s: frames[s][columns].to_numpy() for s in ("validation", "test")},
                                      n_classes=len(lab.labels), seed=lab.split.seed)


def tune_on_validation(lab, y_validation, probs_validation) -> dict:
    """A binary lab's decision threshold tuned on validation as eval.threshold says, with its validation
    precision, recall and F1 (`metrics.tune_threshold`)."""
    pos = lab.labels.index(lab.positive_label)
    return tune_threshold(lab, (y_validation == pos).astype(int), probs_validation[:, pos])


def tune_threshold(lab, y_positive, scores) -> dict:
    """`metrics.tune_threshold` as the lab's eval.threshold says, on 0/1 labels and positive-class scores."""
    t = lab.eval.threshold
    return metrics.tune_threshold(y_positive, scores, mode=t.mode, beta=t.beta, target_recall=t.target_recall,
                                  value=t.value, tie_errors=t.tie_errors)


def score_models(lab, probs: dict, y: dict) -> dict[str, dict]:
    """Tune each model's threshold on validation (binary labs), then measure it on test. With eval.prevalence the
    threshold is tuned on the tune part of validation, and the `adjusted_*` estimates at the natural rate are
    added (`prevalence.estimate`)."""
    pos = lab.labels.index(lab.positive_label) if lab.is_binary else None
    prevalent = lab.eval.prevalence
    tune_rows = check_rows = None
    if prevalent is not None:
        tune_rows, check_rows = prevalence.tune_check_split(y["validation"] == pos, prevalent.check_share,
                                                            lab.split.seed)
    results = {}
    for name, p in probs.items():
        threshold = None
        if pos is not None:
            rows = slice(None) if tune_rows is None else tune_rows
            threshold = tune_on_validation(lab, y["validation"][rows], p["validation"][rows])["threshold"]
        results[name] = metrics.classification_metrics(y["test"], p["test"], lab.labels, pos, threshold)
        # the same threshold on the validation rows: what settings are chosen by, never the test figures
        results[name]["validation"] = metrics.headline(
            metrics.classification_metrics(y["validation"], p["validation"], lab.labels, pos, threshold))
        if prevalent is not None:
            results[name].update(_adjusted(lab, p, y, pos, tune_rows, check_rows))
    return results


def _adjusted(lab, p: dict, y: dict, pos: int, tune_rows, check_rows) -> dict[str, float]:
    """`adjusted_<metric>` of one model: its tune-part threshold, TPR on the check positives, FPR on the test
    negatives, at eval.prevalence.rate."""
    cfg = lab.eval.prevalence
    validation_pos = y["validation"] == pos
    check_positives = check_rows[validation_pos[check_rows]]
    sample = prevalence.Sample(
        tune_y=validation_pos[tune_rows].astype(int), tune_scores=p["validation"][tune_rows, pos],
        check_positive_scores=p["validation"][check_positives, pos],
        negative_scores=p["test"][y["test"] != pos, pos])
    def tune(y_tune, scores) -> float:
        return tune_threshold(lab, y_tune, scores)["threshold"]

    t = lab.eval.threshold
    found = prevalence.estimate(sample, cfg.rate, tune, cfg.resamples, cfg.confidence, seed=lab.split.seed,
                                target_recall=t.target_recall if t.mode == "target_recall" else None)
    # Validation alone at the natural rate (its negatives are a random sample too): what a lab author may choose
    # settings by without looking at test.
    found["validation_average_precision"] = prevalence.adjusted_average_precision(
        p["validation"][validation_pos, pos], p["validation"][~validation_pos, pos], cfg.rate)
    return {f"adjusted_{k}": v for k, v in found.items()}


def write_plots(lab, probs: dict, y: dict, results: dict, out) -> dict[str, str]:
    written = {"confusion_matrix": plots.confusion_matrix_png(results[FINE_TUNED]["confusion_matrix"], lab.labels,
                                                              out / "confusion_matrix.png")}
    if lab.is_binary:
        pos = lab.labels.index(lab.positive_label)
        y_pos = (y["test"] == pos).astype(int)
        others = {n: (y_pos, p["test"][:, pos]) for n, p in probs.items() if n != FINE_TUNED}
        scores = probs[FINE_TUNED]["test"][:, pos]
        written["pr_curve"] = plots.pr_curve_png(y_pos, scores, out / "pr_curve.png",
                                                 threshold=results[FINE_TUNED]["threshold"], baseline=others)
        written["roc_curve"] = plots.roc_curve_png(y_pos, scores, out / "roc_curve.png", baseline=others)
    return {k: str(v) for k, v in written.items()}


def predictions_frame(lab, probs: dict[str, np.ndarray], frames: dict, threshold: float | None):
    """The fine-tuned model's validation and test rows as scored, for error analysis: each split's own columns,
    `split`, `prediction` (at the tuned threshold on a binary lab) and `prob_<label>` per class."""
    import pandas as pd

    pos = lab.labels.index(lab.positive_label) if lab.is_binary else None
    parts = []
    for split in ("validation", "test"):
        frame = frames[split].reset_index(drop=True)
        frame.insert(0, "split", split)
        frame["prediction"] = np.asarray(lab.labels)[metrics.predict_labels(probs[split], pos, threshold)]
        frame[[f"prob_{label}" for label in lab.labels]] = np.asarray(probs[split], dtype=float)
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def build(lab, upstream: dict, prepared: Prepared, target: Target, ctx: StageContext) -> Evaluation:
    model = models.resolved(lab.model, ctx.settings.model_cache)
    collected = collect_probabilities(lab, model, upstream["splits"], upstream["tokenized"], upstream["adapter"])
    results = score_models(lab, collected["probs"], collected["y"])
    table_rows = {**results, **{f"{name} (reported, not measured)": values
                                for name, values in lab.eval.reference.items()}}
    write_plots(lab, collected["probs"], collected["y"], results, target.tmp)
    artifacts.write_json(target.tmp / "metrics.json", results)
    predictions_frame(lab, collected["probs"][FINE_TUNED], collected["frames"],
                      results[FINE_TUNED].get("threshold")).to_parquet(target.tmp / PREDICTIONS, index=False)
    (target.tmp / "classification_report.txt").write_text(results[FINE_TUNED]["report"], encoding="utf-8")
    table = metrics.comparison_markdown(table_rows)
    if lab.eval.prevalence is not None:
        table += "\n\n" + prevalence.adjusted_markdown(results, lab.eval.prevalence, lab.eval.threshold)
    (target.tmp / "comparison.md").write_text(table, encoding="utf-8")
    fine, primary = results[FINE_TUNED], lab.eval.primary_metric
    return Evaluation(key=target.key, dir=str(target.out), metrics=results, primary_metric=primary,
                      primary_value=fine.get(primary), threshold=fine.get("threshold"))


def report(lab, upstream: dict, result: Evaluation, ctx: StageContext, reused: bool,
           prepared: Prepared) -> Report:
    out, run = result.path, ctx.run
    table = (out / "comparison.md").read_text(encoding="utf-8")
    plot_files = {png.stem: str(png) for png in sorted(out.glob("*.png"))}
    fine = result.metrics[FINE_TUNED]
    run.log_params({"eval": lab.eval.model_dump(mode="json")})
    run.log_metrics({f"test_{k}": v for k, v in metrics.headline(fine).items()})
    run.log_metrics({f"validation_{k}": v for k, v in fine.get("validation", {}).items()})
    for name, res in result.metrics.items():
        if name != FINE_TUNED:
            run.log_metrics({f"{name}_test_{k}": v for k, v in metrics.headline(res).items()})
    for name in ("metrics.json", PREDICTIONS, "classification_report.txt", "comparison.md",
                 *[f"{k}.png" for k in plot_files]):
        run.log_artifact(out / name)
    metadata = {
        f"test_{result.primary_metric}": result.primary_value,
        f"validation_{result.primary_metric}": fine.get("validation", {}).get(result.primary_metric),
        "threshold": result.threshold,
        **{f"natural_rate_{k}": fine[f"adjusted_{k}"] for k in ("precision", "recall", "average_precision")
           if f"adjusted_{k}" in fine},
        "comparison": Markdown(table),
        "classification_report": Markdown(f"```\n{fine['report']}\n```"),
        **{name: Markdown(plots.markdown_image(path, name)) for name, path in plot_files.items()},
    }
    return Report(metadata)
