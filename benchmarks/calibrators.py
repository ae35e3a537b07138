"""Temperature scaling against Platt scaling (temperature and offset), from runs' saved scores.

    python benchmarks/calibrators.py RUN_OR_MODEL_FOLDER ... [--folds 5] [--test]

For each folder's ``predictions.csv`` (raw validation and test scores): the 5-fold stratified cross-validated
negative log-likelihood on validation of each calibrator (fitted on four folds, scored on the fifth; the
folds fixed by seed 0), which is what chooses (docs/benchmarks.md, "Calibrator"). With ``--test``, also each
calibrator fitted on the whole validation split and scored once on test (ECE, 10 bins; NLL). No network runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensemble_scores import saved_scores  # noqa: E402

from cxr.calibration import (  # noqa: E402
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    sigmoid,
)


def fit_platt(labels: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """Slope ``a`` and offset ``b`` of ``sigmoid(a·z + b)`` minimising validation NLL (an unpenalised
    one-feature logistic regression)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=1000).fit(logits.reshape(-1, 1), labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def calibrated(method: str, train_labels, train_logits, logits) -> np.ndarray:
    if method == "temperature":
        return sigmoid(logits / fit_temperature(train_labels, logits=train_logits))
    slope, offset = fit_platt(train_labels, train_logits)
    return sigmoid(slope * logits + offset)


def main() -> None:
    from sklearn.model_selection import StratifiedKFold

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--test", action="store_true", help="also score each calibrator once on test")
    arguments = parser.parse_args()
    methods = ("temperature", "platt")
    totals = {method: [] for method in methods}
    for folder in arguments.folders:
        labels, logits = saved_scores(folder)
        folds = StratifiedKFold(arguments.folds, shuffle=True, random_state=0).split(logits["val"], labels["val"])
        scores = {method: [] for method in methods}
        for train, held in folds:
            for method in methods:
                probabilities = calibrated(method, labels["val"][train], logits["val"][train], logits["val"][held])
                scores[method].append(negative_log_likelihood(labels["val"][held], probabilities) * len(held))
        line = [f"{folder}:"]
        for method in methods:
            value = sum(scores[method]) / len(labels["val"])
            totals[method].append(value)
            line.append(f"{method} CV NLL {value:.4f}")
        if arguments.test:
            for method in methods:
                test_probabilities = calibrated(method, labels["val"], logits["val"], logits["test"])
                line.append(f"{method} test ECE {expected_calibration_error(labels['test'], test_probabilities):.3f} "
                            f"NLL {negative_log_likelihood(labels['test'], test_probabilities):.3f}")
        print("  ".join(line), flush=True)
    temperature, platt = (np.asarray(totals[method]) for method in methods)
    print(f"mean CV NLL: temperature {temperature.mean():.4f}, platt {platt.mean():.4f}; "
          f"platt lower on {int(np.sum(platt < temperature))} of {len(platt)} runs")


if __name__ == "__main__":
    main()
