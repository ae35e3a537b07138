"""Tests of cxr.evaluation, cxr.thresholds, cxr.run_results and cxr.calibration: hand-computed cases, and the
library-backed metrics cross-checked against hand-written references."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cxr import calibration, evaluation, reports
from cxr.run_results import write_run_results
from cxr.thresholds import choose_threshold


def random_scores(n=300, seed=0, separation=0.4):
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 2, n)
    scores = np.clip(generator.normal(0.3 + separation * labels, 0.2), 0.0, 1.0)
    return labels, scores


# ------------------------------------------------------------------------------------------ hand cases
def test_auc_hand_computed_cases():
    assert evaluation.roc_auc([0, 1], [0, 1]) == 1.0
    assert evaluation.roc_auc([0, 1], [1, 0]) == 0.0
    assert evaluation.roc_auc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts one half
    # scikit-learn's docstring example: 3 of the 4 (positive, negative) pairs are ordered right.
    assert evaluation.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert math.isnan(evaluation.roc_auc([1, 1], [0.2, 0.9]))


def test_confusion_and_report_hand_computed():
    y_true = [0, 0, 0, 1, 1, 1, 1]
    y_score = [0.1, 0.6, 0.2, 0.9, 0.4, 0.7, 0.5]
    counts = evaluation.confusion_counts(y_true, y_score, 0.5)  # >= 0.5 is pneumonia
    assert counts == {"tn": 2, "fp": 1, "fn": 1, "tp": 3}
    matrix = evaluation.confusion_matrix(y_true, y_score, 0.5)
    assert matrix.loc["normal", "pneumonia"] == 1 and matrix.loc["pneumonia", "pneumonia"] == 3
    report = evaluation.classification_report(y_true, y_score, 0.5)
    assert report.loc["pneumonia", "precision"] == pytest.approx(3 / 4)
    assert report.loc["pneumonia", "recall"] == pytest.approx(3 / 4)
    assert report.loc["normal", "precision"] == pytest.approx(2 / 3)
    assert report.loc["normal", "support"] == 3
    assert report.loc["accuracy", "f1-score"] == pytest.approx(5 / 7)


def test_wilson_interval_known_values():
    # Wilson 95 % for 8/10: (0.4902, 0.9433) (Newcombe 1998, table I style values).
    low, high = evaluation.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    low, high = evaluation.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(v) for v in evaluation.wilson_interval(0, 0))
    with pytest.raises(ValueError, match="successes"):
        evaluation.wilson_interval(11, 10)


def test_wilson_interval_other_confidence_uses_quantile():
    # 90 % needs z = 1.6449; the interval is narrower than the 95 % one.
    low90, high90 = evaluation.wilson_interval(30, 100, confidence=0.90)
    low95, high95 = evaluation.wilson_interval(30, 100)
    assert low95 < low90 < 0.3 < high90 < high95
    # By hand with z = 1.6448536 (the 95th percentile of the standard normal).
    z, p, n = 1.6448536269514722, 0.3, 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low90, high90) == pytest.approx((centre - half, centre + half), abs=1e-9)


# ---------------------------------------------------------------------- cross-checks (hand-written references)
def reference_cumulative_counts(labels, scores):
    """Descending distinct scores and the true/false positives predicted at each as the threshold."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_group = np.r_[np.diff(sorted_scores) != 0, True]
    tp = np.cumsum(sorted_labels)[last_of_group].astype(np.float64)
    fp = np.cumsum(1 - sorted_labels)[last_of_group].astype(np.float64)
    return sorted_scores[last_of_group], tp, fp


