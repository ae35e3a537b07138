"""Metrics from labels and scores: report, confusion matrix, ROC/PR, intervals, threshold, calibration.

Every function takes ``y_true`` (n,) 0/1 (0 = normal, 1 = pneumonia) and ``y_score`` (n,)
P(pneumonia) in [0, 1]. Everything here is numpy (the AUC is a rank statistic, the intervals are
Wilson's), so the results can be cross-checked against scikit-learn in the tests rather than
computed by it.

``finalize_run`` is what a training run calls at its end: it fits the temperature and chooses the
threshold on the validation split only, applies both to the test split, and writes ``metrics.json``,
``predictions.csv`` and the model card into the run directory.
"""

from __future__ import annotations

import datetime as _datetime
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr.atomic import atomic_write_json, atomic_write_text
from cxr.calibration import (
    _as_labels,
    _as_scores,
    _check_same_length,
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_curve,
    to_logits,
)
from cxr.config import CLASS_NAMES, THRESHOLD_RULES

# THRESHOLD_RULES (youden, sensitivity, fixed) comes from cxr.config: TrainingConfig.threshold_rule.
DEFAULT_THRESHOLD = 0.5  # the tutorial's (and Keras') implicit threshold
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000  # enough for a stable 95 % percentile interval; ~0.1 s for 624 images
BOOTSTRAP_SEED = 0  # the same interval every time the same scores are evaluated
METRICS_VERSION = 1


