"""What the bundled model's errors on Kermany's test normals go with: an analysis, not a choice.

    python benchmarks/shift_evidence.py [--model models/default] [--dataset chest_xray-150]

Scores validation and test with the model as it is and with the outer frame (19 px at 150 px) of every
image replaced by that image's median grey level (no body outline, arms or collimation edge to read), the
threshold refitted on validation for each variant by the sens95 rule (temperature 1: thresholds are on
the raw score). Prints AUC and sensitivity/specificity per split, and for each split's normals the
Spearman correlation of the model's score with the image's 5th-percentile grey level (the background)
and with the score of a logistic regression that sees only the outer frame (``shortcut_probe.py``).
Test is read here for analysis only; nothing in this script chooses a model or a threshold for shipping.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cxr.config import preset  # noqa: E402
from cxr.datasets import load_dataset  # noqa: E402
from cxr.evaluation import roc_auc  # noqa: E402
from cxr.pipeline import training_arrays  # noqa: E402
from cxr.thresholds import choose_threshold  # noqa: E402

FRAME = 19


def frame_masked(images: np.ndarray) -> np.ndarray:
    out = images.copy()
    medians = np.median(images.reshape(len(images), -1), axis=1).astype(images.dtype)
    mask = np.ones(images.shape[1:], bool)
    mask[FRAME:-FRAME, FRAME:-FRAME] = False
    out[:, mask] = medians[:, None]
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation over the pairs where both values are finite (an empty Grad-CAM map has
    no share: NaN)."""
    keep = np.isfinite(a) & np.isfinite(b)
    ranks = [np.argsort(np.argsort(values[keep])).astype(float) for values in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def main() -> None:
    from cxr.model_files import load_model_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--dataset", default="chest_xray-150")
    arguments = parser.parse_args()
    model = load_model_file(Path(arguments.model) / "model.keras")
    dataset = load_dataset(arguments.dataset)
    arrays = training_arrays(dataset, preset("fast", image_size=dataset.image_size))
    # The frame-only logistic regression of shortcut_probe.py: do the network's false alarms on test
    # normals fall on the images whose frame alone looks like pneumonia?
    from shortcut_probe import features
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame_probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    frame_probe.fit(features(arrays["train"][0].astype(np.float32), "frame"), arrays["train"][1])
    frame_scores = {split: frame_probe.predict_proba(features(arrays[split][0].astype(np.float32), "frame"))[:, 1]
                    for split in ("val", "test")}
    for variant, transform in (("as is", lambda x: x), ("frame masked", frame_masked)):
        scores = {split: model.predict(transform(arrays[split][0])[..., None], batch_size=64, verbose=0).ravel()
                  for split in ("val", "test")}
        threshold = choose_threshold(arrays["val"][1], scores["val"], "sensitivity", min_sensitivity=0.95)
        for split in ("val", "test"):
            labels, score = arrays[split][1], scores[split]
            predicted = score >= threshold
            normals = labels == 0
            background = np.percentile(arrays[split][0].reshape(len(labels), -1), 5, axis=1)
            print(f"{variant:<13} {split:<5} AUC {roc_auc(labels, score):.3f}  threshold {threshold:.3f}  "
                  f"sens {predicted[labels == 1].mean():.3f}  spec {(~predicted[normals]).mean():.3f}  "
                  f"normals: mean score {score[normals].mean():.3f}, "
                  f"Spearman(score, 5th-percentile grey) {spearman(score[normals], background[normals]):+.2f}, "
                  f"(score, frame-only probe) {spearman(score[normals], frame_scores[split][normals]):+.2f}; "
                  f"frame-only probe AUC {roc_auc(labels, frame_scores[split]):.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
