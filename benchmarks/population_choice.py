"""Choose the population detector's features and input size by the rule in docs/benchmarks.md
("Population detector: choice of features and input size"), on data other than the Kermany test split.

    CXR_HOME=/tmp/home python -m cxr data import ../shared/data/chest_xray --size 224
    CXR_HOME=/tmp/home python benchmarks/population_choice.py

Prints, per candidate: V2 false flags, originals flagged, adult half flagged, ms per image (batch 32),
then the candidate the rule picks. The test split is not read.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
FIT_SUBSET = 1200  # the rule's amendment: a seeded subset of train keeps four candidates affordable on 2 cores


def decode_folder(folder: Path, size: int) -> tuple[list[str], np.ndarray]:
    from cxr.imaging import load_image

    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [path.name for path in files], np.stack([load_image(path, size)[0] for path in files])


def main() -> None:
    import keras

    import cxr.models  # noqa: F401 - registers the layers the bundled model needs
    from cxr.datasets import load_dataset
    from cxr.imaging import resize_square
    from cxr.population_detector import CLASSIFIER, LITE0, fit_detector, image_features

    dataset = load_dataset("chest_xray-224")
    manifest = dataset.manifest
    train224, val224 = dataset.images("train"), dataset.images("val")
    train224 = train224[np.sort(np.random.default_rng(0).choice(len(train224), FIT_SUBSET, replace=False))]
    val_patients = manifest.loc[manifest["split"] == "val", "patient_id"].to_numpy()
    unique = np.array(sorted(set(val_patients)))
    rng = np.random.default_rng(0)
    half = set(rng.permutation(unique)[: len(unique) // 2])
    in_v1 = np.array([patient in half for patient in val_patients])
    names, _ = decode_folder(SHARED / "adult" / "frontal", 8)
    adult_files = [SHARED / "adult" / "frontal" / name for index, name in enumerate(names) if index % 2 == 0]
    classifier = keras.models.load_model(ROOT / "models" / "default" / "model.keras", safe_mode=True)
    candidates = [("A lite0 224", LITE0, 224), ("B lite0 160", LITE0, 160), ("C lite0 150", LITE0, 150),
                  ("D classifier 150", CLASSIFIER, 150)]
    rows = []
    print(f"fit: {len(train224)} train images; V1 {in_v1.sum()} / V2 {(~in_v1).sum()} validation images; "
          f"adult half {len(adult_files)}", flush=True)
    for label, extractor, size in candidates:
        from cxr.imaging import load_image

        def at_size(images, size=size):
            return images if size == 224 else np.stack([resize_square(image, size) for image in images])

        originals = np.stack([load_image(path, size)[0] for path in sorted((SHARED / "originals").rglob("*.jp*g"))])
        adults = np.stack([load_image(path, size)[0] for path in adult_files])
        started = time.perf_counter()
        fit = image_features(at_size(train224), extractor, size, model=classifier)
        seconds = time.perf_counter() - started
        val = image_features(at_size(val224), extractor, size, model=classifier)
        detector = fit_detector(fit, val[in_v1], extractor=extractor, image_size=size)
        flagged = {
            "V2": float(np.mean(detector.score(val[~in_v1]) > detector.threshold)),
            "originals": int(np.sum(detector.image_scores(originals, classifier) > detector.threshold)),
            "adult": float(np.mean(detector.image_scores(adults, classifier) > detector.threshold)),
        }
        ms = 1000 * seconds / len(train224)
        rows.append((label, flagged, ms))
        print(f"{label:18s} V2 flagged {flagged['V2']:6.1%}  originals flagged {flagged['originals']:2d}/24  "
              f"adult half flagged {flagged['adult']:6.1%}  {ms:5.1f} ms/image (batch 32)", flush=True)
    qualified = [row for row in rows if row[1]["V2"] <= 0.03 and row[1]["originals"] <= 2 and row[1]["adult"] >= 0.95]
    if qualified:
        chosen = min(qualified, key=lambda row: row[2])
        print(f"rule: {len(qualified)} qualify; the cheapest is {chosen[0]}")
    else:
        chosen = max(rows, key=lambda row: row[1]["adult"] - row[1]["V2"])
        print(f"rule: none qualifies; largest adult - V2 margin: {chosen[0]}")


if __name__ == "__main__":
    main()
