"""The Predict page (AppTest): the disclaimer banner, plain verdicts at the model's operating point (explained once),
the population verdict (an outside image: no label, its output only on request, greyed in the table), original and
heat map side by side, a table without "None" cells, example images, model names with their AUC, the model
loaded in the background, a model that cannot be loaded, and one real tiny Keras model end to end."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from helpers_app import REPO_ROOT, open_page, prepare_app

from cxr import runs
from cxr.config import TrainingConfig
from cxr.errors import ModelFileError
from cxr.population import PopulationVerdict
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


def result_with(population=None, **fields) -> PredictionResult:
    return PredictionResult(population=population, **fields)


class FakePredictor:
    """Answers like cxr.predict.Predictor. P comes from the name ("p0.62-…": 0.62), else the share of 0xff
    bytes; files starting with 'bad' cannot be read, 'adult' ones are outside the training population."""

    threshold = 0.5

    def __init__(self):
        self.calls = 0
        self.explain = []
        self.names = []

    def predict(self, sources, *, names=None, explain=None):
        self.calls += 1
        self.explain.append(explain)
        self.names.append(list(names))
        results = []
        for data, name in zip(sources, names, strict=True):
            if name.startswith("bad"):
                results.append(result_with(name=name, threshold=0.5,
                                           error=f"{name!r} is not an image this program can read."))
                continue
            if name.startswith("p0."):
                probability = float(name[1:5])
            else:
                probability = data.count(b"\xff") / max(len(data), 1)
            outside = name.startswith("adult")
            population = (PopulationVerdict("outside", score=9.0, percentile=100.0, threshold=3.0,
                                            reasons=(ADULT_REASON,))
                          if outside else PopulationVerdict("in", score=1.0, percentile=40.0, threshold=3.0))
            label = None if outside else ("pneumonia" if probability >= 0.5 else "normal")
            results.append(result_with(
                population, name=name, probability=probability, label=label,
                threshold=0.5, image=np.full((32, 32), 128, np.uint8),
                heatmap=np.ones((32, 32), np.float32) if explain else None,
                warnings=["Very small image (32x32 px)."] if name.startswith("small") else []))
        return results


ADULT_REASON = "looks unlike the pediatric chest X-rays this model was trained on"


def open_predict_page():
    return open_page("pages/predict.py", timeout=120)


def markdown_text(at) -> str:
    return "\n".join(element.value for element in at.markdown)


def headings(at) -> list[str]:
    return [heading.value for heading in at.subheader]


def captions(at) -> list[str]:
    return [caption.value for caption in at.caption]


def image_captions(at) -> list[str]:
    return [image.proto.imgs[0].caption for image in at.get("image")]


def test_without_any_model_the_page_explains_and_points_to_training(home):
    at = open_predict_page()
    assert any("No bundled default model" in info.value for info in at.info)
    assert any("No model to predict with" in warning.value for warning in at.warning)
    assert not at.selectbox


def test_the_disclaimer_is_a_banner_that_says_not_a_diagnostic_device(home):
    at = open_predict_page()
    assert at.warning[0].value.startswith("**Research and teaching tool, not a diagnostic device.**")
    assert not any("diagnostic" in caption for caption in captions(at))


def test_uploads_give_one_result_each_and_a_bad_file_its_message_in_place(home, monkeypatch):
    run_id = finished_run_with_model_file()
    predictor = FakePredictor()
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, run: predictor))
    at = open_predict_page()
    assert at.selectbox[0].value == run_id
    at.file_uploader[0].set_value([("white.png", b"\xff" * 10, "image/png"),
                                   ("bad.png", b"garbage", "image/png"),
                                   ("small.png", b"\x00" * 10, "image/png")])
    at.run()
    assert not at.exception
    # A neutral line, not a green success box (it would be green for "0 of 1" too).
    assert not at.success
    assert any("2 of 3 image(s) predicted" in caption for caption in captions(at))
    errors = [error.value for error in at.error]
    assert len(errors) == 1 and "bad.png" in errors[0]
    assert any("Very small image" in warning.value for warning in at.warning)
    table = at.dataframe[0].value
    assert table.columns.tolist() == ["file", "result", "probability", "population", "notes", "p_pneumonia"]
    assert list(at.dataframe[0].proto.column_order) == ["file", "result", "probability", "population", "notes"]
    assert table["file"].tolist() == ["white.png", "bad.png", "small.png"]
    assert table["result"].tolist() == ["Pneumonia likely", "Could not be read", "Pneumonia unlikely"]
    assert pd.isna(table["p_pneumonia"][1])
    # What the browser shows: text in every cell (a missing value is drawn as "None"), no threshold on every row.
    shown = table[list(at.dataframe[0].proto.column_order)]
    assert shown["probability"].tolist() == ["100.0 %", "—", "0.0 %"]
    assert shown.map(lambda value: isinstance(value, str) and value not in ("None", "nan")).all().all()
    assert "threshold" not in table.columns
    assert len(at.get("download_button")) == 1
    # Original and heat map side by side, one pair per readable image.
    assert image_captions(at) == ["Original (as the model saw it)", "white.png — heat map",
                                  "Original (as the model saw it)", "small.png — heat map"]

    # Opacity redraws without predicting again.
    at.slider(key="predict_opacity").set_value(0.8)
    at.run()
    assert predictor.calls == 1

    # SHAP on request predicts again with that method; "No heat map" asks for none.
    at.button_group(key="predict_explain").set_value("shap")
    at.run()
    at.button_group(key="predict_explain").set_value("none")
    at.run()
    assert predictor.explain == ["gradcam", "shap", None]
    assert image_captions(at) == ["Original (as the model saw it)"] * 2


def test_adding_a_file_predicts_only_that_file(home, monkeypatch):
    finished_run_with_model_file()
    predictor = FakePredictor()
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, run: predictor))
    at = open_predict_page()
    first = ("first.png", b"\xff\x00", "image/png")
    at.file_uploader[0].set_value([first])
    at.run()
    at.file_uploader[0].set_value([first, ("second.png", b"\xff\xff", "image/png")])
    at.run()
    assert predictor.names == [["first.png"], ["second.png"]]
    assert at.dataframe[0].value["file"].tolist() == ["first.png", "second.png"]
    assert any("2 of 2 image(s) predicted in" in caption and "(the 1 new one(s))" in caption
               for caption in captions(at))
    # The same name with other content is another image.
    at.file_uploader[0].set_value([("first.png", b"\x00\x00", "image/png")])
    at.run()
    assert predictor.names[-1] == ["first.png"] and len(predictor.names) == 3


def test_each_answer_is_a_plain_verdict_at_the_models_operating_point(home, monkeypatch):
    finished_run_with_model_file()
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, run: FakePredictor()))
    at = open_predict_page()
    at.file_uploader[0].set_value([(f"p{value}-x.png", b"x", "image/png") for value in ("0.90", "0.55", "0.10")])
    at.run()
    assert headings(at) == ["Pneumonia likely", "Uncertain — near the threshold", "Pneumonia unlikely"]
    assert "Probability of pneumonia **55.0 %** (this model's threshold: 50 %)" in markdown_text(at)


def test_the_operating_point_is_explained_once_from_the_models_metrics(home, monkeypatch):
    run_id = finished_run_with_model_file()
    metrics = {"threshold": 0.17, "threshold_rule": "youden",
               "validation": {"sensitivity": {"value": 0.965}, "specificity": {"value": 0.941},
                              "num_pneumonia": 340, "num_normal": 135},
               "test": {"sensitivity": {"value": 0.992}, "specificity": {"value": 0.662},
                        "num_pneumonia": 390, "num_normal": 234}}
    (runs.run_path(run_id) / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, run: FakePredictor()))
    at = open_predict_page()
    at.file_uploader[0].set_value([("a.png", b"x", "image/png"), ("b.png", b"y", "image/png")])
    at.run()
    expanders = [expander for expander in at.expander if expander.label.startswith("How to read the answers")]
    assert len(expanders) == 1, "once per model, not once per image"
    assert expanders[0].label == ("How to read the answers: Pneumonia when P ≥ 17 %; on test images, never used "
                                  "to train or tune it, it found 99 % of pneumonias and cleared 66 % of normals.")
    text = "\n".join(element.value for element in expanders[0].markdown)
    assert "On its **validation** images (340 pneumonia and 135 normal images): sensitivity **96 %**" in text
    assert "On its **test** images (390 pneumonia and 234 normal images): sensitivity **99 %** (pneumonias " \
           "found), specificity **66 %**" in text


def test_an_outside_image_shows_no_label_and_its_output_only_on_request(home, monkeypatch):
    finished_run_with_model_file()
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, run: FakePredictor()))
    at = open_predict_page()
    at.file_uploader[0].set_value([("adult-p.png", b"\xff" * 9 + b"\x00", "image/png"),
                                   ("child.png", b"\xff" * 9 + b"\x00", "image/png")])
    at.run()
    assert not at.exception
    outside = [warning.value for warning in at.warning if "Outside" in warning.value]
    assert outside == [f"Outside this model's training population: {ADULT_REASON}."]
    text = markdown_text(at)
    # The in-population image has its verdict and probability; the outside one neither (90.0 % once only).
    assert headings(at) == ["Pneumonia likely"] and text.count("90.0 %") == 1
    assert image_captions(at) == ["Original (as the model saw it)", "Original (as the model saw it)",
                                  "child.png — heat map"]
    table = at.dataframe[0].value
    assert table["population"].tolist() == ["outside", "in"]
    assert table["result"].tolist() == ["Outside this model's training population", "Pneumonia likely"]
    assert table["probability"].tolist() == ["—", "90.0 %"]
    styles = at.dataframe[0].proto.arrow_data.styler.styles
    assert "#8a8f98" in styles and "row0" in styles and "row1" not in styles  # the outside row greyed

    at.toggle(key="predict_show_anyway_0").set_value(True)
    at.run()
    text = markdown_text(at)
    assert ("Model output, not reliable for this image: P(pneumonia) 90.0 % (it would read \"Pneumonia likely\")."
            in text)
    assert headings(at) == ["Pneumonia likely"], "still no bold label for the outside image"
    assert image_captions(at)[1] == "adult-p.png — heat map"


def test_example_images_ship_with_the_app_and_are_credited(home, monkeypatch):
    finished_run_with_model_file()
    predictor = FakePredictor()
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, run: predictor))
    at = open_predict_page()
    assert any("CC BY 4.0" in caption and "Kermany" in caption for caption in captions(at))
    examples = REPO_ROOT / "assets" / "examples"
    assert "CC BY 4.0" in (examples / "README.md").read_text()
    pills = at.button_group(key="predict_examples")
    pills.set_value(["normal-1.png", "pneumonia-viral.png"])
    at.run()
    assert not at.exception
    assert predictor.names == [["example normal-1.png", "example pneumonia-viral.png"]]
    assert at.dataframe[0].value["file"].tolist() == ["example normal-1.png", "example pneumonia-viral.png"]
    assert any("CC BY 4.0" in caption for caption in captions(at))
    import cv2

    for name in ("normal-1.png", "normal-2.png", "pneumonia-bacterial.png", "pneumonia-viral.png"):
        pixels = cv2.imread(str(examples / name), cv2.IMREAD_UNCHANGED)
        assert pixels.ndim == 2 and max(pixels.shape) <= 256, name  # display size, grayscale


def test_the_model_picker_names_runs_with_their_best_validation_auc(home, monkeypatch):
    path = runs.new_run("kermany-150", TrainingConfig(model="fast", image_size=32, epochs=1))
    runs.write_status(path, state="finished")
    (path / "model.keras").write_bytes(b"placeholder")
    runs.append_history_row(path, {"epoch": 1, "val_auc": 0.9123, "loss": 0.5})
    runs.append_history_row(path, {"epoch": 2, "val_auc": 0.9456, "loss": 0.4})
    at = open_predict_page()
    label = at.selectbox[0].format_func(at.selectbox[0].value)
    assert label.startswith("fast on kermany-150, ") and label.endswith(" UTC · best validation AUC 0.946")
    assert path.name not in label


def test_the_model_is_loaded_and_run_once_in_the_background_when_the_server_starts(home, monkeypatch):
    import app_components as ui

    finished_run_with_model_file()
    predictor = FakePredictor()
    loads = []
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, run: loads.append(run) or predictor))
    monkeypatch.setenv("CXR_WARM_UP", "1")
    monkeypatch.setattr(ui, "_WARM_UP", {})
    at = open_page()  # Home: the first page anyone opens
    thread = ui.warm_up_in_background()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(loads) == 1 and predictor.explain == ["gradcam"]  # loaded and run once, with Grad-CAM
    at.switch_page("pages/predict.py")
    at.run()
    at.file_uploader[0].set_value([("a.png", b"\xff", "image/png")])
    at.run()
    assert len(loads) == 1, "the first prediction used the model loaded in the background"
    assert predictor.calls == 2


def test_a_model_that_cannot_be_loaded_gives_a_clear_message(home, monkeypatch):
    finished_run_with_model_file()

    def refuse(cls, run):
        raise ModelFileError("model.keras holds a Lambda layer (Python code); refused in safe mode.")

    monkeypatch.setattr(Predictor, "load", classmethod(refuse))
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
    assert any("1 of 2 image(s) predicted" in caption for caption in captions(at))
    table = at.dataframe[0].value
    probability = table["p_pneumonia"][0]
    from cxr.predict import Predictor

    # The same model outside the page gives the same calibrated probability.
    assert probability == pytest.approx(Predictor.load(path).predict([data], names=[name])[0].probability, abs=1e-6)
    from cxr import interpretation

    assert table["result"][0] == interpretation.verdict(probability, 0.4).headline
    assert "this model's threshold: 40 %" in markdown_text(at)
    assert image_captions(at) == ["Original (as the model saw it)", f"{name} — heat map"]
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
    at.button_group(key="predict_explain").set_value("none")  # no heat maps: this test is about reading DICOM
    at.file_uploader[0].set_value([(name, (dicom / name).read_bytes(), "application/dicom") for name in files])
    at.run()
    assert not at.exception
    assert not at.error, [error.value for error in at.error]
    assert any("2 of 2 image(s) predicted" in caption for caption in captions(at))
    assert at.dataframe[0].value["file"].tolist() == files
    assert any("not chest" in warning.value for warning in at.warning)


def test_the_bundled_model_is_labelled_with_its_test_auc_else_its_validation_auc(tmp_path, monkeypatch):
    """The picker names the figure it shows; test first (validation chose the threshold and flatters it)."""
    import app_components
    from cxr import paths

    monkeypatch.setattr(paths, "BUNDLED_MODEL_DIR", tmp_path)
    assert app_components.bundled_model_label() == "Bundled model"  # no metrics.json
    (tmp_path / "metrics.json").write_text(json.dumps({"validation": {"auc": {"value": 0.9899}},
                                                       "test": {"auc": {"value": 0.9653}}}))
    assert app_components.bundled_model_label() == "Bundled model · test AUC 0.965"
    (tmp_path / "metrics.json").write_text(json.dumps({"validation": {"auc": 0.9899}}))
    assert app_components.bundled_model_label() == "Bundled model · validation AUC 0.990"
    (tmp_path / "metrics.json").write_text("{not json")
    assert app_components.bundled_model_label() == "Bundled model"
