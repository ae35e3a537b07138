"""Plain-language reading of a model's answer: a verdict per image and the model's operating point.

A bare "Pneumonia" next to P = 20 % reads as a contradiction to a clinician when the threshold is 17 %;
what the label means depends on the operating point (the threshold trades specificity for sensitivity).
So every answer is one of three plain verdicts, and the operating point is stated once per model with the
sensitivity and specificity it had on validation and test images.

Pure Python: no Streamlit, no TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LIKELY, UNLIKELY, UNCERTAIN = "likely", "unlikely", "uncertain"
HEADLINES = {
    LIKELY: "Pneumonia likely",
    UNLIKELY: "Pneumonia unlikely",
    UNCERTAIN: "Uncertain — near the threshold",
}
# Half-width of the "uncertain" band, in log-odds around the threshold: odds within a factor e^0.5 ≈ 1.65 of
# the threshold's. Log-odds, not percentage points, so the band is as wide in meaning at a threshold of 17 %
# (P from 11 % to 25 %) as at 50 % (38 % to 62 %).
UNCERTAIN_LOGIT_MARGIN = 0.5
_EPSILON = 1e-6


def _logit(probability: float) -> float:
    probability = min(max(float(probability), _EPSILON), 1.0 - _EPSILON)
    return math.log(probability / (1.0 - probability))


def _check_probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number from 0 to 1; received {value!r}.")
    return float(value)


@dataclass(frozen=True)
class Verdict:
    """``kind``: "likely" | "unlikely" | "uncertain"; ``headline``: the words shown for it."""

    kind: str

    @property
    def headline(self) -> str:
        return HEADLINES[self.kind]


def verdict(probability: float, threshold: float, *, margin: float = UNCERTAIN_LOGIT_MARGIN) -> Verdict:
    """The plain verdict for calibrated P(pneumonia) ``probability`` at ``threshold`` (both in [0, 1]):
    "uncertain" when the log-odds are within ``margin`` of the threshold's, else "likely" (above) or
    "unlikely" (below)."""
    probability = _check_probability(probability, "probability")
    threshold = _check_probability(threshold, "threshold")
    lower, upper = uncertain_band(threshold, margin=margin)
    if lower <= probability <= upper:
        return Verdict(UNCERTAIN)
    return Verdict(LIKELY if probability > upper else UNLIKELY)


def uncertain_band(threshold: float, *, margin: float = UNCERTAIN_LOGIT_MARGIN) -> tuple[float, float]:
    """``(low, high)`` probabilities bounding the "uncertain" verdict around ``threshold``."""
    centre = _logit(_check_probability(threshold, "threshold"))
    return 1.0 / (1.0 + math.exp(-(centre - margin))), 1.0 / (1.0 + math.exp(-(centre + margin)))


@dataclass(frozen=True)
class SplitFigures:
    """Sensitivity and specificity (fractions in [0, 1]) on one split, with the counts behind them."""

    split: str  # "validation" | "test"
    sensitivity: float
    specificity: float
    pneumonia: int | None = None  # pneumonia images in the split
    normal: int | None = None


@dataclass(frozen=True)
class OperatingPoint:
    """Where a model draws its line: ``threshold`` on calibrated P(pneumonia), how it was chosen, and what
    that line did on held-out images (``figures``: validation first, then test, whichever exist)."""

    threshold: float
    rule: str
    figures: tuple[SplitFigures, ...] = ()

    def summary(self) -> str:
        """One line: "Pneumonia when P ≥ 21 %; on test images, never used to train or tune it, it found 99 % of
        pneumonias and cleared 71 % of normals.". The test split's figures when there are any: the validation
        split chose the threshold, so its figures flatter the model (95 % / 95 % for the same model)."""
        line = f"Pneumonia when P ≥ {_percent(self.threshold)}"
        if not self.figures:
            return line + "; no measured sensitivity or specificity is recorded for this model."
        shown = next((figures for figures in self.figures if figures.split == "test"), self.figures[0])
        where = "test images, never used to train or tune it," if shown.split == "test" else f"{shown.split} images"
        return (f"{line}; on {where} it found {_percent(shown.sensitivity)} of pneumonias and "
                f"cleared {_percent(shown.specificity)} of normals.")

    def explanation(self) -> str:
        """A paragraph in plain words: the threshold, the verdicts, and every split's figures."""
        low, high = uncertain_band(self.threshold)
        parts = [
            f"This model calls an image **pneumonia** when its probability of pneumonia is at least "
            f"**{_percent(self.threshold)}** (threshold {RULE_WORDS.get(self.rule, self.rule)}). "
            f"A low threshold buys sensitivity (few pneumonias missed) with specificity (more normal images "
            f"flagged). Answers between {_percent(low)} and {_percent(high)} are shown as "
            f"*{HEADLINES[UNCERTAIN]}*: a small change in the image could flip them."
        ]
        for figures in self.figures:
            counts = ""
            if figures.pneumonia is not None and figures.normal is not None:
                counts = f" ({figures.pneumonia} pneumonia and {figures.normal} normal images)"
            parts.append(f"On its **{figures.split}** images{counts}: sensitivity "
                         f"**{_percent(figures.sensitivity)}** (pneumonias found), specificity "
                         f"**{_percent(figures.specificity)}** (normals cleared).")
        if not self.figures:
            parts.append("No sensitivity or specificity is recorded for this model (no metrics.json).")
        if {figures.split for figures in self.figures} >= {"validation", "test"}:
            parts.append("The validation images chose the threshold, so their figures are the more flattering "
                         "ones; the test images were used for nothing else than this report and are the better "
                         "guide to new X-rays. Fewer normals cleared means more normal X-rays called pneumonia "
                         "(false alarms).")
        return "\n\n".join(parts)


