import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ftlab_pipelines.core.evaluation.baselines import tfidf_logreg
from ftlab_pipelines.core.evaluation.metrics import (
    classification_metrics,
    comparison_markdown,
    headline,
    tune_threshold,
)

# Handcrafted: positives at 0.3, 0.5, 0.7, 0.8, 0.9. Stats of `scores >= t` worked out by hand:
#   t=0.3: P=5/7 R=1 F1=.833 (max F1) | t=0.5: P=.8 R=.8 | t=0.7: P=1 R=.6 (max F0.5)
# A tuned threshold is then moved halfway down to the next lower score (0.3 -> 0.25): the same
# decisions on this data, with a margin for unseen scores.
SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
Y = np.array([0, 0, 1, 0, 1, 0, 1, 1, 1])


def _stats_at(y, scores, t):
    pred = (scores >= t).astype(int)
    return (
        precision_score(y, pred, zero_division=0),
        recall_score(y, pred, zero_division=0),
        f1_score(y, pred, zero_division=0),
    )


def test_max_f1_known_answer():
    out = tune_threshold(Y, SCORES, mode="max_f1")
    assert out["threshold"] == pytest.approx(0.25)
    assert out["mode"] == "max_f1"
    assert out["precision"] == pytest.approx(5 / 7)
    assert out["recall"] == pytest.approx(1.0)
    assert out["f1"] == pytest.approx(2 * (5 / 7) / (5 / 7 + 1))


def test_max_fbeta_prefers_precision_when_beta_small():
    out = tune_threshold(Y, SCORES, mode="max_fbeta", beta=0.5)
    assert out["threshold"] == pytest.approx(0.65)
    assert out["beta"] == 0.5
    assert (out["precision"], out["recall"]) == pytest.approx((1.0, 0.6))


@pytest.mark.parametrize(
    ("target", "expected_t", "expected_p", "expected_r"),
    [
        (0.8, 0.45, 0.8, 0.8),  # recall>=.8 at t<=.5; best precision there is t=.5, margin -> .45
        (0.6, 0.65, 1.0, 0.6),
        (1.0, 0.25, 5 / 7, 1.0),
        (1.1, 0.25, 5 / 7, 1.0),  # unreachable -> max-recall threshold (highest precision among those)
    ],
)
def test_target_recall_picks_highest_precision(target, expected_t, expected_p, expected_r):
    out = tune_threshold(Y, SCORES, mode="target_recall", target_recall=target)
    assert out["threshold"] == pytest.approx(expected_t)
    assert out["target_recall"] == target
    assert (out["precision"], out["recall"]) == pytest.approx((expected_p, expected_r))


def test_tuned_threshold_keeps_decisions_but_not_on_a_score():
    out = tune_threshold(Y, SCORES, mode="max_f1")
    assert out["threshold"] not in SCORES
    assert np.array_equal(SCORES >= out["threshold"], SCORES >= 0.3)


def test_fixed_returns_value_with_its_stats():
    out = tune_threshold(Y, SCORES, mode="fixed", value=0.65)
    assert out["threshold"] == 0.65
    assert (out["precision"], out["recall"]) == pytest.approx((1.0, 0.6))


def test_unknown_mode_raises():
    with pytest.raises(ValueError):
        tune_threshold(Y, SCORES, mode="nope")


@pytest.mark.parametrize("mode", ["max_f1", "max_fbeta", "target_recall", "fixed"])
def test_reported_stats_match_thresholded_scores_with_ties(mode):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    # Coarse rounding creates many tied scores, the case where off-by-one threshold bugs show up.
    scores = np.round(np.clip(0.35 * y + rng.normal(0.35, 0.25, 300), 0, 1), 1).astype(np.float32)
    out = tune_threshold(y, scores, mode=mode, beta=2.0, target_recall=0.85)
    p, r, f = _stats_at(y, scores, out["threshold"])
    assert out["precision"] == pytest.approx(p, abs=1e-12)
    assert out["recall"] == pytest.approx(r, abs=1e-12)
    assert out["f1"] == pytest.approx(f, abs=1e-12)
    if mode == "target_recall":
        assert out["recall"] >= 0.85
        best = max(_stats_at(y, scores, t)[0] for t in np.unique(scores) if _stats_at(y, scores, t)[1] >= 0.85)
        assert out["precision"] == pytest.approx(best)
    if mode == "max_f1":
        assert out["f1"] == pytest.approx(max(_stats_at(y, scores, t)[2] for t in np.unique(scores)))


def test_tune_threshold_without_positives_falls_back_to_value():
    out = tune_threshold(np.zeros(5, int), np.linspace(0, 1, 5), mode="max_f1", value=0.4)
    assert out["threshold"] == 0.4
    assert out["recall"] == 0.0 and out["precision"] == 0.0


def _binary_probs(seed=1, n=200):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)
    return y, np.column_stack([1 - p1, p1])


