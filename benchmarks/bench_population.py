"""The population check's targets (issue 11), measured on the bundled model through ``Predictor``.

    python benchmarks/bench_population.py            # needs ../shared/data and the Lite0 weights package

Prints: the fraction of ``shared/data/adult/frontal`` flagged outside (target >= 95 %), of Kermany's
624-image test split (target <= 5 %), the verdicts of the tibia DICOM, of a DICOM written here with
PatientAge 045Y (pixels: a Kermany training image), of a colour photograph, a screenshot and a uniform
grey image (target: all outside), and the extra time per image of the detector at batch 32 beside the
classifier's own time on the same images (target <= 15 ms). The detector's threshold comes from
training images only (models/default/population.json says which).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the DICOM writer is the tests' own (helpers_data.make_dicom)
SHARED = ROOT.parent / "shared" / "data"
REPEATS = 5


def screenshot() -> np.ndarray:
    """A (600, 800, 3) uint8 picture of a desktop window: title bar, menu, text lines, buttons."""
    import cv2

    image = np.full((600, 800, 3), 245, np.uint8)
    cv2.rectangle(image, (0, 0), (800, 40), (60, 60, 60), -1)
    cv2.putText(image, "Report - Viewer", (12, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    for row in range(12):
        cv2.putText(image, f"Line {row + 1}: patient list, study date 2026-11-26, status ok", (20, 80 + 38 * row),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1)
    for column in range(3):
        cv2.rectangle(image, (20 + 180 * column, 540), (180 + 180 * column, 585), (200, 120, 40), -1)
    return image


def png(image: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", image)
    return encoded.tobytes()


def main() -> None:
    from cxr.imaging import load_image
    from cxr.predict import Predictor

    predictor = Predictor.load("default")
    detector = predictor.population
    if detector is None:
        sys.exit("models/default has no population detector; run scripts/fit_population_default.py first.")
    print(f"detector: {detector.describe()}")
    info = getattr(detector, "pretrained", detector).info  # a combined check: its parts share these
    print(f"fitted on: {info.get('fitted_on')}; threshold from: {info.get('heldout_on')}")

    def flagged(files: list[Path]) -> tuple[float, int]:
        results = predictor.predict(files, allow_outside=True)
        outside = [result for result in results if result.population is not None and result.population.outside]
        return len(outside) / len(results), len(results)

    adult = sorted((SHARED / "adult" / "frontal").glob("*.jpg"))
    test = sorted((SHARED / "chest_xray" / "test").rglob("*.jpeg"))
    for label, files, target in (("adult frontal (shared/data/adult/frontal)", adult, ">= 95 %"),
                                 ("Kermany test split", test, "<= 5 %")):
        fraction, count = flagged(files)
        print(f"{label:45s} {count:4d} images  flagged outside {100 * fraction:5.1f} %   (target {target})")

    train_image = sorted((SHARED / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[0]
    pediatric_pixels = load_image(train_image, 224)[0]
    from helpers_data import make_dicom
    from skimage import data as skimage_data  # scikit-image: a dev dependency, used for a real photograph

    cases = [
        ("tibia DICOM (RG3_J2KI_tibia.dcm)", (SHARED / "dicom" / "RG3_J2KI_tibia.dcm").read_bytes()),
        ("DICOM, PatientAge 045Y, pixels of a Kermany train image", make_dicom(pediatric_pixels, PatientAge="045Y")),
        ("the same DICOM with PatientAge 004Y", make_dicom(pediatric_pixels, PatientAge="004Y")),
        ("colour photograph (scikit-image chelsea)", png(skimage_data.chelsea()[..., ::-1])),
        ("screenshot of a window with text", png(screenshot())),
        ("uniform grey 512x512", png(np.full((512, 512), 128, np.uint8))),
    ]
    results = predictor.predict([data for _, data in cases], names=[label for label, _ in cases], allow_outside=True)
    for (label, _), result in zip(cases, results, strict=True):
        verdict = result.population
        print(f"{label:55s} {verdict.status:8s} score {verdict.score:8.2f} (p{verdict.percentile:5.1f})  "
              f"{verdict.reason}")

    images = np.stack([load_image(path, predictor.image_size)[0] for path in test[:64]])
    predictor.raw_logits(images[:32])
    detector.image_scores(images[:32], predictor.model)  # warm both up (graph building, weights)
    classifier_times, detector_times = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        predictor.raw_logits(images)
        classifier_times.append((time.perf_counter() - started) / len(images))
        started = time.perf_counter()
        detector.image_scores(images, predictor.model)
        detector_times.append((time.perf_counter() - started) / len(images))
    classifier_ms, detector_ms = 1000 * statistics.median(classifier_times), 1000 * statistics.median(detector_times)
    print(f"per image at batch 32 (median of {REPEATS} x 64 images, same process): classifier {classifier_ms:.1f} ms, "
          f"population detector {detector_ms:.1f} ms extra (ratio {detector_ms / classifier_ms:.1f}x; "
          f"target <= 15 ms)")


if __name__ == "__main__":
    main()