RULE_WORDS = {
    "youden": "chosen on validation images to maximise sensitivity + specificity",
    "sensitivity": "chosen on validation images to keep a minimum sensitivity",
    "fixed": "fixed, not tuned",
    "manual": "set by hand on the Evaluate page",
}


def _percent(fraction: float) -> str:
    return f"{100 * float(fraction):.0f} %"


def _value(entry: Any) -> float | None:
    """``{"value": 0.96, ...}`` or a bare number -> float; anything else -> None."""
    if isinstance(entry, dict):
        entry = entry.get("value")
    if isinstance(entry, bool) or not isinstance(entry, (int, float)) or not math.isfinite(float(entry)):
        return None
    return float(entry)


def operating_point(metrics: dict | None, *, threshold: float | None = None, rule: str | None = None) -> OperatingPoint:
    """The operating point recorded in a model's ``metrics.json`` (``cxr.run_results.write_run_results``'s
    layout: ``threshold``, ``threshold_rule``, ``validation``/``test`` with ``sensitivity``/``specificity``
    entries). ``threshold``/``rule`` override the file's (the Predictor's own values win)."""
    metrics = metrics or {}
    chosen = threshold if threshold is not None else metrics.get("threshold", 0.5)
    figures = []
    for split in ("validation", "test"):
        entry = metrics.get(split)
        if not isinstance(entry, dict):
            continue
        sensitivity, specificity = _value(entry.get("sensitivity")), _value(entry.get("specificity"))
        if sensitivity is None or specificity is None:
            continue
        pneumonia, normal = entry.get("num_pneumonia"), entry.get("num_normal")
        figures.append(SplitFigures(split, sensitivity, specificity,
                                    pneumonia if isinstance(pneumonia, int) else None,
                                    normal if isinstance(normal, int) else None))
    return OperatingPoint(threshold=_check_probability(chosen, "threshold"),
                          rule=str(rule or metrics.get("threshold_rule") or "fixed"), figures=tuple(figures))