def test_binary_metrics_match_sklearn():
    y, probs = _binary_probs()
    m = classification_metrics(y, probs, ["ham", "spam"], positive_index=1, threshold=0.6)
    pred = (probs[:, 1] >= 0.6).astype(int)
    assert m["n"] == 200
    assert m["threshold"] == 0.6
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, probs[:, 1]))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    assert m["per_class"]["spam"]["support"] == int(y.sum())
    assert "spam" in m["report"] and "ham" in m["report"]
    json.dumps(m)  # plain Python types only


def test_binary_positive_index_zero_and_default_threshold():
    y, probs = _binary_probs(seed=2)
    m = classification_metrics(y, probs, ["pos", "neg"], positive_index=0)
    pred_pos = probs[:, 0] >= 0.5
    assert m["threshold"] == 0.5
    assert m["f1"] == pytest.approx(f1_score(y == 0, pred_pos))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y == 0, probs[:, 0]))


def test_three_class_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, probs, ["a", "b", "c"], threshold=0.99)  # threshold ignored
    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["f1"] == m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["precision"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["recall"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["confusion_matrix"] == confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    assert set(m["per_class"]) == {"a", "b", "c"}
    assert "roc_auc" not in m and "threshold" not in m
    json.dumps(m)


def test_single_class_guard_and_missing_label():
    y = np.ones(4, int)
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9], [0.3, 0.7]])
    m = classification_metrics(y, probs, ["ham", "spam"], positive_index=1)
    assert m["average_precision"] is None and m["roc_auc"] is None
    assert m["recall"] == pytest.approx(0.75)
    assert m["per_class"]["ham"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["confusion_matrix"] == [[0, 0], [1, 3]]
    assert "roc_auc" not in headline(m) and "average_precision" not in headline(m)


def test_headline_is_scalar_floats():
    y, probs = _binary_probs()
    h = headline(classification_metrics(y, probs, ["ham", "spam"], positive_index=1))
    assert set(h) == {
        "accuracy", "f1", "precision", "recall", "macro_f1", "macro_precision", "macro_recall",
        "weighted_f1", "average_precision", "roc_auc", "threshold",
    }
    assert all(type(v) is float for v in h.values())


def test_comparison_markdown():
    md = comparison_markdown({"lora": {"accuracy": 0.98765, "f1": 0.9, "macro_f1": 0.91234}, "tfidf": {"accuracy": 1}})
    lines = md.splitlines()
    assert lines[0] == "| model | accuracy | f1 | macro_f1 | precision | recall | average_precision |"
    assert lines[2] == "| lora | 0.9877 | 0.9000 | 0.9123 |  |  |  |"
    assert lines[3].startswith("| tfidf | 1.0000 |")
    assert len(lines) == 4


TRAIN = ["apple banana fruit", "banana apple salad", "fresh apple", "car truck road", "truck engine car", "fast car"]
LABELS = [0, 0, 0, 1, 1, 1]


def test_tfidf_logreg_separates_toy_set():
    out = tfidf_logreg(TRAIN, LABELS, {"test": ["apple pie", "red truck", "banana split", "car wash"]}, n_classes=2)
    probs = out["test"]
    assert probs.shape == (4, 2)
    assert np.allclose(probs.sum(1), 1.0)
    assert accuracy_score([0, 1, 0, 1], probs.argmax(1)) == 1.0


def test_tfidf_logreg_keeps_k_columns_when_class_missing():
    labels = [0, 0, 0, 2, 2, 2]  # label id 1 never seen in train
    out = tfidf_logreg(TRAIN, labels, {"validation": ["apple", "truck"], "test": []}, n_classes=3)
    assert out["validation"].shape == (2, 3)
    assert np.all(out["validation"][:, 1] == 0)
    assert list(out["validation"].argmax(1)) == [0, 2]
    assert out["test"].shape == (0, 3)


def test_tfidf_logreg_single_class_train():
    out = tfidf_logreg(TRAIN[:3], [1, 1, 1], {"test": ["anything"]}, n_classes=2)
    assert out["test"].tolist() == [[0.0, 1.0]]


def test_tie_errors_keeps_the_default_unless_tuning_clearly_wins():
    # 10 positives. At 0.5: P=9/11, R=9/10 -> F1 0.857. The best (t=0.825): P=1, R=0.9 -> F1 0.947.
    scores = np.array([0.1] * 20 + [0.6, 0.7] + [0.3] + [0.95] * 9)
    y = np.array([0] * 20 + [0, 0] + [1] + [1] * 9)
    plain = tune_threshold(y, scores, mode="max_f1")
    assert plain["f1"] == pytest.approx(18 / 19) and plain["threshold"] > 0.7
    assert tune_threshold(y, scores, mode="max_f1", tie_errors=1.0)["threshold"] == 0.5
    # 0.4 errors of slack (0.04) is not enough to call 0.857 vs 0.947 a tie.
    assert tune_threshold(y, scores, mode="max_f1", tie_errors=0.4)["threshold"] == plain["threshold"]
