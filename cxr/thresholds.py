"""The decision threshold on P(pneumonia), chosen on VALIDATION scores by a named rule (never on test).

Rules: ``"youden"`` (maximise sensitivity + specificity - 1), ``"sensitivity"`` (the highest threshold
keeping a minimum sensitivity), ``"fixed"`` (a given value, 0.5 by default).
"""

from __future__ import annotations

import math

import numpy as np

from cxr.config import THRESHOLD_RULES
from cxr.evaluation import DEFAULT_THRESHOLD, check_threshold, labels_and_scores, roc_curve


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
        return check_threshold(fixed_threshold)
    labels, scores = labels_and_scores(y_true, y_score)
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


__all__ = ["choose_threshold"]
