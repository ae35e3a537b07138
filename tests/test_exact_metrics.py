"""Exact values of the reported metrics: hand-computed cases and independent re-computations.

Every figure is compared with a value worked out here another way (by hand, scikit-learn, SciPy's
Wilson interval, or a bootstrap re-implemented from its definition), never with a range that any
proportion satisfies.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from cxr import evaluation
from cxr.thresholds import choose_threshold

# Threshold 0.5: tp = 2 (0.9, 0.8), fn = 1 (0.3), fp = 2 (0.6, 0.7), tn = 2 (0.1, 0.2). fp != fn, so a
# PPV computed over tp + fn (or an NPV over tn + fp) gives another number.
HAND_TRUE = [0, 0, 0, 0, 1, 1, 1]
HAND_SCORE = [0.6, 0.7, 0.1, 0.2, 0.9, 0.8, 0.3]


def wilson(successes: int, total: int) -> tuple[float, float]:
    interval = binomtest(successes, total).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def test_binary_metrics_hand_case_every_proportion_and_interval():
    metrics = evaluation.binary_metrics(HAND_TRUE, HAND_SCORE, 0.5, bootstrap_resamples=50)
    assert metrics["counts"] == {"tn": 2, "fp": 2, "fn": 1, "tp": 2}
    expected = {  # (successes, total) worked out by hand from the counts above
        "accuracy": (4, 7),
        "sensitivity": (2, 3),  # tp / (tp + fn)
        "specificity": (2, 4),  # tn / (tn + fp)
        "ppv": (2, 4),  # tp / (tp + fp)
        "npv": (2, 3),  # tn / (tn + fn)
    }
    for key, (successes, total) in expected.items():
        entry = metrics[key]
        assert (entry["successes"], entry["total"]) == (successes, total), key
        assert entry["value"] == pytest.approx(successes / total), key
        assert (entry["low"], entry["high"]) == pytest.approx(wilson(successes, total), abs=1e-9), key
    # F1 = 2 PPV sensitivity / (PPV + sensitivity) = 2 (1/2)(2/3) / (7/6) = 4/7.
    assert metrics["f1"] == pytest.approx(4 / 7)
    assert metrics["prior"] == pytest.approx(3 / 7) and metrics["n"] == 7


def test_binary_metrics_agree_with_scikit_learn_on_random_scores():
    generator = np.random.default_rng(11)
    labels = generator.integers(0, 2, 250)
    scores = np.clip(generator.normal(0.35 + 0.3 * labels, 0.2), 0.0, 1.0)
    threshold = 0.45
    metrics = evaluation.binary_metrics(labels, scores, threshold, bootstrap_resamples=50)
    predicted = (scores >= threshold).astype(int)
    assert metrics["ppv"]["value"] == pytest.approx(precision_score(labels, predicted))
    assert metrics["sensitivity"]["value"] == pytest.approx(recall_score(labels, predicted))
    assert metrics["npv"]["value"] == pytest.approx(precision_score(labels, predicted, pos_label=0))
    assert metrics["specificity"]["value"] == pytest.approx(recall_score(labels, predicted, pos_label=0))
    assert metrics["auc"]["value"] == pytest.approx(roc_auc_score(labels, scores))


def reference_bootstrap(labels, scores, resamples: int, seed: int) -> tuple[float, float]:
    """The percentile bootstrap written from its definition: resample images with replacement, skip
    one-class resamples, take the 2.5th and 97.5th percentiles of scikit-learn's AUC."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    generator = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        index = generator.integers(0, len(labels), len(labels))
        if labels[index].min() != labels[index].max():
            values.append(roc_auc_score(labels[index], scores[index]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def test_bootstrap_auc_interval_is_the_95_percent_percentile_interval():
    generator = np.random.default_rng(5)
    labels = np.r_[np.zeros(15, int), np.ones(10, int)]
    scores = np.clip(generator.normal(0.4 + 0.2 * labels, 0.2), 0.0, 1.0)
    expected = reference_bootstrap(labels, scores, resamples=300, seed=9)
    assert evaluation.bootstrap_auc_interval(labels, scores, resamples=300, seed=9) == pytest.approx(expected)
    # binary_metrics reports the same interval (its seed is BOOTSTRAP_SEED).
    metrics = evaluation.binary_metrics(labels, scores, 0.5, bootstrap_resamples=300)
    seeded = reference_bootstrap(labels, scores, resamples=300, seed=evaluation.BOOTSTRAP_SEED)
    assert (metrics["auc"]["low"], metrics["auc"]["high"]) == pytest.approx(seeded)
    # A 90 % interval is strictly inside: the two are told apart by these data.
    low90, high90 = evaluation.bootstrap_auc_interval(labels, scores, resamples=300, seed=9, confidence=0.90)
    assert expected[0] < low90 and high90 < expected[1]


# ------------------------------------------------------------------- threshold edges (found by mutmut)
@pytest.mark.parametrize("threshold", [True, "0.5", -0.01, 1.01, None])
def test_a_threshold_that_is_not_a_number_from_0_to_1_is_refused(threshold):
    with pytest.raises(ValueError, match="threshold must be a number from 0 to 1"):
        evaluation.confusion_counts([0, 1], [0.2, 0.8], threshold)


def test_thresholds_0_and_1_are_accepted_and_inclusive():
    # score >= threshold is pneumonia: at 0 everything is, at 1 only a score of exactly 1.
    assert evaluation.confusion_counts([0, 1, 1], [0.0, 0.5, 1.0], 0.0) == {"tn": 0, "fp": 1, "fn": 0, "tp": 2}
    assert evaluation.confusion_counts([0, 1, 1], [0.0, 0.5, 1.0], 1.0) == {"tn": 1, "fp": 0, "fn": 1, "tp": 1}


def test_choose_threshold_rules_hand_computed():
    labels, scores = [0, 0, 0, 1, 1], [0.1, 0.2, 0.6, 0.4, 0.9]
    # Youden: at 0.9 J = 1/2 - 0; at 0.6 J = 1/2 - 1/3; at 0.4 J = 1 - 1/3 = 2/3 (best); at 0.2 J = 1 - 2/3.
    assert choose_threshold(labels, scores) == 0.4  # "youden" is the default rule
    assert choose_threshold(labels, scores, "youden") == 0.4
    # Fixed: the given threshold, whatever the scores.
    assert choose_threshold(labels, scores, "fixed") == 0.5
    assert choose_threshold(labels, scores, "fixed", fixed_threshold=0.37) == 0.37
    # Sensitivity: the highest threshold keeping ceil(s x 2) pneumonia cases: 0.9 for s <= 0.5, 0.4 above.
    assert choose_threshold(labels, scores, "sensitivity", min_sensitivity=0.1) == 0.9
    assert choose_threshold(labels, scores, "sensitivity", min_sensitivity=0.5) == 0.9
    assert choose_threshold(labels, scores, "sensitivity", min_sensitivity=0.51) == 0.4
    assert choose_threshold(labels, scores, "sensitivity", min_sensitivity=1) == 0.4


def test_youden_can_choose_the_highest_score_and_works_with_one_pneumonia_case():
    # The single pneumonia case has the highest score: J = 1 there, the first (strictest) threshold.
    assert choose_threshold([0, 0, 1], [0.1, 0.2, 0.9], "youden") == 0.9
    assert choose_threshold([1, 0, 0], [0.7, 0.2, 0.1], "sensitivity", min_sensitivity=1.0) == 0.7
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1], [0.2, 0.9], "youden")
    with pytest.raises(ValueError, match="no"):
        choose_threshold([0, 0], [0.2, 0.9], "sensitivity", min_sensitivity=0.9)