def _inputs(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _as_labels(y_true), _as_scores(y_score)
    _check_same_length(labels, scores)
    return labels, scores


def _check_threshold(threshold) -> float:
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
    labels, scores = _inputs(y_true, y_score)
    predicted = scores >= _check_threshold(threshold)
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


def _divide(numerator: float, denominator: float) -> float:
    # scikit-learn's zero_division=0 convention: an undefined precision/recall reads as 0.
    return float(numerator) / float(denominator) if denominator else 0.0


def classification_report(y_true, y_score, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support, plus macro and weighted averages and accuracy.

    Index: ``"normal"``, ``"pneumonia"``, ``"accuracy"``, ``"macro avg"``, ``"weighted avg"``;
    columns: ``precision``, ``recall``, ``f1-score``, ``support`` (the layout of scikit-learn's report;
    the accuracy row repeats the accuracy in its three score columns).
    """
    c = confusion_counts(y_true, y_score, threshold)
    per_class = {}
    # For "normal", a normal image predicted normal is the true positive.
    for name, tp, fp, fn in (("normal", c["tn"], c["fn"], c["fp"]), ("pneumonia", c["tp"], c["fp"], c["fn"])):
        precision, recall = _divide(tp, tp + fp), _divide(tp, tp + fn)
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1-score": _divide(2 * precision * recall, precision + recall),
            "support": tp + fn,
        }
    total = sum(row["support"] for row in per_class.values())
    accuracy = _divide(c["tp"] + c["tn"], total)
    rows = dict(per_class)
    rows["accuracy"] = {"precision": accuracy, "recall": accuracy, "f1-score": accuracy, "support": total}
    for average in ("macro avg", "weighted avg"):
        weights = [1.0 if average == "macro avg" else row["support"] for row in per_class.values()]
        weight_sum = sum(weights)
        rows[average] = {
            key: _divide(
                sum(w * row[key] for w, row in zip(weights, per_class.values(), strict=True)), weight_sum
            )
            for key in ("precision", "recall", "f1-score")
        }
        rows[average]["support"] = total
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
    z = _normal_quantile(0.5 + confidence / 2.0)
    p = successes / total
    denominator = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def _normal_quantile(probability: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    if probability == 0.975:
        return 1.959963984540054  # the common case, exact to double precision
    a = (
        -3.969683028665376e01,
        2.209460984245205e02,
        -2.759285104469687e02,
        1.383577518672690e02,
        -3.066479806614716e01,
        2.506628277459239e00,
    )
    b = (
        -5.447609879822406e01,
        1.615858368580409e02,
        -1.556989798598866e02,
        6.680131188771972e01,
        -1.328068155288572e01,
    )
    c = (
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e00,
        -2.549732539343734e00,
        4.374664141464968e00,
        2.938163982698783e00,
    )
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    low = 0.02425
    if probability < low:
        q = math.sqrt(-2 * math.log(probability))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
    if probability > 1 - low:
        return -_normal_quantile(1 - probability)
    q = probability - 0.5
    r = q * q
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )


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
    labels, scores = _inputs(y_true, y_score)
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
    labels, scores = _inputs(y_true, y_score)
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
    labels, scores = _inputs(y_true, y_score)
    thresholds, tp, fp = _cumulative_counts(labels, scores)
    positives, negatives = labels.sum(), labels.shape[0] - labels.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.concatenate([[0.0], tp / positives]) if positives else np.full(tp.shape[0] + 1, np.nan)
        fpr = np.concatenate([[0.0], fp / negatives]) if negatives else np.full(fp.shape[0] + 1, np.nan)
    return pd.DataFrame(
        {
            "threshold": np.concatenate([[np.inf], thresholds]),
            "false_positive_rate": fpr,
            "true_positive_rate": tpr,
        }
    )


def _cumulative_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Descending distinct scores, and the true/false positives predicted at each as the threshold.
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_group = np.r_[np.diff(sorted_scores) != 0, True]
    tp = np.cumsum(sorted_labels)[last_of_group].astype(np.float64)
    fp = np.cumsum(1 - sorted_labels)[last_of_group].astype(np.float64)
    return sorted_scores[last_of_group], tp, fp


def precision_recall_curve(y_true, y_score) -> pd.DataFrame:
    """Precision-recall points, one per distinct score: ``threshold``, ``precision``, ``recall``.

    Ordered from the strictest threshold to the most lenient (recall increasing).
    """
    labels, scores = _inputs(y_true, y_score)
    thresholds, tp, fp = _cumulative_counts(labels, scores)
    positives = labels.sum()
    precision = tp / (tp + fp)
    recall = tp / positives if positives else np.full(tp.shape[0], np.nan)
    return pd.DataFrame({"threshold": thresholds, "precision": precision, "recall": recall})


def average_precision(y_true, y_score) -> float:
    """Average precision ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds (scikit-learn's
    definition; no interpolation). ``nan`` when there is no pneumonia case."""
    labels, scores = _inputs(y_true, y_score)
    if labels.sum() == 0:
        return math.nan
    curve = precision_recall_curve(labels, scores)
    recall = np.concatenate([[0.0], curve["recall"].to_numpy()])
    return float(np.sum(np.diff(recall) * curve["precision"].to_numpy()))


# ------------------------------------------------------------------------------------------ threshold
def choose_threshold(
    y_true,
    y_score,
    rule: str = "youden",
    *,
    min_sensitivity: float | None = None,
    fixed_threshold: float = DEFAULT_THRESHOLD,
) -> float:
    """The decision threshold on P(pneumonia) chosen by ``rule`` on VALIDATION scores (never test).

    - ``"youden"``: maximises Youden's J = sensitivity + specificity - 1 over the distinct scores;
      among equal J the highest threshold wins (fewest false alarms).
    - ``"sensitivity"``: the highest threshold whose validation sensitivity is at least
      ``min_sensitivity`` (in (0, 1], e.g. 0.95); maximises specificity under that constraint.
    - ``"fixed"``: ``fixed_threshold`` (0.5 by default), whatever the scores.

    Pneumonia is predicted when ``score >= threshold``. Raises ``ValueError`` when the rule needs both
    classes (youden) or pneumonia cases (sensitivity) and they are missing.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}; received {rule!r}.")
    if rule == "fixed":
        return _check_threshold(fixed_threshold)
    labels, scores = _inputs(y_true, y_score)
    positives = int(labels.sum())
    if rule == "sensitivity":
        if (
            min_sensitivity is None
            or isinstance(min_sensitivity, bool)
            or not isinstance(min_sensitivity, (int, float))
            or not 0.0 < float(min_sensitivity) <= 1.0
        ):
            raise ValueError(
                f"the 'sensitivity' rule needs min_sensitivity in (0, 1], e.g. 0.95 for 95 %; "
                f"received {min_sensitivity!r}."
            )
        if positives == 0:
            raise ValueError(
                "the 'sensitivity' rule needs pneumonia cases in the validation split; it has none."
            )
        # The k-th highest pneumonia score keeps exactly k pneumonia cases at or above it.
        needed = math.ceil(float(min_sensitivity) * positives - 1e-9)
        return float(np.sort(scores[labels == 1])[::-1][max(needed, 1) - 1])
    if positives == 0 or positives == labels.shape[0]:
        raise ValueError(
            f"Youden's J needs both classes in the validation split; received {positives} pneumonia "
            f"and {labels.shape[0] - positives} normal images. Use the 'fixed' rule or a larger split."
        )
    curve = roc_curve(labels, scores).iloc[1:]  # the first row (threshold inf) predicts nothing
    youden = curve["true_positive_rate"].to_numpy() - curve["false_positive_rate"].to_numpy()
    # Equal J up to rounding (2/3 vs 1 - 1/3) counts as a tie; the first (highest) threshold wins.
    best = int(np.flatnonzero(youden >= youden.max() - 1e-12)[0])
    return float(curve["threshold"].to_numpy()[best])


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
    labels, scores = _inputs(y_true, y_score)
    threshold = _check_threshold(threshold)
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


def _format_proportion(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    text = f"{100 * entry['value']:5.1f} %"
    if entry.get("low") is not None:
        text += f" (95 % CI {100 * entry['low']:.1f}-{100 * entry['high']:.1f})"
    if "successes" in entry:
        text += f"  [{entry['successes']}/{entry['total']}]"
    return text


def format_metrics(metrics: dict[str, Any], *, title: str = "") -> str:
    """A plain-text report of one ``binary_metrics`` dict, for the terminal and the logs."""
    lines = [title] if title else []
    lines.append(
        f"images: {metrics['n']} ({metrics['num_pneumonia']} pneumonia, {metrics['num_normal']} normal; "
        f"prior P(pneumonia) = {100 * metrics['prior']:.1f} %)   threshold: {metrics['threshold']:.4f}"
    )
    # JSON writers may sort keys; show rows and columns in the classification report's own order.
    report = pd.DataFrame.from_dict(metrics["report"], orient="index")
    rows = [row for row in (*CLASS_NAMES, "accuracy", "macro avg", "weighted avg") if row in report.index]
    report = report.reindex(index=rows, columns=["precision", "recall", "f1-score", "support"])
    lines.append(report.to_string(float_format=lambda value: f"{value:.3f}"))
    cm = metrics["confusion_matrix"]
    lines.append(f"confusion matrix (rows true, columns predicted; normal, pneumonia): {cm[0]} / {cm[1]}")
    for key, label in (
        ("accuracy", "accuracy"),
        ("sensitivity", "sensitivity (recall pneumonia)"),
        ("specificity", "specificity (recall normal)"),
    ):
        lines.append(f"{label:32s} {_format_proportion(metrics[key])}")
    prior = f"at prior {100 * metrics['prior']:.1f} %"
    lines.append(f"{'PPV (precision pneumonia)':32s} {_format_proportion(metrics['ppv'])}  {prior}")
    lines.append(f"{'NPV (precision normal)':32s} {_format_proportion(metrics['npv'])}  {prior}")
    auc = metrics["auc"]
    if auc.get("value") is not None:
        interval = f" (95 % CI {auc['low']:.3f}-{auc['high']:.3f})" if auc.get("low") is not None else ""
        lines.append(f"{'ROC AUC':32s} {auc['value']:.4f}{interval}")
    if metrics.get("average_precision") is not None:
        lines.append(f"{'average precision':32s} {metrics['average_precision']:.4f}")
    lines.append(f"{'Brier score / ECE':32s} {metrics['brier']:.4f} / {metrics['ece']:.4f}")
    return "\n".join(lines)


def format_run_metrics(metrics: dict[str, Any]) -> str:
    """The whole ``metrics.json`` of a run as text: rule, calibration, validation, test, external."""
    lines = [
        f"threshold {metrics['threshold']:.4f} (rule: {metrics['threshold_rule']}"
        + (f", min sensitivity {metrics['min_sensitivity']}" if metrics.get("min_sensitivity") else "")
        + f"; chosen on validation)   temperature {metrics['temperature']:.4f}"
    ]
    calibration = metrics.get("calibration", {})
    for split in ("validation", "test"):
        if split in calibration:
            entry = calibration[split]
            lines.append(
                f"calibration on {split}: ECE {entry['ece_before']:.4f} -> {entry['ece_after']:.4f}, "
                f"Brier {entry['brier_before']:.4f} -> {entry['brier_after']:.4f} (before -> after scaling)"
            )
    for note in metrics.get("notes", []):
        lines.append(f"note: {note}")
    for split in ("validation", "test"):
        if metrics.get(split):
            lines += ["", format_metrics(metrics[split], title=f"== {split} ==")]
    for name, entry in (metrics.get("external") or {}).items():
        lines += ["", format_metrics(entry, title=f"== external validation: {name} ==")]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ run files
def calibration_summary(y_true, raw_score, calibrated_score) -> dict[str, float]:
    """ECE, Brier and NLL before and after temperature scaling on one labelled set."""
    return {
        "ece_before": expected_calibration_error(y_true, raw_score),
        "ece_after": expected_calibration_error(y_true, calibrated_score),
        "brier_before": brier_score(y_true, raw_score),
        "brier_after": brier_score(y_true, calibrated_score),
        "nll_before": negative_log_likelihood(y_true, raw_score),
        "nll_after": negative_log_likelihood(y_true, calibrated_score),
    }


def finalize_run(
    run_dir,
    *,
    val_true,
    val_score,
    test_true,
    test_score,
    threshold_rule: str = "youden",
    min_sensitivity: float | None = None,
    fixed_threshold: float = DEFAULT_THRESHOLD,
    val_logits=None,
    test_logits=None,
) -> dict:
    """Fit calibration and threshold on validation, evaluate test with them, write the run's result files.

    ``val_true``/``test_true`` (n,) 0/1; ``val_score``/``test_score`` (n,) raw model P(pneumonia) in
    [0, 1]; ``val_logits``/``test_logits`` optional (n,) pre-sigmoid outputs (more precise than
    recovering them from saturated probabilities). ``test_true`` may be empty (or ``None``) when a data
    set has no test split; the test section is then ``None``.

    Order, so that test never influences a choice: (1) temperature ``T`` fitted on validation NLL;
    (2) threshold chosen by ``threshold_rule`` on the calibrated validation scores; (3) both applied to
    test. A validation split with one class cannot support either: ``T`` stays 1, the threshold falls
    back to 0.5, and ``notes`` says so (a smoke-test run must still finish).

    Writes ``metrics.json``, ``predictions.csv`` (split, index, y_true, y_score calibrated, y_score_raw)
    and the model card (``model_card.md``/``.json``) into ``run_dir``; returns the metrics dict.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(
            f"finalize_run needs an existing run directory; received {str(run_dir)!r}, "
            f"which is not a folder. Create the run with cxr.runs.new_run first."
        )
    if threshold_rule not in THRESHOLD_RULES:
        raise ValueError(
            f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)}; received {threshold_rule!r}."
        )
    val_labels, val_raw = _inputs(val_true, val_score)
    has_test = test_true is not None and len(np.asarray(test_true).reshape(-1)) > 0
    if has_test:
        test_labels, test_raw = _inputs(test_true, test_score)
    else:
        test_labels, test_raw = np.zeros(0, np.int64), np.zeros(0, np.float64)
    notes: list[str] = []

    both_classes = 0 < val_labels.sum() < val_labels.shape[0]
    if both_classes:
        temperature = fit_temperature(val_labels, val_raw, logits=val_logits)
    else:
        temperature = 1.0
        notes.append(
            f"validation holds one class only ({val_labels.shape[0]} images); temperature left at 1."
        )
    val_z = to_logits(val_raw) if val_logits is None else np.asarray(val_logits, np.float64).reshape(-1)
    val_calibrated = apply_temperature(val_raw, temperature, logits=val_z)
    try:
        threshold = choose_threshold(
            val_labels, val_calibrated, threshold_rule, min_sensitivity=min_sensitivity,
            fixed_threshold=fixed_threshold,
        )
        rule_used = threshold_rule
    except ValueError as error:
        if threshold_rule == "sensitivity" and min_sensitivity is None:
            raise
        threshold, rule_used = DEFAULT_THRESHOLD, "fixed"
        notes.append(f"threshold rule {threshold_rule!r} not usable ({error}); fell back to fixed 0.5.")

    metrics: dict[str, Any] = {
        "version": METRICS_VERSION,
        "created": _datetime.datetime.now(_datetime.UTC).isoformat(timespec="seconds"),
        "threshold": float(threshold),
        "threshold_rule": rule_used,
        "min_sensitivity": float(min_sensitivity) if rule_used == "sensitivity" else None,
        "temperature": float(temperature),
        "threshold_chosen_on": "validation (calibrated scores)",
        "validation": binary_metrics(val_labels, val_calibrated, threshold),
        "test": None,
        "calibration": {
            "method": "temperature scaling fitted on validation NLL",
            "temperature": float(temperature),
            "validation": calibration_summary(val_labels, val_raw, val_calibrated),
            "reliability_validation": reliability_curve(val_labels, val_calibrated).to_dict("records"),
        },
        "notes": notes,
    }
    frames = [
        pd.DataFrame(
            {
                "split": "val",
                "index": np.arange(val_labels.shape[0]),
                "y_true": val_labels,
                "y_score": val_calibrated,
                "y_score_raw": val_raw,
            }
        )
    ]
    if has_test:
        test_z = None if test_logits is None else np.asarray(test_logits, np.float64).reshape(-1)
        test_calibrated = apply_temperature(test_raw, temperature, logits=test_z)
        metrics["test"] = binary_metrics(test_labels, test_calibrated, threshold)
        metrics["calibration"]["test"] = calibration_summary(test_labels, test_raw, test_calibrated)
        metrics["calibration"]["reliability_test"] = reliability_curve(test_labels, test_calibrated).to_dict(
            "records"
        )
        frames.append(
            pd.DataFrame(
                {
                    "split": "test",
                    "index": np.arange(test_labels.shape[0]),
                    "y_true": test_labels,
                    "y_score": test_calibrated,
                    "y_score_raw": test_raw,
                }
            )
        )
    else:
        notes.append("no test split: test metrics are missing; evaluate on an external folder instead.")

    atomic_write_text(run_dir / "predictions.csv", pd.concat(frames, ignore_index=True).to_csv(index=False))
    atomic_write_json(run_dir / "metrics.json", metrics)
    try:
        from cxr.model_card import write_model_card
    except ImportError:
        write_model_card = None
    if write_model_card is not None:
        write_model_card(run_dir, metrics)
    return metrics


def read_run_metrics(run_dir) -> dict | None:
    """``metrics.json`` of a run as a dict, or ``None`` when the run has none yet."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"metrics.json in {str(Path(run_dir))!r} cannot be read ({error}); "
            f"run `python -m cxr evaluate --model {Path(run_dir).name}` to rewrite it."
        ) from error


__all__ = [
    "THRESHOLD_RULES",
    "DEFAULT_THRESHOLD",
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
    "choose_threshold",
    "binary_metrics",
    "format_metrics",
    "format_run_metrics",
    "calibration_summary",
    "finalize_run",
    "read_run_metrics",
    # re-exported from cxr.calibration
    "fit_temperature",
    "apply_temperature",
    "to_logits",
    "brier_score",
    "expected_calibration_error",
    "reliability_curve",
    "negative_log_likelihood",
]
