"""The Evaluate page (AppTest): no run yet, a failed run, a running run, a finished run with hand-computed
sensitivity/specificity under the threshold slider (no change shown on open, reset, save as a manual choice),
the images of a confusion-matrix cell with their file names (heat maps patched), downloads, and a run
finalized by the real cxr.run_results.write_run_results."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_app import open_page, prepare_app, widget

import app_components as ui
from cxr import evaluation, runs
from cxr.atomic import atomic_write_json
from cxr.config import TrainingConfig
from cxr.predict import PredictionResult
from cxr.run_results import write_run_results

# Test split: 4 normal, 4 pneumonia. At 0.5: normal .6 is a false positive, pneumonia .4 a false negative.
TEST_TRUE = [0, 0, 0, 0, 1, 1, 1, 1]
TEST_SCORE = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    prepare_app(monkeypatch)
    return tmp_path


def import_tiny_dataset(folder: Path) -> None:
    """A folder of named PNGs imported as "tiny": its test split is TEST_TRUE's 4 normal then 4 pneumonia."""
    import cv2

    from cxr import datasets
    from cxr.config import DataConfig

    root = folder / "tiny-source"
    generator = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 4)):
        for folder_name in ("NORMAL", "PNEUMONIA"):
            (root / split / folder_name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                name = f"{folder_name.lower()}-{split}-{index}.png"
                cv2.imwrite(str(root / split / folder_name / name), generator.integers(0, 255, (32, 32), np.uint8))
    datasets.import_dataset(root, name="tiny", config=DataConfig(image_size=32))
    assert datasets.load_dataset("tiny").labels("test").tolist() == TEST_TRUE


def make_run(state: str, **status) -> str:
    path = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=2))
    runs.write_status(path, state=state, **status)
    return path.name


def write_evaluation(run_id: str, threshold: float = 0.5) -> None:
    """metrics.json and predictions.csv as the run-directory contract describes them."""
    path = runs.run_path(run_id)
    frame = pd.DataFrame({"split": "test", "index": range(len(TEST_TRUE)), "y_true": TEST_TRUE,
                          "y_score": TEST_SCORE})
    frame.to_csv(path / "predictions.csv", index=False)
    metrics = {"threshold": threshold, "threshold_rule": "youden", "temperature": 1.0,
               "validation": {}, "test": evaluation.binary_metrics(TEST_TRUE, TEST_SCORE, threshold,
                                                                   bootstrap_resamples=50)}
    atomic_write_json(path / "metrics.json", metrics)
    (path / "model_card.md").write_text("# Model card\n\nIntended use: teaching.\n")


def open_evaluate_page():
    return open_page("pages/evaluate.py")


def metric(at, label: str) -> str:
    return widget(at, "metric", label).value


def test_without_runs_the_page_points_to_training(home, monkeypatch):
    from cxr import paths

    monkeypatch.setattr(paths, "BUNDLED_MODEL_DIR", home / "no-bundled-model")  # nothing at all to evaluate
    at = open_evaluate_page()
    assert any("No training run yet" in info.value for info in at.info)


def test_a_failed_run_shows_why_and_no_evaluation(home):
    make_run("failed", error="the data set 'tiny' has one class in validation")
    at = open_evaluate_page()
    messages = [error.value for error in at.error]
    assert len(messages) == 1 and "one class in validation" in messages[0]
    assert not at.slider


def test_a_running_run_says_the_evaluation_comes_later(home):
    make_run("running", pid=os.getpid())
    at = open_evaluate_page()
    assert any("still running" in info.value for info in at.info)


def test_threshold_slider_updates_sensitivity_specificity_and_matrix(home):
    import_tiny_dataset(home)
    run_id = make_run("finished")
    write_evaluation(run_id)
    at = open_evaluate_page()
    assert not [error.value for error in at.error]
    assert metric(at, "Sensitivity (pneumonia recall)") == "75.0 %"
    assert metric(at, "Specificity (normal recall)") == "75.0 %"
    assert metric(at, "Saved threshold") == "0.500"
    report = at.dataframe[0].value
    assert report.loc["pneumonia", "recall"] == pytest.approx(0.75)
    # confusion matrix, ROC, PR and calibration charts
    assert len(at.get("vega_lite_chart")) == 4
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert [param["name"] for param in spec.get("params", [])] == ["cell"], "the matrix answers clicks on cells"

    at.slider[0].set_value(0.35)
    at.run()
    assert metric(at, "Sensitivity (pneumonia recall)") == "100.0 %"
    assert metric(at, "Specificity (normal recall)") == "75.0 %"
    assert metric(at, "Accuracy") == "87.5 %"
    matrix_spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert "0.35" in json.dumps(matrix_spec.get("title"))

    # Downloads: metrics CSV and JSON, predictions CSV; the model card is shown.
    assert len(at.get("download_button")) == 3
    assert any("Intended use: teaching." in markdown.value for markdown in at.markdown)


