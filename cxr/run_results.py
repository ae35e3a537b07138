"""A training run's results: calibration and threshold fitted on validation, applied to test, written down.

``write_run_results`` is called once at the end of training (by ``cxr.training``, after it saved
``model.keras``): it fits the temperature and chooses the threshold on the validation split only, applies
both to the test split, and writes ``metrics.json``, ``predictions.csv`` and the model card into the run
directory.
"""

from __future__ import annotations

import datetime as _datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr.atomic import atomic_write_json, atomic_write_text
from cxr.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_curve,
    to_logits,
)
from cxr.config import THRESHOLD_RULES
from cxr.evaluation import DEFAULT_THRESHOLD, binary_metrics, labels_and_scores
from cxr.model_card import write_model_card
from cxr.thresholds import choose_threshold

METRICS_VERSION = 1


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


def write_run_results(
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
            f"write_run_results needs an existing run directory; received {str(run_dir)!r}, "
            f"which is not a folder. Create the run with cxr.runs.new_run first."
        )
    if threshold_rule not in THRESHOLD_RULES:
        raise ValueError(
            f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)}; received {threshold_rule!r}."
        )
    val_labels, val_raw = labels_and_scores(val_true, val_score)
    has_test = test_true is not None and len(np.asarray(test_true).reshape(-1)) > 0
    if has_test:
        test_labels, test_raw = labels_and_scores(test_true, test_score)
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
    write_model_card(run_dir, metrics)
    return metrics


__all__ = ["METRICS_VERSION", "calibration_summary", "write_run_results"]
