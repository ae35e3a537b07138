"""Metrics of a labelled set's scores: confusion counts, report, ROC/PR, intervals, one summary dict.

Every function takes ``y_true`` (n,) 0/1 (0 = normal, 1 = pneumonia) and ``y_score`` (n,) P(pneumonia)
in [0, 1]; "pneumonia" is predicted when ``y_score >= threshold``. Curves, the classification report and
average precision come from scikit-learn (imported when first used); the AUC is the Mann-Whitney rank
statistic (fast enough for the bootstrap's thousand resamples); intervals are Wilson's for proportions
and a seeded percentile bootstrap for the AUC.

Related modules: ``cxr.thresholds`` chooses the decision threshold, ``cxr.run_results`` writes a run's
``metrics.json``, ``cxr.reports`` turns these dicts into text, ``cxr.calibration`` holds Brier, log-loss
and ECE.
"""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from cxr.calibration import (
    _as_labels,
    _as_scores,
    _check_same_length,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
)
from cxr.config import CLASS_NAMES

DEFAULT_THRESHOLD = 0.5  # the tutorial's (and Keras') implicit threshold
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000  # enough for a stable 95 % percentile interval; ~0.1 s for 624 images
BOOTSTRAP_SEED = 0  # the same interval every time the same scores are evaluated


def labels_and_scores(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (n,) int64 0/1, scores (n,) float64 in [0, 1])``; ``ValueError`` for other values,
    different lengths or an empty set."""
    labels, scores = _as_labels(y_true), _as_scores(y_score)
    _check_same_length(labels, scores)
    return labels, scores


def check_threshold(threshold) -> float:
    """``threshold`` as a float in [0, 1]; ``ValueError`` otherwise."""
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float, np.floating))
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise ValueError(f"threshold must be a number from 0 to 1; received {threshold!r}.")
    return float(threshold)


# ---------------------------------------------------------------------------------------------- counts
def confusion_counts(y_true, y_score, threshold: float = DEFAULT_THRESHOLD) -> dict[str, int]:
    """``{"tn", "fp", "fn", "tp"}`` with "pneumonia" predicted when ``y_score >= threshold``."""
    labels, scores = labels_and_scores(y_true, y_score)
    predicted = scores >= check_threshold(threshold)
    positive = labels == 1
    return {
        "tn": int((~predicted & ~positive).sum()),
        "fp": int((predicted & ~positive).sum()),
        "fn": int((~predicted & positive).sum()),
        "tp": int((predicted & positive).sum()),
    }


def confusion_matrix(y_true, y_score, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """2x2 counts: rows = true class, columns = predicted class, both in ``CLASS_NAMES`` order."""
    c = confusion_counts(y_true, y_score, threshold)
    return pd.DataFrame(
        [[c["tn"], c["fp"]], [c["fn"], c["tp"]]],
        index=pd.Index(CLASS_NAMES, name="true"),
        columns=pd.Index(CLASS_NAMES, name="predicted"),
    )


def classification_report(y_true, y_score, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support, plus macro and weighted averages and accuracy.

    Index: ``"normal"``, ``"pneumonia"``, ``"accuracy"``, ``"macro avg"``, ``"weighted avg"``;
    columns: ``precision``, ``recall``, ``f1-score``, ``support`` (scikit-learn's report with
    ``zero_division=0``: an undefined precision or recall reads as 0; the accuracy row repeats the
    accuracy in its three score columns).
    """
    from sklearn import metrics

    labels, scores = labels_and_scores(y_true, y_score)
    predicted = (scores >= check_threshold(threshold)).astype(np.int64)
    report = metrics.classification_report(
        labels, predicted, labels=[0, 1], target_names=list(CLASS_NAMES), output_dict=True, zero_division=0
    )
    accuracy = float(np.mean(predicted == labels))
    rows = {name: report[name] for name in CLASS_NAMES}
    rows["accuracy"] = {"precision": accuracy, "recall": accuracy, "f1-score": accuracy, "support": labels.shape[0]}
    rows["macro avg"], rows["weighted avg"] = report["macro avg"], report["weighted avg"]
    frame = pd.DataFrame.from_dict(rows, orient="index")[["precision", "recall", "f1-score", "support"]]
    frame["support"] = frame["support"].astype(int)
    return frame


