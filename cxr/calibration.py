"""Calibration of P(pneumonia): temperature scaling, reliability curve, expected calibration error, Brier.

A network trained with cross-entropy on a small set is usually over-confident: it says 0.99 where
the true frequency is 0.9. Temperature scaling (Guo et al., 2017) divides the logit by one number
``T > 0`` fitted on the validation split; it never changes the ranking (AUC is unchanged), only how
far from 0.5 the probabilities sit. With a sigmoid output the logit is recovered from the probability
as ``log(p / (1 - p))``.

numpy, with scikit-learn's Brier score and log-loss (imported when first used); no TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Probabilities are clipped before the logit so that a saturated sigmoid (exactly 0.0 or 1.0 in
# float32) still has a finite logit; 1e-7 matches Keras' epsilon for binary cross-entropy.
PROBABILITY_EPSILON = 1e-7
# Temperatures searched: below 0.05 or above 20 the model is either a step function or a constant,
# and the validation set is too small to tell the difference.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _as_labels(y_true, name: str = "y_true") -> np.ndarray:
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        labels = labels.reshape(-1)
    if labels.size and not np.isin(labels, (0, 1)).all():
        found = np.unique(labels)[:10].tolist()
        raise ValueError(
            f"{name} must hold only 0 (normal) and 1 (pneumonia); received values {found}. "
            f"Convert class names to 0/1 first."
        )
    return labels.astype(np.int64)


def _as_scores(y_score, name: str = "y_score") -> np.ndarray:
    scores = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if scores.size and (not np.isfinite(scores).all() or scores.min() < 0.0 or scores.max() > 1.0):
        raise ValueError(
            f"{name} must be probabilities P(pneumonia) in [0, 1]; received values from "
            f"{np.nanmin(scores):.4g} to {np.nanmax(scores):.4g}"
            f"{' including NaN/inf' if not np.isfinite(scores).all() else ''}. "
            f"Pass the sigmoid output, not logits."
        )
    return scores


def _check_same_length(labels: np.ndarray, scores: np.ndarray) -> None:
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"y_true and y_score must have the same length; received {labels.shape[0]} labels "
            f"and {scores.shape[0]} scores."
        )
    if labels.shape[0] == 0:
        raise ValueError("y_true and y_score are empty; at least one labelled image is needed.")


def to_logits(probabilities) -> np.ndarray:
    """Logits ``log(p / (1 - p))`` of probabilities (any shape, values in [0, 1]), as float64.

    ``p`` is clipped to ``[1e-7, 1 - 1e-7]`` first so the result is finite (|logit| <= ~16.1).
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
    return np.log(p) - np.log1p(-p)


def sigmoid(logits) -> np.ndarray:
    """Numerically stable logistic function (any shape) -> float64 in (0, 1)."""
    z = np.asarray(logits, dtype=np.float64)
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def apply_temperature(probabilities, temperature: float, *, logits=None) -> np.ndarray:
    """Calibrated probabilities ``sigmoid(logit / T)``; same shape as the input, float64 in (0, 1).

    ``logits``, when given, are used instead of recovering them from ``probabilities`` (more precise
    for saturated outputs). ``temperature == 1`` returns the probabilities unchanged (up to clipping).
    """
    check_temperature(temperature)
    z = to_logits(probabilities) if logits is None else np.asarray(logits, dtype=np.float64)
    if temperature == 1.0 and logits is None:
        return np.asarray(probabilities, dtype=np.float64).copy()
    return sigmoid(z / float(temperature))


