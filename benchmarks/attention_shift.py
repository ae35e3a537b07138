"""Where the bundled model looks, on validation against Kermany's test split: an analysis, not a choice.

    python benchmarks/attention_shift.py [--model models/default] [--dataset chest_xray-150] [--images-out DIR]

For every validation and test image, the Grad-CAM map of the evidence *for pneumonia* (``cxr.explain.GradCam``,
target "pneumonia", each map scaled to peak 1; an all-zero map means no evidence for pneumonia anywhere).
Per group (split x class, and test normals split into the model's false alarms and true negatives at its saved
threshold) it prints the share of the map's mass in the outer frame (19 px at 150 px: 44 % of the area, no
lungs), in the central lung box (the middle 60 % of width and height, 36 % of the area) and in the rest, and
how many maps are empty. Among each split's normals it gives the Spearman correlation between the score and
the frame share. With ``--images-out`` it writes each group's mean map as a PNG (for looking, not for tests).

Test is read here for analysis only; nothing in this script chooses a model or a threshold for shipping.
The question it answers is the issue's first one: do the test normals that the model calls pneumonia get that
call from the lungs (a real look-alike) or from the frame (body outline, arms, collimation: the shortcut)?
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shift_evidence import spearman  # noqa: E402

from cxr.config import preset  # noqa: E402
from cxr.datasets import load_dataset  # noqa: E402
from cxr.pipeline import training_arrays  # noqa: E402

FRAME_FRACTION = 19 / 150  # the frame of shift_evidence.py and shortcut_probe.py
CENTRE_FRACTION = 0.2  # the lung box leaves 20 % of the side on each edge


def region_masks(size: int) -> dict[str, np.ndarray]:
    """Boolean (size, size) masks: "frame" (outer ring), "lungs" (central box), "between" (the rest)."""
    frame_width = int(round(FRAME_FRACTION * size))
    edge = int(round(CENTRE_FRACTION * size))
    frame = np.ones((size, size), bool)
    frame[frame_width:size - frame_width, frame_width:size - frame_width] = False
    lungs = np.zeros((size, size), bool)
    lungs[edge:size - edge, edge:size - edge] = True
    return {"frame": frame, "lungs": lungs, "between": ~frame & ~lungs}


def shares(maps: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per map, the fraction of its mass in each region (NaN for an empty map)."""
    total = maps.reshape(len(maps), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {name: maps[:, mask].sum(axis=1) / total for name, mask in masks.items()}


def main() -> None:
    from cxr.explain import GradCam
    from cxr.model_files import load_model_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--dataset", default="chest_xray-150")
    parser.add_argument("--images-out", type=Path)
    arguments = parser.parse_args()
    folder = Path(arguments.model)
    model = load_model_file(folder / "model.keras")
    threshold = float(json.loads((folder / "metrics.json").read_text())["threshold"])
    dataset = load_dataset(arguments.dataset)
    arrays = training_arrays(dataset, preset("fast", image_size=dataset.image_size))
    explainer = GradCam(model)
    size = explainer.image_size
    masks = region_masks(size)
    print(f"model {folder} (threshold {threshold:.3f}), Grad-CAM layer {explainer.layer_path}; "
          f"area shares: frame {masks['frame'].mean():.0%}, lungs {masks['lungs'].mean():.0%}, "
          f"between {masks['between'].mean():.0%}")
    groups: dict[str, np.ndarray] = {}
    for split in ("val", "test"):
        images, labels = arrays[split]
        scores = model.predict(images[..., None], batch_size=64, verbose=0).ravel()
        maps = np.stack([explainer(image, target="pneumonia") for image in images])
        region = shares(maps, masks)
        normals = labels == 0
        false_alarm = normals & (scores >= threshold)
        named = {f"{split} pneumonia": labels == 1, f"{split} normal": normals,
                 f"{split} normal, called pneumonia": false_alarm,
                 f"{split} normal, called normal": normals & ~false_alarm}
        for name, members in named.items():
            if not members.any():
                print(f"{name:<34} n=0")
                continue
            empty = ~np.isfinite(region["frame"][members])
            parts = "  ".join(f"{key} {np.nanmean(value[members]):.2f}" for key, value in region.items())
            print(f"{name:<34} n={int(members.sum()):>3}  mean score {scores[members].mean():.3f}  "
                  f"mass share: {parts}  empty maps {int(empty.sum())}")
            groups[name] = maps[members].mean(axis=0)
        print(f"{split} normals: Spearman(score, frame share) "
              f"{spearman(scores[normals], region['frame'][normals]):+.2f}, (score, lung share) "
              f"{spearman(scores[normals], region['lungs'][normals]):+.2f}", flush=True)
    if arguments.images_out:
        import cv2

        arguments.images_out.mkdir(parents=True, exist_ok=True)
        for name, mean_map in groups.items():
            picture = np.uint8(255 * mean_map / max(float(mean_map.max()), 1e-9))
            path = arguments.images_out / (name.replace(",", "").replace(" ", "-") + ".png")
            cv2.imwrite(str(path), cv2.resize(picture, (300, 300), interpolation=cv2.INTER_NEAREST))
        print(f"mean maps written to {arguments.images_out}")


if __name__ == "__main__":
    main()
