"""Classical baselines: TF-IDF + logistic regression on text; logistic regression and histogram gradient
boosting on the raw numeric features of a tabular lab."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline


def build_tfidf_logreg(seed: int = 42, C: float = 10.0) -> Pipeline:
    """The unfitted baseline pipeline."""
    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
            ("clf", LogisticRegression(max_iter=2000, C=C, class_weight=None, random_state=seed)),
        ]
    )


def _full_width(partial: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Scatter probabilities for the fitted `classes` into K columns; unseen classes get 0."""
    out = np.zeros((partial.shape[0], n_classes), dtype=float)
    out[:, classes.astype(int)] = partial
    return out


def tfidf_logreg(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    predict_texts: dict[str, Sequence[str]],
    n_classes: int,
    seed: int = 42,
) -> dict[str, np.ndarray]:
    """Fit on train and return {name: (n, n_classes) probabilities} for each entry of `predict_texts`.

    Columns are in label-id order 0..n_classes-1, even when train lacks some label ids.
    """
    labels = np.asarray(train_labels).astype(int)
    if len(train_texts) != labels.shape[0]:
        raise ValueError(f"{len(train_texts)} train texts but {labels.shape[0]} labels")
    if labels.size == 0:
        raise ValueError("tfidf_logreg needs at least one training example")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"train label ids must be in [0, {n_classes}), got {labels.min()}..{labels.max()}")

    classes = np.unique(labels)
    if classes.size == 1:
        # LogisticRegression refuses a single class; the only sensible model is a constant one.
        return {name: _full_width(np.ones((len(texts), 1)), classes, n_classes) for name, texts in predict_texts.items()}

    model = build_tfidf_logreg(seed).fit(list(train_texts), labels)
    fitted = model.named_steps["clf"].classes_
    return {
        name: _full_width(model.predict_proba(list(texts)), fitted, n_classes)
        if len(texts)
        else np.zeros((0, n_classes), dtype=float)
        for name, texts in predict_texts.items()
    }


def feature_model(kind: str, seed: int = 42):
    """An unfitted model on raw numeric features: logreg_features or hist_gradient_boosting."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg_features":
        return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=5000, random_state=seed))])
    if kind == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(random_state=seed)
    raise ValueError(f"unknown feature baseline {kind!r}")


def feature_baseline(kind: str, train_x: np.ndarray, train_labels: Sequence[int], predict_x: dict[str, np.ndarray],
                     n_classes: int, seed: int = 42) -> dict[str, np.ndarray]:
    """Fit on the train split's numeric columns; {name: (n, n_classes) probabilities} in label-id order."""
    labels = np.asarray(train_labels).astype(int)
    model = feature_model(kind, seed).fit(np.asarray(train_x, dtype=float), labels)
    fitted = model.classes_ if hasattr(model, "classes_") else model.named_steps["clf"].classes_
    return {name: _full_width(model.predict_proba(np.asarray(x, dtype=float)), np.asarray(fitted), n_classes)
            for name, x in predict_x.items()}