def deltas(at) -> list:
    return [widget(at, "metric", label).delta for label in ("Sensitivity (pneumonia recall)",
                                                             "Specificity (normal recall)")]


def test_opening_shows_the_saved_threshold_without_a_change_and_reset_returns_to_it(home):
    run_id = make_run("finished")
    write_evaluation(run_id, threshold=0.3456)  # not on the slider's 0.01 grid: rounding it moved a case before
    at = open_evaluate_page()
    assert at.slider[0].value == pytest.approx(0.3456)
    assert deltas(at) == ["", ""], "nothing was moved, so nothing may read as changed"
    assert metric(at, "Sensitivity (pneumonia recall)") == "100.0 %"
    reset = widget(at, "button", "Reset to the saved threshold")
    assert reset.disabled
    at.slider[0].set_value(0.5)
    at.run()
    assert deltas(at) == ["-25.0 pts vs saved", ""]
    widget(at, "button", "Reset to the saved threshold").click()
    at.run()
    assert at.slider[0].value == pytest.approx(0.3456) and deltas(at) == ["", ""]


def test_a_new_threshold_is_saved_to_the_run_as_a_manual_choice(home):
    run_id = make_run("finished")
    write_evaluation(run_id, threshold=0.5)
    at = open_evaluate_page()
    at.slider[0].set_value(0.35)
    at.run()
    widget(at, "button", "Save 0.35 as this run's threshold").click()
    at.run()
    assert not at.exception and not at.error
    written = json.loads((runs.run_path(run_id) / "metrics.json").read_text())
    assert written["threshold"] == pytest.approx(0.35) and written["threshold_rule"] == "manual"
    assert written["threshold_history"][0]["threshold"] == 0.5
    assert any("Saved 0.35 as this run's threshold" in info.value for info in at.info)
    assert metric(at, "Saved threshold") == "0.350"
    assert deltas(at) == ["", ""]
    assert widget(at, "button", "Reset to the saved threshold").disabled


def test_a_confusion_matrix_cell_shows_its_images_with_file_names(home):
    import_tiny_dataset(home)
    run_id = make_run("finished")
    write_evaluation(run_id)
    at = open_evaluate_page()
    assert not at.get("image"), "no image (nor the data set) is loaded before a group is chosen"
    group = at.button_group(key=ui.KEY_EVALUATION_GROUP)
    group.set_value("fn")
    at.run()
    captions = [image.proto.imgs[0].caption for image in at.get("image")]
    assert captions == ["pneumonia-test-0.png: true pneumonia, P(pneumonia) 0.40"]
    at.button_group(key=ui.KEY_EVALUATION_GROUP).set_value("tn")
    at.run()
    captions = [image.proto.imgs[0].caption for image in at.get("image")]
    assert captions == [f"normal-test-{index}.png: true normal, P(pneumonia) {score:.2f}"
                        for index, score in ((0, 0.1), (1, 0.2), (2, 0.3))]


def test_misclassified_images_with_heat_maps(home, monkeypatch):
    import_tiny_dataset(home)
    run_id = make_run("finished")
    write_evaluation(run_id)
    calls = []

    class FakePredictor:
        def predict(self, sources, *, names=None, explain=None):
            calls.append({"sources": [np.array(source) for source in sources], "names": list(names),
                          "explain": explain})
            return [PredictionResult(name=name, probability=0.5, label="normal", threshold=0.5, image=image,
                                     heatmap=np.ones(image.shape, np.float32)) for image, name in zip(sources, names,
                                                                                                      strict=True)]

    monkeypatch.setattr(ui, "load_predictor", lambda choice, version: FakePredictor())
    at = open_evaluate_page()
    at.button_group(key=ui.KEY_EVALUATION_GROUP).set_value("misclassified")
    at.run()
    assert any('2 test image(s) in "All mistakes" at 0.50' in caption.value for caption in at.caption)
    plain = [item.proto.imgs[0].url for item in at.get("image")]
    assert len(plain) == 2 and not calls  # no model is loaded until heat maps are asked for
    next(toggle for toggle in at.toggle if toggle.label == "Heat maps (Grad-CAM)").set_value(True)
    at.run()
    assert not [error.value for error in at.error]
    # Grad-CAM ran once, on exactly the two misclassified test images (#3: normal at 0.6, #4: pneumonia at 0.4).
    assert len(calls) == 1 and calls[0]["explain"] == "gradcam"
    indexes = {"normal-test-3.png": 3, "pneumonia-test-0.png": 4}  # heat maps named by file
    assert sorted(calls[0]["names"]) == sorted(indexes)
    from cxr.datasets import load_dataset

    test_images = load_dataset("tiny").images("test")
    for name, source in zip(calls[0]["names"], calls[0]["sources"], strict=True):
        np.testing.assert_array_equal(source, test_images[indexes[name]])
    # Every picture shown is now the overlay, not the plain image shown before.
    overlays = [item.proto.imgs[0].url for item in at.get("image")]
    assert len(overlays) == 2 and not set(overlays) & set(plain)


