"""Precision and AP at a natural positive rate: the formula, the weighting and the bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score

from ftlab_pipelines.core.config.labs import PrevalenceConfig
from ftlab_pipelines.core.evaluation import prevalence


def fixed(t: float):
    return lambda y, scores: t


def test_adjusted_precision_matches_a_hand_computed_case():
    # 3 of 4 positives and 1 of 10 negatives flagged; at a 50% rate: 0.375 / (0.375 + 0.05).
    sample = prevalence.Sample(tune_y=np.array([0, 1]), tune_scores=np.array([0.1, 0.9]),
                               check_positive_scores=np.array([0.9, 0.8, 0.7, 0.2]),
                               negative_scores=np.array([0.6, *[0.1] * 9]))
    point = prevalence.point_estimate(sample, 0.5, fixed(0.5))
    assert point["recall"] == pytest.approx(0.75)
    assert point["false_positive_rate"] == pytest.approx(0.1)
    assert point["precision"] == pytest.approx(0.375 / 0.425)
    # The curve's best point at recall >= 0.75 flags 0.9, 0.8, 0.7 and no negative; at recall 1 it also flags 0.6.
    assert prevalence.best_precision_at_recall(sample.check_positive_scores, sample.negative_scores, 0.5,
                                               0.75) == 1.0
    assert prevalence.best_precision_at_recall(sample.check_positive_scores, sample.negative_scores, 0.5,
                                               1.0) == pytest.approx(0.5 / 0.55)
    # The fraud lab's rate: TPR 0.9 and FPR 1% give 0.1347, far below what a 10:1 sample would show (0.9).
    pi = 492 / 284_807
    assert prevalence.adjusted_precision(0.9, 0.01, pi) == pytest.approx(0.9 * pi / (0.9 * pi + 0.01 * (1 - pi)))
    assert prevalence.adjusted_precision(0.9, 0.01, pi) == pytest.approx(0.13476, abs=1e-5)
    assert prevalence.adjusted_precision(0.0, 0.0, pi) == 0.0


def test_adjusted_ap_equals_plain_ap_when_the_sample_is_at_the_natural_rate():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 20), rng.normal(0, 1, 80)
    plain = average_precision_score(np.r_[np.ones(20), np.zeros(80)], np.r_[pos, neg])
    assert prevalence.adjusted_average_precision(pos, neg, 0.2) == pytest.approx(plain)
    # At a rarer rate the same scores have a lower AP.
    assert prevalence.adjusted_average_precision(pos, neg, 0.01) < plain - 0.2
    # Ties and bootstrap multiplicities: the same as sklearn with sample weights.
    pos, neg = np.round(pos), np.round(neg)
    counts_pos, counts_neg = rng.integers(0, 3, 20), rng.integers(0, 3, 80)
    weights = np.r_[counts_pos * 0.3 / counts_pos.sum(), counts_neg * 0.7 / counts_neg.sum()]
    keep = weights > 0
    expected = average_precision_score(np.r_[np.ones(20), np.zeros(80)][keep], np.r_[pos, neg][keep],
                                       sample_weight=weights[keep])
    assert prevalence.adjusted_average_precision(pos, neg, 0.3, counts_pos, counts_neg) == pytest.approx(expected)


def test_tune_check_split_is_disjoint_stratified_and_seeded():
    y = np.array([1] * 100 + [0] * 900)
    tune, check = prevalence.tune_check_split(y, 0.5, seed=3)
    assert set(tune).isdisjoint(check) and len(tune) + len(check) == len(y)
    assert y[check].sum() == 50 and y[tune].sum() == 50
    again = prevalence.tune_check_split(y, 0.5, seed=3)
    assert np.array_equal(again[1], check)


def true_curve(t: float, pi: float, shift: float) -> tuple[float, float]:
    """Precision and AP of binormal scores (positives N(shift, 1), negatives N(0, 1)) at rate pi."""
    tpr, fpr = norm.sf(t - shift), norm.sf(t)
    grid = np.linspace(-8, 12, 20_001)
    recall, fp = norm.sf(grid - shift), norm.sf(grid)
    precision = recall * pi / (recall * pi + fp * (1 - pi))
    ap = float(np.sum(-np.diff(recall) * precision[1:]))
    return prevalence.adjusted_precision(tpr, fpr, pi), ap


def test_bootstrap_intervals_cover_the_true_value_on_synthetic_scores():
    pi, shift, t = 0.01, 3.0, 2.5
    truth_precision, truth_ap = true_curve(t, pi, shift)
    rng = np.random.default_rng(1)
    covered = {"precision": 0, "average_precision": 0}
    trials = 60
    for trial in range(trials):
        sample = prevalence.Sample(tune_y=np.array([0, 1]), tune_scores=np.array([0.0, 1.0]),
                                   check_positive_scores=rng.normal(shift, 1, 60),
                                   negative_scores=rng.normal(0, 1, 1500))
        found = prevalence.estimate(sample, pi, fixed(t), resamples=200, seed=trial)
        for metric, truth in (("precision", truth_precision), ("average_precision", truth_ap)):
            assert found[f"{metric}_low"] <= found[metric] <= found[f"{metric}_high"]
            covered[metric] += found[f"{metric}_low"] <= truth <= found[f"{metric}_high"]
    # 95% intervals: 60 trials cover the truth about 57 times; fewer than 50 would mean the intervals are too narrow.
    assert covered["precision"] >= 50, covered
    assert covered["average_precision"] >= 50, covered
    # And they are informative, not [0, 1].
    assert found["precision_high"] - found["precision_low"] < 0.6


def test_an_interval_always_contains_its_point_estimate():
    """Every resample repeats some tune rows; this rule then sets a stricter threshold than on the sample itself,
    so every resampled precision is higher than the point estimate and a plain percentile interval would miss it."""
    def stricter_on_repeated_rows(y, scores):
        return 0.0 if len(np.unique(scores)) == len(scores) else 2.0

    rng = np.random.default_rng(0)
    sample = prevalence.Sample(tune_y=np.repeat([0, 1], 6), tune_scores=np.linspace(0, 1, 12),
                               check_positive_scores=rng.normal(3, 1, 60), negative_scores=rng.normal(0, 1, 1500))
    found = prevalence.estimate(sample, 0.01, stricter_on_repeated_rows, resamples=200)
    assert prevalence.point_estimate(sample, 0.01, stricter_on_repeated_rows)["precision"] == found["precision"]
    assert found["precision_low"] == found["precision"] < found["precision_high"]


def test_rate_may_be_written_as_the_fraction_it_comes_from():
    assert PrevalenceConfig(rate="492/284,807").rate == pytest.approx(492 / 284_807)
    assert PrevalenceConfig(rate=0.01).rate == 0.01
    with pytest.raises(ValueError, match="492/284807"):
        PrevalenceConfig(rate="492/zero")
