"""Score an average of models from their saved predictions, without running any network.

    python benchmarks/ensemble_scores.py models/default cxr-home/runs/E1-fast_norm-seed1 ... [--weights 3 1 1 1]

Each argument is a run directory or model folder with a ``predictions.csv`` (the raw validation and test
scores of the same data set and split, in the same order). The ensemble's logit is the weighted mean of
the members' logits (the bundled model's saved score is already the mean of its three members' logits, so
``--weights 3 1 1 1`` gives six members equal weight). The ensemble is then finalised like a run:
temperature fitted on validation, threshold by the sens95 rule on validation, test evaluated once
(``cxr.run_results.write_run_results`` in a scratch folder). Prints validation and test figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def saved_scores(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(labels, logits)`` per split ("val", "test") from ``folder/predictions.csv``, in the data set's order;
    the logits are those of the raw (uncalibrated) scores."""
    from cxr.calibration import to_logits

    table = pd.read_csv(folder / "predictions.csv")
    labels, logits = {}, {}
    for split in ("val", "test"):
        rows = table[table["split"] == split].sort_values("index")
        labels[split] = rows["y_true"].to_numpy(np.int64)
        logits[split] = to_logits(rows["y_score_raw"].to_numpy(np.float64))
    return labels, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", type=Path)
    parser.add_argument("--weights", nargs="+", type=float)
    parser.add_argument("--min-sensitivity", type=float, default=0.95)
    arguments = parser.parse_args()

    from cxr.run_results import write_run_results

    weights = np.asarray(arguments.weights or [1.0] * len(arguments.members), np.float64)
    if weights.shape != (len(arguments.members),):
        raise SystemExit(f"--weights needs one weight per member ({len(arguments.members)}); "
                         f"received {weights.size}")
    labels, logits = {}, {"val": 0.0, "test": 0.0}
    for member, weight in zip(arguments.members, weights, strict=True):
        member_labels, member_logits = saved_scores(member)
        for split in ("val", "test"):
            if split in labels and not np.array_equal(labels[split], member_labels[split]):
                raise SystemExit(f"{member}: its {split} labels differ from the first member's (another split?)")
            labels[split] = member_labels[split]
            logits[split] = logits[split] + weight * member_logits[split]
    logits = {split: value / weights.sum() for split, value in logits.items()}
    with tempfile.TemporaryDirectory() as scratch:
        metrics = write_run_results(
            scratch, val_true=labels["val"], val_score=1 / (1 + np.exp(-logits["val"])), test_true=labels["test"],
            test_score=1 / (1 + np.exp(-logits["test"])), val_logits=logits["val"], test_logits=logits["test"],
            threshold_rule="sensitivity", min_sensitivity=arguments.min_sensitivity)
    validation, test = metrics["validation"], metrics["test"]
    pairs = zip(arguments.members, weights, strict=True)
    print(f"members: {', '.join(f'{member} (x{weight:g})' for member, weight in pairs)}")
    auc = validation["auc"]
    print(f"validation: AUC {auc['value']:.4f} ({auc['low']:.3f}-{auc['high']:.3f}), "
          f"sensitivity {validation['sensitivity']['value']:.3f}, "
          f"specificity {validation['specificity']['value']:.3f}; "
          f"threshold {metrics['threshold']:.3f}, temperature {metrics['temperature']:.3f}")
    accuracy = test["accuracy"]
    print(f"test: accuracy {accuracy['value']:.3f} ({accuracy['low']:.3f}-{accuracy['high']:.3f}), "
          f"AUC {test['auc']['value']:.4f} ({test['auc']['low']:.3f}-{test['auc']['high']:.3f}), sensitivity "
          f"{test['sensitivity']['value']:.3f}, specificity {test['specificity']['value']:.3f}, ECE after "
          f"{metrics['calibration']['test']['ece_after']:.3f}")


if __name__ == "__main__":
    main()
