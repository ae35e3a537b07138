"""Shortcut probes: can a logistic regression tell normal from pneumonia without looking at the lungs?

    python benchmarks/shortcut_probe.py [--dataset chest_xray-150] [--test]

For each per-image intensity normalisation (none, percentile stretch, histogram equalisation) and each
feature set (the outer frame only, the 32-bin intensity histogram only, a 16x16 thumbnail of the
centre), fits a standardised logistic regression on train and prints the validation AUC (patient-grouped
split of Kermany train); ``--test`` adds Kermany's test AUC. A high validation AUC from the frame or the
histogram alone means the label leaks through acquisition, not anatomy; a normalisation that removes it
there takes that shortcut away from a network too. Normalisations are the numpy twins of
``cxr.models.IntensityNormalization`` (same arithmetic), applied to the 0-255 images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cxr.config import preset  # noqa: E402
from cxr.datasets import load_dataset  # noqa: E402
from cxr.evaluation import roc_auc  # noqa: E402
from cxr.pipeline import training_arrays  # noqa: E402

FRAME = 19  # pixels of the outer frame at 150 px (16 px at 128 px, as measured before)


def percentile_stretch(images: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """(n, s, s) 0-255 -> each image's ``low``-``high`` percentile range stretched to 0-255, clipped."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    lows = np.percentile(flat, low, axis=1, keepdims=True)
    highs = np.percentile(flat, high, axis=1, keepdims=True)
    stretched = (flat - lows) / np.maximum(highs - lows, 1.0) * 255.0
    return np.clip(stretched, 0, 255).reshape(images.shape)


def equalise(images: np.ndarray) -> np.ndarray:
    """(n, s, s) 0-255 -> per-image histogram equalisation: each pixel becomes 255 x the fraction of
    the image's pixels at or below its value (the empirical CDF)."""
    out = np.empty(images.shape, np.float32)
    for index, image in enumerate(images.astype(np.uint8)):
        cdf = np.cumsum(np.bincount(image.ravel(), minlength=256)) / image.size
        out[index] = cdf[image] * 255.0
    return out


def features(images: np.ndarray, kind: str) -> np.ndarray:
    size = images.shape[1]
    if kind == "frame":
        mask = np.ones((size, size), bool)
        mask[FRAME:-FRAME, FRAME:-FRAME] = False
        # Block means of 4x4 keep the frame's layout with fewer features than pixels.
        crop = size - size % 4
        pooled = images[:, :crop, :crop].reshape(len(images), crop // 4, 4, crop // 4, 4).mean(axis=(2, 4))
        pooled_mask = mask[:crop, :crop].reshape(crop // 4, 4, crop // 4, 4).all(axis=(1, 3))
        return pooled[:, pooled_mask]
    if kind == "histogram":
        return np.stack([np.histogram(image, bins=32, range=(0, 256))[0] / image.size for image in images])
    if kind == "centre":
        centre = images[:, size // 4: size - size // 4, size // 4: size - size // 4]
        step = centre.shape[1] // 16
        centre = centre[:, :16 * step, :16 * step]
        return centre.reshape(len(images), 16, step, 16, step).mean(axis=(2, 4)).reshape(len(images), -1)
    raise ValueError(kind)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="chest_xray-150")
    parser.add_argument("--test", action="store_true")
    arguments = parser.parse_args()
    dataset = load_dataset(arguments.dataset)
    arrays = training_arrays(dataset, preset("fast", image_size=dataset.image_size))
    splits = ("train", "val", "test") if arguments.test else ("train", "val")
    print("normalisation  features   val AUC" + ("  test AUC" if arguments.test else ""))
    for name, function in (("none", lambda x: x.astype(np.float32)), ("percentile", percentile_stretch),
                           ("equalise", equalise)):
        normalised = {split: function(arrays[split][0]) for split in splits}
        for kind in ("frame", "histogram", "centre"):
            data = {split: features(normalised[split], kind) for split in splits}
            model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
            model.fit(data["train"], arrays["train"][1])
            scores = {split: model.predict_proba(data[split])[:, 1] for split in splits}
            line = f"{name:<14} {kind:<10} {roc_auc(arrays['val'][1], scores['val']):.3f}"
            if arguments.test:
                line += f"     {roc_auc(arrays['test'][1], scores['test']):.3f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