def reference_report(labels, predicted):
    """{class or average: {precision, recall, f1-score, support}} with zero_division=0."""
    def divide(numerator, denominator):
        return numerator / denominator if denominator else 0.0

    rows = {}
    for name, positive in (("normal", 0), ("pneumonia", 1)):
        tp = int(np.sum((predicted == positive) & (labels == positive)))
        fp = int(np.sum((predicted == positive) & (labels != positive)))
        fn = int(np.sum((predicted != positive) & (labels == positive)))
        precision, recall = divide(tp, tp + fp), divide(tp, tp + fn)
        rows[name] = {"precision": precision, "recall": recall,
                      "f1-score": divide(2 * precision * recall, precision + recall), "support": tp + fn}
    total = labels.shape[0]
    for average, weights in (("macro avg", (1.0, 1.0)), ("weighted avg", (rows["normal"]["support"],
                                                                           rows["pneumonia"]["support"]))):
        rows[average] = {key: divide(weights[0] * rows["normal"][key] + weights[1] * rows["pneumonia"][key],
                                     sum(weights)) for key in ("precision", "recall", "f1-score")}
        rows[average]["support"] = total
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_check_with_hand_written_references(seed):
    labels, scores = random_scores(seed=seed)
    scores = np.round(scores, 2)  # ties, to exercise the tie handling of both
    thresholds, tp, fp = reference_cumulative_counts(labels, scores)
    positives, negatives = labels.sum(), labels.shape[0] - labels.sum()
    # The AUC as the fraction of (pneumonia, normal) pairs ordered right, ties counting one half.
    difference = scores[labels == 1][:, None] - scores[labels == 0][None, :]
    pairs = (np.sum(difference > 0) + 0.5 * np.sum(difference == 0)) / (positives * negatives)
    assert evaluation.roc_auc(labels, scores) == pytest.approx(pairs, abs=1e-12)

    curve = evaluation.roc_curve(labels, scores)
    np.testing.assert_allclose(curve["false_positive_rate"], np.r_[0.0, fp / negatives])
    np.testing.assert_allclose(curve["true_positive_rate"], np.r_[0.0, tp / positives])
    np.testing.assert_allclose(curve["threshold"], np.r_[np.inf, thresholds])

    pr = evaluation.precision_recall_curve(labels, scores)
    np.testing.assert_allclose(pr["threshold"], thresholds)
    np.testing.assert_allclose(pr["precision"], tp / (tp + fp))
    np.testing.assert_allclose(pr["recall"], tp / positives)
    recall = np.r_[0.0, tp / positives]
    expected_ap = float(np.sum(np.diff(recall) * tp / (tp + fp)))
    assert evaluation.average_precision(labels, scores) == pytest.approx(expected_ap, abs=1e-12)

    expected = reference_report(labels, (scores >= 0.5).astype(int))
    report = evaluation.classification_report(labels, scores, 0.5)
    for name in ("normal", "pneumonia", "macro avg", "weighted avg"):
        for column in ("precision", "recall", "f1-score", "support"):
            assert report.loc[name, column] == pytest.approx(expected[name][column])
    assert report.loc["accuracy", "precision"] == pytest.approx(np.mean((scores >= 0.5) == labels))
    assert calibration.brier_score(labels, scores) == pytest.approx(np.mean((scores - labels) ** 2))
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    expected_nll = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    assert calibration.negative_log_likelihood(labels, scores) == pytest.approx(expected_nll, rel=1e-9)


def test_curves_without_a_class_give_nan_rates():
    curve = evaluation.roc_curve([1, 1], [0.2, 0.9])
    assert curve["false_positive_rate"].isna().all() and curve["true_positive_rate"].tolist() == [0.0, 0.5, 1.0]
    pr = evaluation.precision_recall_curve([0, 0], [0.2, 0.9])
    assert pr["recall"].isna().all() and pr["precision"].tolist() == [0.0, 0.0]
    assert math.isnan(evaluation.average_precision([0, 0], [0.2, 0.9]))


def test_bootstrap_interval_contains_auc_and_is_seeded():
    labels, scores = random_scores(n=200)
    auc = evaluation.roc_auc(labels, scores)
    low, high = evaluation.bootstrap_auc_interval(labels, scores, resamples=300)
    assert low < auc < high and high - low < 0.2
    assert evaluation.bootstrap_auc_interval(labels, scores, resamples=300) == (low, high)


# ------------------------------------------------------------------------------------------ thresholds
def test_youden_threshold_on_constructed_scores():
    # Perfectly separable: every threshold in (0.3, 0.7] gives J = 1; the highest such score is 0.7.
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    assert choose_threshold(labels, scores, "youden") == 0.7
    # One normal at 0.75 and a pneumonia at 0.6: J(0.6)=1-1/3, J(0.8)=2/3-0, J(0.75)=... pick by hand.
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.75, 0.6, 0.8, 0.9]
    # thresholds: 0.9 J=1/3, 0.8 J=2/3, 0.75 J=2/3-1/3, 0.6 J=1-1/3=2/3 -> tie of 2/3: highest (0.8) wins.
    assert choose_threshold(labels, scores, "youden") == 0.8


def test_sensitivity_threshold_on_constructed_scores():
    labels = np.array([1] * 10 + [0] * 10)
    positive_scores = np.linspace(0.95, 0.5, 10)  # 0.95, 0.90, ..., 0.50
    scores = np.concatenate([positive_scores, np.linspace(0.0, 0.45, 10)])
    # 90 % sensitivity = 9 of 10 pneumonia cases: the 9th highest pneumonia score (0.55).
    threshold = choose_threshold(labels, scores, "sensitivity", min_sensitivity=0.9)
    assert threshold == pytest.approx(0.55)
    sensitivity = evaluation.binary_metrics(labels, scores, threshold)["sensitivity"]["value"]
    assert sensitivity >= 0.9
    assert choose_threshold(labels, scores, "sensitivity", min_sensitivity=1.0) == pytest.approx(0.5)
    assert choose_threshold(labels, scores, "sensitivity", min_sensitivity=0.85) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="min_sensitivity"):
        choose_threshold(labels, scores, "sensitivity")
    assert choose_threshold(labels, scores, "fixed") == 0.5
    with pytest.raises(ValueError, match="one of"):
        choose_threshold(labels, scores, "median")


