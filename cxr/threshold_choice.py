"""A decision threshold chosen by a person (the Evaluate page's "Save"), recorded in a run's metrics.json.

Training chooses the threshold by a rule on validation scores (``cxr.run_results.write_run_results``). A person
may prefer another operating point (e.g. more sensitivity for screening). Saving one keeps the record
honest: ``threshold_rule`` becomes ``"manual"``, the replaced choice goes to ``threshold_history``, the
validation and test sections are recomputed at the new threshold from the run's own ``predictions.csv``
(the same calibrated scores the rule saw), and the model card is rewritten. The Predictor reads
``metrics.json``, so predictions use the new threshold from then on.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from cxr import evaluation, runs
from cxr.atomic import atomic_write_json
from cxr.errors import RunError

MANUAL_RULE = "manual"
MANUAL_CHOSEN_ON = "by hand on the Evaluate page, looking at validation figures"
SPLITS = (("val", "validation"), ("test", "test"))


def _check(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
        raise RunError(f"a threshold must be a number from 0 to 1; received {threshold!r}.")
    return float(threshold)


def save_manual_threshold(run_dir, threshold: float, *, now: datetime.datetime | None = None) -> dict[str, Any]:
    """Make ``threshold`` (in [0, 1], on calibrated P(pneumonia)) the run's decision threshold; returns
    the new metrics dict (also written to ``metrics.json``).

    Raises ``RunError`` when the run has no ``metrics.json`` or ``predictions.csv`` (it was not
    evaluated) or the threshold is not a number in [0, 1].
    """
    run_dir = Path(run_dir)
    threshold = _check(threshold)
    metrics = runs.read_metrics(run_dir)
    predictions_path = run_dir / "predictions.csv"
    if metrics is None or not predictions_path.is_file():
        raise RunError(f"run {run_dir.name!r} has no evaluation (metrics.json and predictions.csv); only an "
                       "evaluated run can take a new threshold.")
    predictions = pd.read_csv(predictions_path)
    moment = (now or datetime.datetime.now(datetime.UTC)).isoformat(timespec="seconds")

    history = list(metrics.get("threshold_history") or [])
    history.append({"threshold": metrics.get("threshold"), "rule": metrics.get("threshold_rule"),
                    "chosen_on": metrics.get("threshold_chosen_on"), "min_sensitivity": metrics.get("min_sensitivity"),
                    "replaced_at": moment})
    updated = dict(metrics)
    updated.update({"threshold": threshold, "threshold_rule": MANUAL_RULE, "threshold_chosen_on": MANUAL_CHOSEN_ON,
                    "min_sensitivity": None, "threshold_history": history})
    for split, section in SPLITS:
        part = predictions[predictions["split"] == split]
        if len(part):
            updated[section] = evaluation.binary_metrics(part["y_true"].to_numpy(), part["y_score"].to_numpy(),
                                                         threshold)
    validation = updated.get("validation") or {}
    updated["manual_threshold"] = {
        "threshold": threshold,
        "saved_at": moment,
        "validation_sensitivity": (validation.get("sensitivity") or {}).get("value"),
        "validation_specificity": (validation.get("specificity") or {}).get("value"),
        "validation_counts": validation.get("counts"),
    }
    atomic_write_json(run_dir / "metrics.json", updated)
    from cxr.model_card import write_model_card

    write_model_card(run_dir, updated)
    return updated