def check_temperature(temperature) -> None:
    """Raise ``ValueError`` unless ``temperature`` is a finite number > 0."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float, np.floating, np.integer))
        or not math.isfinite(float(temperature))
        or float(temperature) <= 0
    ):
        raise ValueError(
            f"temperature must be a finite number > 0; received {temperature!r}. Use 1.0 for no calibration."
        )


def _negative_log_likelihood(labels: np.ndarray, logits: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + exp(-z)) for positives, log(1 + exp(z)) for negatives, written with logaddexp for stability.
    signed = np.where(labels == 1, -z, z)
    return float(np.mean(np.logaddexp(0.0, signed)))


def fit_temperature(
    y_true,
    y_score=None,
    *,
    logits=None,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    iterations: int = 100,
) -> float:
    """Temperature ``T`` in ``bounds`` minimising the mean negative log-likelihood of ``y_true``.

    ``y_true`` (n,) 0/1 labels of the validation split; ``y_score`` (n,) P(pneumonia) in [0, 1], or
    ``logits`` (n,) directly. ``T > 1`` softens over-confident scores, ``T < 1`` sharpens timid ones.

    The NLL is convex in ``1/T`` (a one-weight logistic regression without bias), hence unimodal in
    ``log T``; a golden-section search on ``log T`` finds the minimum to ~1e-9 without scipy.
    """
    labels = _as_labels(y_true)
    if logits is None:
        if y_score is None:
            raise ValueError("fit_temperature needs y_score (probabilities) or logits; received neither.")
        z = to_logits(_as_scores(y_score))
    else:
        z = np.asarray(logits, dtype=np.float64).reshape(-1)
        if not np.isfinite(z).all():
            raise ValueError("logits must be finite numbers; received NaN or inf.")
    _check_same_length(labels, z)
    low, high = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc = _negative_log_likelihood(labels, z, math.exp(c))
    fd = _negative_log_likelihood(labels, z, math.exp(d))
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _negative_log_likelihood(labels, z, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _negative_log_likelihood(labels, z, math.exp(d))
    return float(math.exp((a + b) / 2.0))


def negative_log_likelihood(y_true, y_score) -> float:
    """Mean binary cross-entropy (natural log) of P(pneumonia) ``y_score`` against 0/1 ``y_true``
    (scikit-learn's log-loss, with ``p`` clipped to ``[1e-7, 1 - 1e-7]`` as everywhere here)."""
    from sklearn.metrics import log_loss

    labels, scores = _as_labels(y_true), _as_scores(y_score)
    _check_same_length(labels, scores)
    clipped = np.clip(scores, PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
    return float(log_loss(labels, clipped, labels=[0, 1]))


def brier_score(y_true, y_score) -> float:
    """Mean squared difference between P(pneumonia) and the 0/1 label; 0 is perfect, 0.25 is a coin."""
    from sklearn.metrics import brier_score_loss

    labels, scores = _as_labels(y_true), _as_scores(y_score)
    _check_same_length(labels, scores)
    return float(brier_score_loss(labels, scores, labels=[0, 1]))


def reliability_curve(y_true, y_score, *, num_bins: int = 10) -> pd.DataFrame:
    """Reliability table over ``num_bins`` equal-width bins of P(pneumonia) in [0, 1].

    Returns one row per non-empty bin: ``bin_low``, ``bin_high``, ``mean_score`` (mean predicted
    probability), ``fraction_positive`` (observed frequency of pneumonia), ``count``. A calibrated model
    has ``fraction_positive ≈ mean_score`` in every bin.
    """
    labels, scores = _as_labels(y_true), _as_scores(y_score)
    _check_same_length(labels, scores)
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer; received {num_bins!r}.")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # Bin i holds [edge_i, edge_{i+1}); the last bin also holds 1.0.
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, num_bins - 1)
    rows = []
    for i in range(num_bins):
        mask = index == i
        count = int(mask.sum())
        if count == 0:
            continue
        rows.append(
            {
                "bin_low": float(edges[i]),
                "bin_high": float(edges[i + 1]),
                "mean_score": float(scores[mask].mean()),
                "fraction_positive": float(labels[mask].mean()),
                "count": count,
            }
        )
    return pd.DataFrame(rows, columns=["bin_low", "bin_high", "mean_score", "fraction_positive", "count"])


def expected_calibration_error(y_true, y_score, *, num_bins: int = 10) -> float:
    """ECE: count-weighted mean of ``|fraction_positive - mean_score|`` over equal-width bins of P(pneumonia).

    In [0, 1]; 0 for a perfectly calibrated model. Computed on the positive-class probability (the
    number the product shows), not on max(p, 1 - p).
    """
    table = reliability_curve(y_true, y_score, num_bins=num_bins)
    total = table["count"].sum()
    return float(((table["fraction_positive"] - table["mean_score"]).abs() * table["count"]).sum() / total)


__all__ = [
    "PROBABILITY_EPSILON",
    "TEMPERATURE_BOUNDS",
    "to_logits",
    "sigmoid",
    "apply_temperature",
    "check_temperature",
    "fit_temperature",
    "negative_log_likelihood",
    "brier_score",
    "reliability_curve",
    "expected_calibration_error",
]