def test_youden_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1, 1], [0.2, 0.5, 0.9], "youden")


def test_bad_inputs_say_what_was_received():
    with pytest.raises(ValueError, match="same length"):
        evaluation.roc_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\].*logits"):
        evaluation.roc_auc([0, 1], [-2.0, 3.0])
    with pytest.raises(ValueError, match="only 0"):
        evaluation.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="threshold"):
        evaluation.confusion_counts([0, 1], [0.1, 0.2], 1.5)


# ----------------------------------------------------------------------------------------- calibration
def test_logits_round_trip_and_clipping():
    p = np.array([0.0, 1e-3, 0.5, 0.9, 1.0])
    z = calibration.to_logits(p)
    assert np.isfinite(z).all() and z[2] == 0.0
    np.testing.assert_allclose(calibration.sigmoid(z)[1:4], p[1:4], rtol=1e-12)
    # T = 2 halves the logit.
    np.testing.assert_allclose(calibration.apply_temperature([0.9], 2.0), calibration.sigmoid([math.log(9) / 2]))
    with pytest.raises(ValueError, match="temperature"):
        calibration.apply_temperature([0.5], 0.0)


def test_temperature_recovers_over_confidence():
    # True probabilities sigmoid(z); the "model" reports sigmoid(3 z): over-confident by T = 3.
    generator = np.random.default_rng(1)
    z = generator.normal(0, 1.5, 20000)
    labels = (generator.random(z.shape[0]) < calibration.sigmoid(z)).astype(int)
    over_confident = calibration.sigmoid(3.0 * z)
    temperature = calibration.fit_temperature(labels, over_confident)
    assert temperature == pytest.approx(3.0, rel=0.08)
    calibrated = calibration.apply_temperature(over_confident, temperature)
    before = calibration.expected_calibration_error(labels, over_confident)
    after = calibration.expected_calibration_error(labels, calibrated)
    assert before > 0.08 and after < 0.02 and after < before / 4
    assert calibration.brier_score(labels, calibrated) < calibration.brier_score(labels, over_confident)
    # Scaling never changes the ranking, so the AUC is the same.
    assert evaluation.roc_auc(labels, calibrated) == pytest.approx(evaluation.roc_auc(labels, over_confident))
    # With logits given, the same temperature comes back.
    assert calibration.fit_temperature(labels, logits=3.0 * z) == pytest.approx(temperature, rel=1e-3)


def test_temperature_below_one_for_timid_scores():
    generator = np.random.default_rng(2)
    z = generator.normal(0, 3, 5000)
    labels = (generator.random(z.shape[0]) < calibration.sigmoid(z)).astype(int)
    assert calibration.fit_temperature(labels, calibration.sigmoid(z / 2)) == pytest.approx(0.5, rel=0.1)


def test_reliability_curve_and_ece_hand_computed():
    # Bin [0.2, 0.3): scores 0.2, 0.2 with labels 0, 1 -> mean 0.2 vs 0.5; bin [0.8, 0.9): 0.8 vs 1.0.
    labels = [0, 1, 1, 1]
    scores = [0.2, 0.2, 0.8, 0.8]
    table = calibration.reliability_curve(labels, scores)
    assert table["count"].tolist() == [2, 2]
    assert table["fraction_positive"].tolist() == [0.5, 1.0]
    assert calibration.expected_calibration_error(labels, scores) == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)
    assert calibration.expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    assert calibration.reliability_curve([1], [1.0])["bin_high"].tolist() == [1.0]  # 1.0 in the last bin