@pytest.mark.parametrize("min_sensitivity", [None, True, "0.9", 0.0, -0.5, 1.5, 2.0])
def test_the_sensitivity_rule_refuses_a_minimum_outside_0_to_1(min_sensitivity):
    with pytest.raises(ValueError, match=r"min_sensitivity in \(0, 1\]"):
        choose_threshold([0, 1, 1], [0.1, 0.6, 0.9], "sensitivity", min_sensitivity=min_sensitivity)


# ---------------------------------------------------------------------- metric edges (found by mutmut)
@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.9, 0.95, 0.96, 0.99, 0.999])
def test_wilson_interval_at_any_confidence_matches_scipy(confidence):
    # Covers the three branches of the normal quantile (central, and both tails beyond 0.02425).
    for successes, total in ((7, 20), (0, 5), (30, 30), (123, 400)):
        interval = binomtest(successes, total).proportion_ci(confidence_level=confidence, method="wilson")
        assert evaluation.wilson_interval(successes, total, confidence=confidence) == pytest.approx(
            (interval.low, interval.high), abs=1e-8), (successes, total)


def test_a_proportion_of_one_image_is_defined():
    assert evaluation.proportion(1, 1) == pytest.approx(
        {"value": 1.0, "low": wilson(1, 1)[0], "high": 1.0, "successes": 1, "total": 1})
    assert evaluation.proportion(0, 0) == {"value": None, "low": None, "high": None, "successes": 0, "total": 0}


def test_tables_have_their_names_and_integer_supports():
    matrix = evaluation.confusion_matrix(HAND_TRUE, HAND_SCORE, 0.5)
    assert (matrix.index.name, matrix.columns.name) == ("true", "predicted")
    assert matrix.to_numpy().tolist() == [[2, 2], [1, 2]]
    report = evaluation.classification_report(HAND_TRUE, HAND_SCORE, 0.5)
    assert report["support"].dtype.kind == "i" and report["support"].tolist()[:2] == [4, 3]
    curve = evaluation.precision_recall_curve(HAND_TRUE, HAND_SCORE)
    assert list(curve.columns) == ["threshold", "precision", "recall"]


def test_curves_of_a_single_class_have_nan_rates_of_full_length():
    only_normal = evaluation.roc_curve([0, 0, 0], [0.2, 0.5, 0.9])
    assert len(only_normal) == 4 and only_normal["true_positive_rate"].isna().all()
    assert only_normal["false_positive_rate"].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    only_pneumonia = evaluation.roc_curve([1, 1], [0.2, 0.9])
    assert len(only_pneumonia) == 3 and only_pneumonia["false_positive_rate"].isna().all()
    recall = evaluation.precision_recall_curve([0, 0], [0.2, 0.9])["recall"]
    assert recall.dtype == np.float64 and recall.isna().all()


def test_binary_metrics_keys_and_scores_match_scikit_learn():
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss

    metrics = evaluation.binary_metrics(HAND_TRUE, HAND_SCORE, 0.5, bootstrap_resamples=20)
    assert set(metrics) == {"n", "num_pneumonia", "num_normal", "prior", "threshold", "counts", "confusion_matrix",
                            "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "auc",
                            "average_precision", "brier", "ece", "nll", "report"}
    assert metrics["average_precision"] == pytest.approx(average_precision_score(HAND_TRUE, HAND_SCORE))
    assert metrics["brier"] == pytest.approx(brier_score_loss(HAND_TRUE, HAND_SCORE))
    assert metrics["nll"] == pytest.approx(log_loss(HAND_TRUE, HAND_SCORE))
    assert metrics["confusion_matrix"] == [[2, 2], [1, 2]] and metrics["num_normal"] == 4
