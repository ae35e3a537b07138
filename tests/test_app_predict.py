"""The Predict page (AppTest): no model yet, uploads with a bad file among good ones, the results table and its
CSV, the overlay toggle without predicting again, a model that cannot be loaded, and one real tiny Keras
model end to end through cxr.predict (Grad-CAM included)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from helpers_app import open_page, prepare_app

from cxr import runs
from cxr.config import TrainingConfig
from cxr.errors import ModelFileError
from cxr.predict import PredictionResult, Predictor

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    # The bundled model may or may not be in this checkout: these tests decide for themselves.
    prepare_app(monkeypatch, bundled_model=tmp_path / "no-bundled-model")
    yield tmp_path
    st.cache_resource.clear()


def finished_run_with_model_file() -> str:
    path = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=1))
    runs.write_status(path, state="finished")
    (path / "model.keras").write_bytes(b"placeholder: the predictor is patched in these tests")
    return path.name


class FakePredictor:
    """Answers like cxr.predict.Predictor: P = mean brightness; files starting with 'bad' cannot be read."""

    threshold = 0.5

    def __init__(self):
        self.calls = 0
        self.explain = []

    def predict(self, sources, *, names=None, explain=None):
        self.calls += 1
        self.explain.append(explain)
        results = []
        for data, name in zip(sources, names, strict=True):
            if name.startswith("bad"):
                results.append(PredictionResult(name=name, threshold=0.5,
                                                error=f"{name!r} is not an image this program can read."))
                continue
            probability = data.count(b"\xff") / max(len(data), 1)
            results.append(PredictionResult(
                name=name, probability=probability, label="pneumonia" if probability >= 0.5 else "normal",
                threshold=0.5, image=np.full((32, 32), 128, np.uint8),
                heatmap=np.ones((32, 32), np.float32) if explain else None,
                warnings=["Very small image (32x32 px)."] if name.startswith("small") else []))
        return results


def open_predict_page():
    return open_page("pages/predict.py", timeout=120)


def test_without_any_model_the_page_explains_and_points_to_training(home):
    at = open_predict_page()
    assert any("No bundled default model" in info.value for info in at.info)
    assert any("No model to predict with" in warning.value for warning in at.warning)
    assert not at.selectbox


def test_uploads_give_one_result_each_and_a_bad_file_its_message_in_place(home, monkeypatch):
    run_id = finished_run_with_model_file()
    predictor = FakePredictor()
    monkeypatch.setattr(Predictor, "from_run", classmethod(lambda cls, run: predictor))
    at = open_predict_page()
    assert at.selectbox[0].value == run_id
    at.file_uploader[0].set_value([("white.png", b"\xff" * 10, "image/png"),
                                   ("bad.png", b"garbage", "image/png"),
                                   ("small.png", b"\x00" * 10, "image/png")])
    at.run()
    assert not at.exception
    assert any("2 of 3 image(s) predicted" in success.value for success in at.success)
    errors = [error.value for error in at.error]
    assert len(errors) == 1 and "bad.png" in errors[0]
    assert any("Very small image" in warning.value for warning in at.warning)
    table = at.dataframe[0].value
    assert table["file"].tolist() == ["white.png", "bad.png", "small.png"]
    assert table["label"].tolist()[0] == "pneumonia" and table["label"].tolist()[2] == "normal"
    assert pd.isna(table["p_pneumonia"][1])
    assert [metric.value for metric in at.metric] == ["100.0 %", "0.0 %"]
    assert len(at.get("download_button")) == 1
    assert [image.proto.imgs[0].caption for image in at.get("image")] == ["white.png — heat map",
                                                                         "small.png — heat map"]

    # The overlay toggle redraws without predicting again.
    at.toggle[0].set_value(False)
    at.run()
    assert predictor.calls == 1
    assert [image.proto.imgs[0].caption for image in at.get("image")] == ["white.png", "small.png"]

    # SHAP on request predicts again with that method; "No heat map" asks for none.
    at.toggle[0].set_value(True)
    at.button_group[0].set_value("shap")
    at.run()
    at.button_group[0].set_value("none")
    at.run()
    assert predictor.explain == ["gradcam", "shap", None]
    assert [image.proto.imgs[0].caption for image in at.get("image")] == ["white.png", "small.png"]


def test_a_model_that_cannot_be_loaded_gives_a_clear_message(home, monkeypatch):
    finished_run_with_model_file()

    def refuse(cls, run):
        raise ModelFileError("model.keras holds a Lambda layer (Python code); refused in safe mode.")

    monkeypatch.setattr(Predictor, "from_run", classmethod(refuse))
    at = open_predict_page()
    at.file_uploader[0].set_value(("a.png", b"\xff", "image/png"))
    at.run()
    assert not at.exception
    messages = [error.value for error in at.error]
    assert any("Loading the model failed" in message and "safe mode" in message for message in messages)


def real_xray_bytes() -> tuple[str, bytes]:
    folder = SHARED_DATA / "chest_xray" / "test" / "PNEUMONIA"
    if folder.is_dir():
        first = sorted(folder.iterdir())[0]
        return first.name, first.read_bytes()
    import cv2

    pixels = (np.random.default_rng(0).random((256, 256)) * 255).astype(np.uint8)
    return "synthetic.png", cv2.imencode(".png", pixels)[1].tobytes()


def test_a_real_tiny_model_predicts_with_a_heat_map(home):
    from cxr import models

    path = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=1))
    runs.write_status(path, state="finished")
    model = models.build_model("fast", (32, 32, 1))
    model.save(path / "model.keras")
    (path / "metrics.json").write_text(json.dumps({"threshold": 0.4, "threshold_rule": "fixed", "temperature": 1.0}))
    at = open_predict_page()
    name, data = real_xray_bytes()
    at.file_uploader[0].set_value([(name, data, "image/jpeg"),
                                   ("bad.dcm", b"DICM but not really", "application/dicom")])
    at.run()
    assert not at.exception
    assert any("1 of 2 image(s) predicted" in success.value for success in at.success)
    table = at.dataframe[0].value
    probability = table["p_pneumonia"][0]
    assert 0.0 <= probability <= 1.0
    assert table["threshold"][0] == pytest.approx(0.4)
    assert table["label"][0] == ("pneumonia" if probability >= 0.4 else "normal")
    assert [image.proto.imgs[0].caption for image in at.get("image")] == [f"{name} — heat map"]
    assert "bad.dcm" in at.error[0].value


def test_real_dicom_files_get_answers_and_the_leg_a_warning(home):
    dicom = SHARED_DATA / "dicom"
    if not dicom.is_dir():
        pytest.skip(f"{dicom} is absent (real DICOM files from the shared data)")
    from cxr import models

    path = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=1))
    runs.write_status(path, state="finished")
    models.build_model("fast", (32, 32, 1)).save(path / "model.keras")
    at = open_predict_page()
    files = ["CR-MONO1-10-chest.dcm", "RG3_J2KI_tibia.dcm"]
    at.button_group[0].set_value("none")  # no heat maps: this test is about reading DICOM
    at.file_uploader[0].set_value([(name, (dicom / name).read_bytes(), "application/dicom") for name in files])
    at.run()
    assert not at.exception
    assert not at.error, [error.value for error in at.error]
    assert any("2 of 2 image(s) predicted" in success.value for success in at.success)
    assert at.dataframe[0].value["format"].tolist() == ["dicom", "dicom"]
    assert any("not chest" in warning.value for warning in at.warning)
