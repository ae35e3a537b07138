"""Population verdicts through the Predictor, ``cxr predict`` and external validation.

The model is the brightness model of tests/test_predict.py (logit = 10 * mean / 255 - 5) and the detector
works on its own feature, the mean brightness / 255: mean 100/255, standard deviation 10/255, threshold
3.0. So a uniform grey image of value v is inside when |v - 100| <= 30, and every verdict follows by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers_data import make_dicom
from test_predict import SIZE, save_model_folder

from cxr.population_detector import PopulationDetector
from cxr.predict import Predictor

THRESHOLD = 0.3
TEMPERATURE = 2.0
PIXEL_REASON = "looks unlike the pediatric chest X-rays this model was trained on"


def grey_detector() -> PopulationDetector:
    return PopulationDetector("classifier", SIZE, np.array([100 / 255], np.float32),
                              np.array([[(255 / 10) ** 2]], np.float32), 3.0,
                              np.linspace(0.0, 3.5, 101).astype(np.float32),
                              {"population": "pediatric chest X-rays", "training_ages": [0.0, 18.0],
                               "fitted_on": "hand-made"})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    with_detector = save_model_folder(tmp_path_factory.mktemp("with"), threshold=THRESHOLD, temperature=TEMPERATURE)
    grey_detector().save(with_detector)
    without = save_model_folder(tmp_path_factory.mktemp("without"), threshold=THRESHOLD, temperature=TEMPERATURE)
    return with_detector, without


def grey(value: int) -> np.ndarray:
    """Mean ``value`` exactly, as a checkerboard of value +- 12: contrast enough for the uniform-image rule."""
    board = np.indices((SIZE, SIZE)).sum(axis=0) % 2
    return (value - 12 + 24 * board).astype(np.uint8)


def write_grey(path, value: int):
    from test_predict import png_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(grey(value)))
    return path


def dicom(**attributes) -> bytes:
    """A CR chest PA DICOM; ``attributes`` override header elements."""
    # A 0-255 ramp: decoding stretches to the pixels' own range, so the mean stays 127.5 (inside: 2.75 < 3).
    return make_dicom(np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (64, 1)), **attributes)


def test_the_detector_is_loaded_with_the_model_and_decides_by_distance(folders):
    predictor = Predictor.load(str(folders[0]))
    assert predictor.population is not None and predictor.population.threshold == 3.0
    inside, edge, outside = predictor.predict([grey(100), grey(125), grey(200)], names=["a", "b", "c"])
    assert inside.population.status == "in" and inside.population.score == pytest.approx(0.0, abs=1e-3)
    assert inside.population.reasons == () and inside.label == "pneumonia"  # calibrated 0.37 >= 0.3
    assert edge.population.status == "in" and edge.population.score == pytest.approx(2.5, abs=1e-3)
    assert edge.population.percentile == pytest.approx(100 * 72 / 101)  # 72 of the 101 reference scores <= 2.5
    assert outside.population.outside and outside.population.score == pytest.approx(10.0, abs=1e-3)
    assert outside.population.reasons == (PIXEL_REASON,) and outside.population.threshold == 3.0
    # The label is withheld, the probability is still computed.
    assert outside.label is None and outside.probability == pytest.approx(1 / (1 + np.exp(-(10 * 200 / 255 - 5) / 2)))


def test_allow_outside_labels_every_image_and_still_reports_the_population(folders):
    predictor = Predictor.load(str(folders[0]))
    (result,) = predictor.predict([grey(200)], allow_outside=True)
    assert result.label == "pneumonia" and result.population.outside


def test_result_rows_keep_their_columns_first_and_add_the_population(folders):
    predictor = Predictor.load(str(folders[0]))
    inside, outside = predictor.predict([grey(100), grey(12)], names=["in.png", "out.png"])
    row = outside.to_row()
    assert list(row)[:3] == ["file", "probability", "label"]
    assert (row["label"], row["population"], row["population_reason"]) == (None, "outside", PIXEL_REASON)
    assert row["population_score"] == pytest.approx(8.8, abs=1e-3)
    assert inside.to_row()["population"] == "in" and inside.to_row()["population_reason"] == ""


def test_dicom_metadata_decides_with_or_without_a_detector(folders):
    with_detector, without = (Predictor.load(str(folder)) for folder in folders)
    child, adult = with_detector.predict([dicom(PatientAge="004Y"), dicom(PatientAge="045Y")])
    assert child.population.status == "in" and child.label is not None
    result = adult
    assert result.population.outside and result.label is None
    assert result.population.reasons == (
        "DICOM says the patient is 45 years old (this model was trained on patients under 18)",)
    # Without a detector: no score, "unknown" unless a rule fires; the body-part rule needs no detector.
    plain, leg = without.predict([dicom(), dicom(BodyPartExamined="EXTREMITY")])
    assert plain.population.status == "unknown" and plain.population.score is None and plain.label is not None
    assert leg.population.outside and leg.label is None
    assert leg.population.reasons == ("DICOM says this is an EXTREMITY image",)


def test_an_unreadable_file_has_no_verdict(folders):
    (result,) = Predictor.load(str(folders[0])).predict([b"not an image"], names=["junk"])
    assert result.error and result.population is None and result.to_row()["population"] == ""


def test_predict_command_csv_population_columns_and_allow_outside(folders, tmp_path, capsys):
    from cxr.cli import main

    files = [write_grey(tmp_path / "in" / "grey.png", 100), write_grey(tmp_path / "in" / "white.png", 230)]
    out_csv = tmp_path / "out.csv"
    assert main(["predict", *map(str, files), "--model", str(folders[0]), "--csv", str(out_csv)]) == 0
    printed = capsys.readouterr()
    table = pd.read_csv(out_csv, keep_default_na=False)
    assert list(table.columns)[:3] == ["file", "probability", "label"]
    assert table["population"].tolist() == ["in", "outside"]
    assert table["label"].tolist() == ["pneumonia", ""]  # withheld for the outside image
    assert table.loc[1, "population_reason"] == PIXEL_REASON
    assert float(table.loc[1, "population_score"]) == pytest.approx(13.0, abs=1e-3)
    white_line = next(line for line in printed.out.splitlines() if line.startswith("in/white.png")
                      or "white.png" in line.split()[0])
    assert "OUTSIDE" in white_line and "withheld" in white_line
    assert f"outside this model's training population: {PIXEL_REASON}" in printed.out
    assert "1 of 2 image(s) outside" in printed.err

    assert main(["predict", *map(str, files), "--model", str(folders[0]), "--csv", str(out_csv),
                 "--allow-outside"]) == 0
    table = pd.read_csv(out_csv, keep_default_na=False)
    assert table["label"].tolist() == ["pneumonia", "pneumonia"] and table["population"].tolist() == ["in", "outside"]


def test_external_validation_reports_the_share_flagged_and_in_population_metrics(folders, tmp_path):
    from cxr.external import external_validation

    folder = tmp_path / "other_hospital"
    normal_values, pneumonia_values = (20, 80, 90), (110, 120, 240)  # 20 and 240 are outside (> 30 from 100)
    for value in normal_values:
        write_grey(folder / "normal" / f"n{value}.png", value)
    for value in pneumonia_values:
        write_grey(folder / "pneumonia" / f"p{value}.png", value)
    report = external_validation(Predictor.load(str(folders[0])), folder)
    population = report["population"]
    assert (population["num_images"], population["num_outside"]) == (6, 2) and population["detector"]
    assert population["fraction_outside"] == pytest.approx(2 / 6)
    assert report["metrics"]["n"] == 6 and population["in_population"]["n"] == 4
    assert population["in_population"]["num_pneumonia"] == 2
    flagged = report["predictions"].set_index("file")["population"].to_dict()
    assert flagged == {"normal/n20.png": "outside", "normal/n80.png": "in", "normal/n90.png": "in",
                       "pneumonia/p110.png": "in", "pneumonia/p120.png": "in", "pneumonia/p240.png": "outside"}


def test_evaluate_command_prints_the_share_flagged_and_the_in_population_metrics(folders, tmp_path, capsys):
    import json

    from cxr.cli import main

    folder = tmp_path / "other_hospital"
    for name, value in (("normal/n20.png", 20), ("normal/n80.png", 80), ("normal/n90.png", 90),
                        ("pneumonia/p110.png", 110), ("pneumonia/p120.png", 120), ("pneumonia/p240.png", 240)):
        write_grey(folder / name, value)
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(folders[0]), "--data", str(folder), "--output", str(out),
                 "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "population check: 2 of 6 image(s) (33.3 %) outside the model's training population" in printed
    assert "== in-population part (images the check keeps) ==" in printed and "images: 4 (2 pneumonia" in printed
    report = json.loads((out / "external_other_hospital.json").read_text())
    assert report["population"]["num_outside"] == 2 and report["population"]["in_population"]["n"] == 4


def test_a_blank_image_is_outside_with_a_detector_and_unknown_without(folders):
    with_detector, without = (Predictor.load(str(folder)) for folder in folders)
    blank = np.full((SIZE, SIZE), 100, np.uint8)  # at the detector's mean: only the contrast rule sees it
    (judged,) = with_detector.predict([blank])
    assert judged.population.outside and judged.population.score == pytest.approx(0.0, abs=1e-3)
    assert judged.population.reason.startswith("this image is nearly uniform")
    (plain,) = without.predict([blank])
    assert plain.population.status == "unknown" and plain.label == "pneumonia"


def test_the_bundled_model_carries_its_detector_and_flags_real_outside_images():
    from pathlib import Path

    from cxr import lite0
    from cxr.population_check import load_check

    folder = Path(__file__).resolve().parents[1] / "models" / "default"
    check = load_check(folder)  # Lite0 features or the classifier's own: either flags (docs/benchmarks.md)
    assert check is not None and check.extractor == "efficientnet_lite0+classifier"
    for part, size in ((check.pretrained, 224), (check.classifier, 150)):
        assert part.image_size == size and part.info["num_fit"] == 4262 and part.info["num_heldout"] == 475
        assert part.threshold == pytest.approx(np.percentile(part.heldout_scores, 99.5), rel=1e-4)
    assert check.threshold == 1.0 and len(check.heldout_scores) == 475
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not lite0.available() or not (shared / "adult" / "frontal").is_dir():
        pytest.skip("needs the Lite0 weights package and ../shared/data")
    predictor = Predictor.load("default")
    adult = sorted((shared / "adult" / "frontal").glob("*.jpg"))[:3]
    child = sorted((shared / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))[:3]
    results = predictor.predict([*adult, *child, shared / "dicom" / "RG3_J2KI_tibia.dcm"])
    assert [result.population.status for result in results] == ["outside"] * 3 + ["in"] * 3 + ["outside"]
    assert all(result.label is None for result in results[:3]) and all(result.label for result in results[3:6])
