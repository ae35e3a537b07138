"""What a prediction writes out is the calibrated answer, computed by hand here: the row of a result,
the CSV of ``cxr predict``, external validation; and a damaged ``metrics.json`` is refused, never
silently replaced by the uncalibrated 0.5 threshold.

The model is the brightness model of tests/test_predict.py: logit = 10 * mean(pixels) / 255 - 5, so
for a uniform grey image of value v every figure follows by hand.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_predict import save_model_folder, write_png

from cxr.errors import ModelFileError
from cxr.external import external_validation
from cxr.predict import Predictor

TEMPERATURE = 2.0
THRESHOLD = 0.3


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def logit_of(value: int) -> float:
    return 10.0 * value / 255.0 - 5.0


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return save_model_folder(tmp_path_factory.mktemp("model"), threshold=THRESHOLD, temperature=TEMPERATURE)


def test_result_row_holds_the_calibrated_probability_and_its_label(model_folder):
    # v = 100: logit -1.078; raw sigmoid 0.254 (normal at 0.3), calibrated sigmoid(-0.539) = 0.368 (pneumonia).
    predictor = Predictor.load(model_folder)
    (result,) = predictor.predict([np.full((32, 32), 100, np.uint8)], names=["grey"])
    row = result.to_row()
    assert row["probability"] == pytest.approx(sigmoid(logit_of(100) / TEMPERATURE), abs=1e-6)
    assert row["raw_probability"] == pytest.approx(sigmoid(logit_of(100)), abs=1e-6)
    assert row["label"] == "pneumonia" and row["threshold"] == THRESHOLD


def test_predict_command_csv_writes_the_calibrated_probability(model_folder, tmp_path):
    from cxr.cli import main

    values = {"dark.png": 40, "grey.png": 100, "bright.png": 210}
    files = [write_png(tmp_path / "in" / name, value) for name, value in values.items()]
    out_csv = tmp_path / "out.csv"
    assert main(["predict", *map(str, files), "--model", str(model_folder / "model.keras"),
                 "--csv", str(out_csv)]) == 0
    table = pd.read_csv(out_csv)
    assert len(table) == 3
    for row, value in zip(table.itertuples(), values.values(), strict=True):
        calibrated = sigmoid(logit_of(value) / TEMPERATURE)
        assert row.probability == pytest.approx(calibrated, abs=1e-6), row.file
        assert row.raw_probability == pytest.approx(sigmoid(logit_of(value)), abs=1e-6), row.file
        assert row.label == ("pneumonia" if calibrated >= THRESHOLD else "normal"), row.file
    assert table["label"].tolist() == ["normal", "pneumonia", "pneumonia"]


def test_external_validation_applies_the_models_temperature_and_threshold(model_folder, tmp_path):
    folder = tmp_path / "other_hospital"
    normal_values, pneumonia_values = (40, 100, 120), (110, 180, 230)
    for value in normal_values:
        write_png(folder / "normal" / f"n{value}.png", value)
    for value in pneumonia_values:
        write_png(folder / "pneumonia" / f"p{value}.png", value)
    report = external_validation(Predictor.load(model_folder), folder)
    predictions = report["predictions"].sort_values("file").reset_index(drop=True)
    values = {f"n{value}.png": value for value in normal_values}
    values |= {f"p{value}.png": value for value in pneumonia_values}
    for row in predictions.itertuples():
        value = values[row.file.split("/")[-1]]
        assert row.y_score == pytest.approx(sigmoid(logit_of(value) / TEMPERATURE), abs=1e-6), row.file
        assert row.y_score_raw == pytest.approx(sigmoid(logit_of(value)), abs=1e-6), row.file
    # Calibrated scores at threshold 0.3: normal 40 -> 0.15, 100 -> 0.37, 120 -> 0.46; pneumonia all > 0.3.
    # (Raw scores would call 100 normal: 0.25.)
    assert report["metrics"]["threshold"] == THRESHOLD
    assert report["metrics"]["counts"] == {"tn": 1, "fp": 2, "fn": 0, "tp": 3}


@pytest.mark.parametrize("content", ["{not json", '{"threshold": 0.3, ', "\x00\x01binary", "[0.3, 2.0]", "0.3"])
def test_a_corrupt_metrics_file_is_refused_not_ignored(tmp_path, model_folder, content):
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / "model.keras").write_bytes((model_folder / "model.keras").read_bytes())
    (folder / "metrics.json").write_text(content)
    for load in (Predictor.load, lambda path: Predictor.load(path / "model.keras")):
        with pytest.raises(ModelFileError, match="metrics.json") as caught:
            load(folder)
        assert "cannot be read" in str(caught.value)
    # The same folder with the metrics file intact loads with its threshold and temperature.
    (folder / "metrics.json").write_text(json.dumps({"threshold": THRESHOLD, "temperature": TEMPERATURE}))
    predictor = Predictor.load(folder)
    assert (predictor.threshold, predictor.temperature) == (THRESHOLD, TEMPERATURE)
