"""Evaluation and data plots written as PNG files (headless: Agg backend only)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 110
FIGSIZE = (5, 4)


def _figure(figsize=FIGSIZE):
    return plt.subplots(figsize=figsize)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def _both_classes(y_true) -> bool:
    return np.unique(np.asarray(y_true).astype(int)).size == 2


def confusion_matrix_png(cm: list[list[int]], labels: list[str], path, title: str = "Confusion matrix") -> Path:
    """Heatmap of counts (rows = true, cols = predicted), each cell annotated."""
    counts = np.asarray(cm, dtype=int)
    fig, ax = _figure()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels=labels, rotation=45 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    ax.set_yticks(ticks, labels=labels)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    # White text on dark cells, black on light ones.
    cutoff = counts.max() / 2 if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > cutoff else "black")
    return _save(fig, path)


def _pr_curve(ax, y_true, scores, name: str, **style) -> None:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y_true, scores)
    ap = average_precision_score(y_true, scores)
    ax.step(recall, precision, where="post", label=f"{name} (AP={ap:.3f})", **style)


def _threshold_point(y_true, scores, threshold: float) -> tuple[float, float]:
    """(recall, precision) of the rule `scores >= threshold`."""
    y = np.asarray(y_true).astype(int) == 1
    pred = np.asarray(scores) >= threshold
    tp = int(np.sum(pred & y))
    precision = tp / int(pred.sum()) if pred.any() else 0.0
    recall = tp / int(y.sum()) if y.any() else 0.0
    return recall, precision


def pr_curve_png(
    y_true, scores, path, threshold: float | None = None, baseline: dict[str, tuple] | None = None
) -> Path:
    """Precision-recall curve of the positive class; optional threshold marker and baseline curves."""
    fig, ax = _figure()
    if _both_classes(y_true):
        _pr_curve(ax, y_true, scores, "model", linewidth=2)
        for name, (b_true, b_scores) in (baseline or {}).items():
            if _both_classes(b_true):
                _pr_curve(ax, b_true, b_scores, name, linestyle="--")
        if threshold is not None:
            recall, precision = _threshold_point(y_true, scores, threshold)
            ax.plot(recall, precision, "o", color="red", markersize=8, label=f"threshold={threshold:.3f}")
        ax.legend(loc="lower left", fontsize="small")
    else:
        _note(ax, "PR curve needs both classes")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="Recall", ylabel="Precision", title="Precision-recall curve")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _roc_curve(ax, y_true, scores, name: str, **style) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y_true, scores)
    auc = roc_auc_score(y_true, scores)
    ax.plot(fpr, tpr, label=f"{name} (AUC={auc:.3f})", **style)


def roc_curve_png(y_true, scores, path, baseline: dict[str, tuple] | None = None) -> Path:
    """ROC curve of the positive class with AUC in the legend and the chance diagonal."""
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray", label="chance")
    if _both_classes(y_true):
        _roc_curve(ax, y_true, scores, "model", linewidth=2)
        for name, (b_true, b_scores) in (baseline or {}).items():
            if _both_classes(b_true):
                _roc_curve(ax, b_true, b_scores, name, linestyle="--")
    else:
        _note(ax, "ROC curve needs both classes")
    ax.legend(loc="lower right", fontsize="small")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="False positive rate", ylabel="True positive rate", title="ROC curve")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(entry.get("step", i), entry[key]) for i, entry in enumerate(history) if entry.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def loss_curves_png(history: list[dict], path) -> Path:
    """Train `loss` and `eval_loss` against `step`, from an HF-Trainer-style log_history."""
    fig, ax = _figure()
    plotted = False
    for key, label, style in (("loss", "train loss", "-"), ("eval_loss", "eval loss", "o-")):
        steps, values = _series(history, key)
        if steps:
            ax.plot(steps, values, style, label=label)
            plotted = True
    if plotted:
        ax.legend()
    else:
        _note(ax, "no loss logged")
    ax.set(xlabel="Step", ylabel="Loss", title="Loss curves")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _class_order(distributions: dict[str, dict[str, int]]) -> list[str]:
    order: list[str] = []
    for counts in distributions.values():
        order.extend(c for c in counts if c not in order)
    return order


def class_distribution_png(
    distributions: dict[str, dict[str, int]], path, title: str = "Class distribution"
) -> Path:
    """Grouped bars of class shares per split, each bar annotated with its count."""
    classes = _class_order(distributions)
    splits = list(distributions)
    fig, ax = _figure(figsize=(max(FIGSIZE[0], 1.4 * len(splits) + 1), FIGSIZE[1]))
    x = np.arange(len(splits))
    width = 0.8 / max(len(classes), 1)
    for k, cls in enumerate(classes):
        counts = np.array([distributions[s].get(cls, 0) for s in splits], dtype=float)
        totals = np.array([max(sum(distributions[s].values()), 1) for s in splits], dtype=float)
        bars = ax.bar(x + (k - (len(classes) - 1) / 2) * width, counts / totals, width, label=cls)
        ax.bar_label(bars, labels=[f"{int(c)}" for c in counts], fontsize="x-small", padding=1)
    ax.set_xticks(x, labels=splits, rotation=15 if len(splits) > 3 else 0)
    ax.set(ylim=(0, 1.12), xlabel="Split", ylabel="Share of rows", title=title)
    if classes:
        ax.legend(fontsize="small")
    else:
        _note(ax, "no data")
    return _save(fig, path)


def token_lengths_png(lengths: Sequence[int], max_length: int, path) -> Path:
    """Histogram of token counts with a line at `max_length`; the legend gives the truncated share."""
    values = np.asarray(lengths, dtype=int)
    fig, ax = _figure()
    if values.size:
        ax.hist(values, bins=min(50, max(10, int(np.sqrt(values.size)))), color="tab:blue", alpha=0.8)
    else:
        _note(ax, "no lengths")
    truncated = float(np.mean(values > max_length)) if values.size else 0.0
    ax.axvline(max_length, color="red", linestyle="--", label=f"max_length={max_length} ({truncated:.1%} truncated)")
    ax.legend(fontsize="small")
    ax.set(xlabel="Tokens per example", ylabel="Examples", title="Token lengths")
    return _save(fig, path)


def markdown_image(path: Path, alt: str) -> str:
    """Markdown embedding the PNG inline as a base64 data URI (rendered by the Dagster UI)."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"
