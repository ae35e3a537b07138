"""Compare threshold rules on a model's saved validation scores; test only when asked (``--test``).

    python benchmarks/threshold_rules.py models/default/predictions.csv            # validation only
    python benchmarks/threshold_rules.py models/default/predictions.csv --test     # then test, once

Reads a ``predictions.csv`` (split, index, y_true, y_score calibrated, y_score_raw). Every threshold is
chosen on the validation rows; the test rows are read only with ``--test`` (the protocol of
docs/benchmarks.md: write the rule that picks among these rules down first, then look at test).

Rules, each a threshold on the calibrated score (``y_score``) unless it says raw:
- youden: maximises sensitivity + specificity - 1 on validation;
- sens95: the highest threshold keeping validation sensitivity >= 95 %;
- bayes50: equal-cost Bayes decision at a stated deployment prevalence of 50 % (the calibrated
  probabilities carry validation's prevalence, so the cut-off is that prevalence: odds correction);
- fixed0.5 (calibrated) and fixed0.5raw (the raw sigmoid, the tutorial's cut-off).
The threshold's 95 % interval comes from 1,000 bootstrap resamples of validation (stratified).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cxr.thresholds import choose_threshold  # noqa: E402


def bayes_threshold(validation_prevalence: float, deployment_prevalence: float) -> float:
    """Calibrated-probability cut-off of the equal-cost Bayes rule when the deployment prevalence differs
    from the one the probabilities were calibrated at: call pneumonia when the corrected odds exceed 1."""
    odds = (validation_prevalence / (1 - validation_prevalence)) * (
        (1 - deployment_prevalence) / deployment_prevalence)
    return odds / (1 + odds)


def rule_threshold(name: str, labels: np.ndarray, calibrated: np.ndarray) -> tuple[float, str]:
    """(threshold, which score column) of rule ``name`` fitted on these validation rows."""
    if name == "youden":
        return choose_threshold(labels, calibrated, "youden"), "y_score"
    if name == "sens95":
        return choose_threshold(labels, calibrated, "sensitivity", min_sensitivity=0.95), "y_score"
    if name == "bayes50":
        return bayes_threshold(float(labels.mean()), 0.5), "y_score"
    if name == "fixed0.5":
        return 0.5, "y_score"
    if name == "fixed0.5raw":
        return 0.5, "y_score_raw"
    raise ValueError(f"unknown rule {name!r}")


RULES = ("youden", "sens95", "bayes50", "fixed0.5", "fixed0.5raw")


def rates(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = scores >= threshold
    positives, negatives = labels == 1, labels == 0
    return {"accuracy": float((predicted == positives).mean()),
            "sensitivity": float(predicted[positives].mean()),
            "specificity": float((~predicted[negatives]).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions")
    parser.add_argument("--test", action="store_true", help="also score test (once, after the rule is written)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    arguments = parser.parse_args()
    table = pd.read_csv(arguments.predictions)
    val = table[table["split"] == "val"]
    labels = val["y_true"].to_numpy().astype(int)
    rng = np.random.default_rng(0)
    positive_index, negative_index = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    rows = []
    for name in RULES:
        threshold, column = rule_threshold(name, labels, val["y_score"].to_numpy())
        boot = []
        for _ in range(arguments.bootstrap):
            sample = np.concatenate([rng.choice(positive_index, positive_index.size),
                                     rng.choice(negative_index, negative_index.size)])
            boot.append(rule_threshold(name, labels[sample], val["y_score"].to_numpy()[sample])[0])
        row = {"rule": name, "score": column, "threshold": threshold,
               "threshold_low": float(np.quantile(boot, 0.025)), "threshold_high": float(np.quantile(boot, 0.975))}
        row.update({f"val_{key}": value for key, value in
                    rates(labels, val[column].to_numpy(), threshold).items()})
        if arguments.test:
            test = table[table["split"] == "test"]
            row.update({f"test_{key}": value for key, value in
                        rates(test["y_true"].to_numpy().astype(int), test[column].to_numpy(), threshold).items()})
        rows.append(row)
    pd.set_option("display.width", 200)
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