# ------------------------------------------------------------------------------------------- intervals
def wilson_interval(successes: int, total: int, *, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` for a proportion ``successes / total``.

    Better than the normal approximation near 0 and 1 and for small ``total`` (it never leaves
    [0, 1]). ``total == 0`` gives ``(nan, nan)``.
    """
    if total < 0 or successes < 0 or successes > total:
        raise ValueError(f"wilson_interval needs 0 <= successes <= total; received {successes} of {total}.")
    if total == 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / total
    denominator = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # At 0 or all successes the bound is exactly 0 or 1; rounding would leave ~1e-17.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return (low, high)



def proportion(successes: int, total: int, *, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """``{"value", "low", "high", "successes", "total"}`` with a Wilson interval; ``None`` when undefined."""
    low, high = wilson_interval(successes, total, confidence=confidence)
    defined = total > 0
    return {
        "value": successes / total if defined else None,
        "low": low if defined else None,
        "high": high if defined else None,
        "successes": int(successes),
        "total": int(total),
    }


# ----------------------------------------------------------------------------------------- ROC and PR
def _average_ranks(values: np.ndarray) -> np.ndarray:
    # Ties share the mean of the ranks they span (1-based), as the Mann-Whitney statistic requires.
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve: P(score of a random pneumonia > score of a random normal), ties count 1/2.

    Computed as the Mann-Whitney U statistic. ``nan`` when only one class is present.
    """
    labels, scores = labels_and_scores(y_true, y_score)
    return _auc_from_arrays(labels, scores)


def _auc_from_arrays(labels: np.ndarray, scores: np.ndarray) -> float:
    positives = int(labels.sum())
    negatives = labels.shape[0] - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = _average_ranks(scores)
    u = ranks[labels == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def bootstrap_auc_interval(
    y_true,
    y_score,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC (resampling images with replacement, seeded).

    Resamples that hold a single class are skipped. ``(nan, nan)`` when the AUC itself is undefined.
    """
    labels, scores = labels_and_scores(y_true, y_score)
    if labels.min() == labels.max():
        return (math.nan, math.nan)
    generator = np.random.default_rng(seed)
    n = labels.shape[0]
    values = []
    for _ in range(resamples):
        index = generator.integers(0, n, n)
        value = _auc_from_arrays(labels[index], scores[index])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return (math.nan, math.nan)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return (float(low), float(high))


def roc_curve(y_true, y_score) -> pd.DataFrame:
    """ROC points, one per distinct score plus the origin: ``threshold``, ``false_positive_rate``,
    ``true_positive_rate``; "pneumonia" is predicted when ``score >= threshold``.

    Rows go from the strictest threshold (``inf``: nothing positive, point (0, 0)) to the most lenient
    (everything positive, point (1, 1)). Rates are ``nan`` for a class that is absent.
    """
    from sklearn import metrics

    labels, scores = labels_and_scores(y_true, y_score)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class absent from y_true: nan rates, as documented
        fpr, tpr, thresholds = metrics.roc_curve(labels, scores, drop_intermediate=False)
    return pd.DataFrame({"threshold": thresholds, "false_positive_rate": fpr, "true_positive_rate": tpr})


def precision_recall_curve(y_true, y_score) -> pd.DataFrame:
    """Precision-recall points, one per distinct score: ``threshold``, ``precision``, ``recall``.

    Ordered from the strictest threshold to the most lenient (recall increasing); ``recall`` is ``nan``
    when there is no pneumonia case.
    """
    from sklearn import metrics

    labels, scores = labels_and_scores(y_true, y_score)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no pneumonia case: recall is set to nan below
        precision, recall, thresholds = metrics.precision_recall_curve(labels, scores, drop_intermediate=False)
    # scikit-learn orders by increasing threshold and appends the point (recall 0, precision 1).
    precision, recall, thresholds = precision[-2::-1], recall[-2::-1], thresholds[::-1]
    if not labels.any():
        recall = np.full(thresholds.shape[0], np.nan)
    return pd.DataFrame({"threshold": thresholds, "precision": precision, "recall": recall})


def average_precision(y_true, y_score) -> float:
    """Average precision ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds (no interpolation);
    ``nan`` when there is no pneumonia case."""
    from sklearn import metrics

    labels, scores = labels_and_scores(y_true, y_score)
    if not labels.any():
        return math.nan
    return float(metrics.average_precision_score(labels, scores))


# ------------------------------------------------------------------------------------------- summary
def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def binary_metrics(
    y_true,
    y_score,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    num_bins: int = 10,
) -> dict[str, Any]:
    """Everything a reviewer asks for about one labelled set, JSON-ready (``None`` where undefined).

    Keys: ``n``, ``num_pneumonia``, ``num_normal``, ``prior`` (fraction pneumonia: PPV and NPV depend
    on it), ``threshold``, ``counts`` (tn, fp, fn, tp), ``confusion_matrix`` [[tn, fp], [fn, tp]],
    ``accuracy``, ``sensitivity``, ``specificity``, ``ppv``, ``npv`` (each ``{"value", "low", "high",
    "successes", "total"}`` with a 95 % Wilson interval), ``f1``, ``auc`` (``{"value", "low", "high"}``
    with a seeded percentile bootstrap interval), ``average_precision``, ``brier``, ``ece``, ``nll``,
    ``report`` (the classification report as ``{row: {column: value}}``).
    """
    labels, scores = labels_and_scores(y_true, y_score)
    threshold = check_threshold(threshold)
    c = confusion_counts(labels, scores, threshold)
    n = labels.shape[0]
    auc = _nan_to_none(_auc_from_arrays(labels, scores))
    auc_low, auc_high = bootstrap_auc_interval(labels, scores, resamples=bootstrap_resamples, seed=seed)
    report = classification_report(labels, scores, threshold)
    return {
        "n": int(n),
        "num_pneumonia": int(labels.sum()),
        "num_normal": int(n - labels.sum()),
        "prior": float(labels.mean()),
        "threshold": threshold,
        "counts": c,
        "confusion_matrix": [[c["tn"], c["fp"]], [c["fn"], c["tp"]]],
        "accuracy": proportion(c["tp"] + c["tn"], n),
        "sensitivity": proportion(c["tp"], c["tp"] + c["fn"]),
        "specificity": proportion(c["tn"], c["tn"] + c["fp"]),
        "ppv": proportion(c["tp"], c["tp"] + c["fp"]),
        "npv": proportion(c["tn"], c["tn"] + c["fn"]),
        "f1": float(report.loc["pneumonia", "f1-score"]),
        "auc": {
            "value": auc,
            "low": _nan_to_none(auc_low),
            "high": _nan_to_none(auc_high),
            "method": f"Mann-Whitney; {bootstrap_resamples}-resample percentile bootstrap",
        },
        "average_precision": _nan_to_none(average_precision(labels, scores)),
        "brier": brier_score(labels, scores),
        "ece": expected_calibration_error(labels, scores, num_bins=num_bins),
        "nll": negative_log_likelihood(labels, scores),
        "report": {
            row: {key: (int(value) if key == "support" else float(value)) for key, value in values.items()}
            for row, values in report.to_dict(orient="index").items()
        },
    }


__all__ = [
    "DEFAULT_THRESHOLD",
    "labels_and_scores",
    "check_threshold",
    "confusion_counts",
    "confusion_matrix",
    "classification_report",
    "wilson_interval",
    "proportion",
    "roc_auc",
    "bootstrap_auc_interval",
    "roc_curve",
    "precision_recall_curve",
    "average_precision",
    "binary_metrics",
]