# ----------------------------------------------------------------------------------------- binary_metrics
def test_binary_metrics_structure_and_values():
    labels, scores = random_scores(n=120, seed=3)
    metrics = evaluation.binary_metrics(labels, scores, 0.5, bootstrap_resamples=200)
    counts = metrics["counts"]
    assert sum(counts.values()) == 120 == metrics["n"]
    assert metrics["prior"] == pytest.approx(labels.mean())
    assert metrics["sensitivity"]["value"] == pytest.approx(counts["tp"] / (counts["tp"] + counts["fn"]))
    assert metrics["npv"]["value"] == pytest.approx(counts["tn"] / (counts["tn"] + counts["fn"]))
    from scipy.stats import binomtest

    for key, (successes, total) in {
        "accuracy": (counts["tp"] + counts["tn"], 120),
        "sensitivity": (counts["tp"], counts["tp"] + counts["fn"]),
        "specificity": (counts["tn"], counts["tn"] + counts["fp"]),
        "ppv": (counts["tp"], counts["tp"] + counts["fp"]),
        "npv": (counts["tn"], counts["tn"] + counts["fn"]),
    }.items():
        entry = metrics[key]
        wilson = binomtest(successes, total).proportion_ci(confidence_level=0.95, method="wilson")
        assert (entry["successes"], entry["total"]) == (successes, total), key
        assert (entry["low"], entry["high"]) == pytest.approx((wilson.low, wilson.high), abs=1e-9), key
    json.dumps(metrics, allow_nan=False)  # JSON-ready
    text = reports.format_metrics(metrics, title="test")
    assert "PPV" in text and f"prior {100 * labels.mean():.1f} %" in text


def test_binary_metrics_one_class_gives_none_not_crash():
    metrics = evaluation.binary_metrics([1, 1, 1], [0.9, 0.4, 0.8], 0.5, bootstrap_resamples=10)
    assert metrics["auc"]["value"] is None and metrics["specificity"]["value"] is None
    assert metrics["sensitivity"]["value"] == pytest.approx(2 / 3)
    json.dumps(metrics, allow_nan=False)


# ------------------------------------------------------------------------------------- write_run_results
def test_write_run_results_uses_validation_only(tmp_path):
    generator = np.random.default_rng(4)
    z_val = generator.normal(0, 1.5, 400)
    val_true = (generator.random(400) < calibration.sigmoid(z_val)).astype(int)
    z_test = generator.normal(0, 1.5, 300)
    test_true = (generator.random(300) < calibration.sigmoid(z_test)).astype(int)
    val_score, test_score = calibration.sigmoid(3 * z_val), calibration.sigmoid(3 * z_test)

    metrics = write_run_results(
        tmp_path, val_true=val_true, val_score=val_score, test_true=test_true, test_score=test_score
    )
    temperature = calibration.fit_temperature(val_true, val_score)
    assert metrics["temperature"] == pytest.approx(temperature)
    calibrated_val = calibration.apply_temperature(val_score, temperature)
    assert metrics["threshold"] == pytest.approx(choose_threshold(val_true, calibrated_val, "youden"))
    assert metrics["threshold_rule"] == "youden"
    assert metrics["calibration"]["test"]["ece_after"] < metrics["calibration"]["test"]["ece_before"]

    # Changing the test scores must not move the threshold or the temperature.
    other = write_run_results(
        tmp_path,
        val_true=val_true,
        val_score=val_score,
        test_true=test_true,
        test_score=np.clip(test_score * 0.5, 0, 1),
    )
    assert other["threshold"] == metrics["threshold"] and other["temperature"] == metrics["temperature"]

    stored = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("threshold", "threshold_rule", "temperature", "validation", "test"):
        assert key in stored
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions.columns[:4]) == ["split", "index", "y_true", "y_score"]
    assert (predictions["split"] == "val").sum() == 400 and (predictions["split"] == "test").sum() == 300
    np.testing.assert_allclose(predictions.loc[predictions["split"] == "val", "y_score"], calibrated_val, rtol=1e-9)
    assert (tmp_path / "model_card.md").is_file() and (tmp_path / "model_card.json").is_file()


def test_write_run_results_sensitivity_rule_and_small_splits(tmp_path):
    val_true = [0, 0, 1, 1, 1]
    val_score = [0.1, 0.6, 0.55, 0.7, 0.9]
    metrics = write_run_results(
        tmp_path,
        val_true=val_true,
        val_score=val_score,
        test_true=[0, 1],
        test_score=[0.2, 0.8],
        threshold_rule="sensitivity",
        min_sensitivity=1.0,
    )
    assert metrics["threshold_rule"] == "sensitivity" and metrics["min_sensitivity"] == 1.0
    assert metrics["validation"]["sensitivity"]["value"] == 1.0


def test_write_run_results_one_class_validation_falls_back(tmp_path):
    metrics = write_run_results(tmp_path, val_true=[1, 1], val_score=[0.7, 0.9], test_true=None, test_score=None)
    assert metrics["temperature"] == 1.0 and metrics["threshold"] == 0.5 and metrics["threshold_rule"] == "fixed"
    assert metrics["test"] is None and len(metrics["notes"]) >= 2
    assert json.loads((tmp_path / "metrics.json").read_text())["threshold"] == 0.5


def test_write_run_results_refuses_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        write_run_results(
            tmp_path / "nope", val_true=[0, 1], val_score=[0.1, 0.9], test_true=[0, 1], test_score=[0.1, 0.9]
        )