def test_a_run_finalized_by_the_real_evaluation_renders(home):
    import_tiny_dataset(home)
    run_id = make_run("finished")
    generator = np.random.default_rng(0)
    val_true = np.array([0, 1] * 10)
    write_run_results(runs.run_path(run_id), val_true=val_true,
                      val_score=np.clip(val_true * 0.6 + generator.random(20) * 0.4, 0, 1),
                      test_true=np.array(TEST_TRUE), test_score=np.array(TEST_SCORE))
    at = open_evaluate_page()
    assert not [error.value for error in at.error], [error.value for error in at.error]
    assert len(at.get("vega_lite_chart")) == 4
    at.radio[0].set_value("val")
    at.run()
    assert not [error.value for error in at.error]
    assert at.dataframe[0].value.loc["accuracy", "support"] == 20
    at.button_group(key=ui.KEY_EVALUATION_GROUP).set_value("tp")
    at.run()
    # These 20 validation scores do not belong to the data set's val split: no pictures shown.
    assert any("are not the ones this run was evaluated on" in caption.value for caption in at.caption)
    assert not at.get("image")


def test_a_public_demo_cannot_save_a_threshold(home, monkeypatch):
    monkeypatch.setenv("CXR_MODE", "demo")
    run_id = make_run("finished")
    write_evaluation(run_id, threshold=0.5)
    monkeypatch.setenv("CXR_DEMO_MODELS", run_id)
    at = open_evaluate_page()
    at.slider[0].set_value(0.35)
    at.run()
    assert not [button for button in at.button if button.label.startswith("Save ")]
    assert any("Saving a threshold is off on this public demo." in caption.value for caption in at.caption)


def test_the_model_is_exported_for_download(home, monkeypatch):
    from cxr import export

    run_id = make_run("finished")
    write_evaluation(run_id)
    (runs.run_path(run_id) / "model.keras").write_bytes(b"placeholder: the export is patched")
    exported = []

    def fake_export_zip(predictor, format, *, name="cxr-model"):
        exported.append((predictor, format, name))
        return f"{name}-{format}.zip", b"PK zip bytes"

    monkeypatch.setattr(export, "export_zip", fake_export_zip)
    monkeypatch.setattr(ui, "load_predictor", lambda choice, version: f"predictor of {choice}")
    at = open_evaluate_page()
    assert len(at.get("download_button")) == 3 and not exported  # nothing exported before it is asked for
    widget(at, "button", "Prepare the export").click()
    at.run()
    assert exported == [(f"predictor of {run_id}", "tflite", f"cxr-{run_id}")]
    assert at.get("download_button")[-1].proto.label == f"Download cxr-{run_id}-tflite.zip"
    at.button_group(key=ui.KEY_EXPORT_FORMAT).set_value("savedmodel")
    at.run()
    assert len(at.get("download_button")) == 3, "the prepared file was TFLite, not a SavedModel"


def test_a_failed_export_is_a_message(home, monkeypatch):
    from cxr import export

    run_id = make_run("finished")
    write_evaluation(run_id)
    (runs.run_path(run_id) / "model.keras").write_bytes(b"placeholder")

    def refuse(predictor, format, *, name="cxr-model"):
        raise export.CxrError("this model has a layer TFLite cannot convert")

    monkeypatch.setattr(export, "export_zip", refuse)
    monkeypatch.setattr(ui, "load_predictor", lambda choice, version: object())
    at = open_evaluate_page()
    widget(at, "button", "Prepare the export").click()
    at.run()
    assert [error.value for error in at.error] == [
        "Exporting the model failed: this model has a layer TFLite cannot convert"]
