"""Demo mode in the app (AppTest): Data and Train refused, only the operator's models, nothing written under
CXR_HOME by a prediction, every per-session limit, the audit log, and a bad setting that stops the app."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import streamlit as st
from helpers_app import open_page, prepare_app

from cxr import runs
from cxr.config import TrainingConfig
from cxr.predict import Predictor

PAGES = {"data": "pages/data.py", "train": "pages/train.py", "predict": "pages/predict.py",
         "evaluate": "pages/evaluate.py"}
DEMO_VARIABLES = ("CXR_MODE", "CXR_DEMO_MODELS", "CXR_DEMO_MAX_FILES", "CXR_DEMO_MAX_MB",
                  "CXR_DEMO_PREDICTIONS_PER_MINUTE", "CXR_DEMO_ALLOW_SHAP", "CXR_AUDIT_LOG")


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in DEMO_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("CXR_HOME", str(home))
    prepare_app(monkeypatch, bundled_model=tmp_path / "no-bundled-model")
    yield home
    st.cache_resource.clear()
    st.cache_data.clear()


def demo(monkeypatch, **variables) -> None:
    monkeypatch.setenv("CXR_MODE", "demo")
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))


def finished_run(*, real_model: bool = False) -> str:
    """A finished run with a model: a real tiny Keras model (``real_model``) or a placeholder file."""
    path = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=1))
    runs.write_status(path, state="finished")
    if real_model:
        from cxr import models

        models.build_model("fast", (32, 32, 1)).save(path / "model.keras")
        (path / "metrics.json").write_text(json.dumps({"threshold": 0.4, "threshold_rule": "fixed",
                                                       "temperature": 1.0}))
    else:
        (path / "model.keras").write_bytes(b"placeholder: the predictor is patched in these tests")
    return path.name


class CountingPredictor:
    """Answers like cxr.predict.Predictor (P = share of 0xff bytes) and counts the images it was given."""

    def __init__(self):
        self.images = 0

    def predict(self, sources, *, names=None, explain=None):
        import numpy as np

        from cxr.predict import PredictionResult

        self.images += len(sources)
        results = []
        for data, name in zip(sources, names, strict=True):
            probability = data.count(b"\xff") / max(len(data), 1)
            results.append(PredictionResult(name=name, probability=probability, threshold=0.5,
                                            label="pneumonia" if probability >= 0.5 else "normal",
                                            image=np.full((32, 32), 128, np.uint8)))
        return results


def patched_predictor(monkeypatch) -> CountingPredictor:
    predictor = CountingPredictor()
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, run: predictor))
    return predictor


def upload(at, files: list[tuple[str, bytes]]) -> None:
    at.file_uploader[0].set_value([(name, data, "image/png") for name, data in files])
    at.run()
    assert not at.exception, at.exception


def warnings_of(at) -> list[str]:
    return [warning.value for warning in at.warning]


def sidebar_text(at) -> str:
    return " ".join(str(getattr(element, "value", "")) for element in at.sidebar)


# --------------------------------------------------------------------------------------- Data and Train


@pytest.mark.parametrize(("page", "title"), [("data", "Data"), ("train", "Train")])
def test_demo_refuses_data_and_train_with_a_message_and_no_controls(home, monkeypatch, page, title):
    from helpers_app import import_tiny_dataset

    import_tiny_dataset(home.parent)  # something to train on, so the full page would show its controls
    full = open_page(PAGES[page])
    assert full.button or full.text_input or full.selectbox  # the same page in full mode has controls
    demo(monkeypatch)
    at = open_page(PAGES[page])
    assert any(f"The {title} page is not available on this public demo" in error.value for error in at.error)
    assert not at.button and not at.text_input and not at.selectbox and not at.slider and not at.file_uploader
    assert not at.number_input and not at.toggle


def menu_labels(at) -> list[str]:
    return [link.proto.label for link in at.sidebar.get("page_link")]


def test_the_demo_menu_leaves_data_and_train_out(home, monkeypatch):
    assert menu_labels(open_page()) == ["Home", "Data", "Train", "Evaluate", "Predict"]
    demo(monkeypatch)
    for page in (None, PAGES["predict"], PAGES["train"]):
        assert menu_labels(open_page(page)) == ["Home", "Evaluate", "Predict"]
    home_page = open_page()
    links = [link.proto.label for link in home_page.main.get("page_link")]
    assert links and not any("Data" in label or "Train" in label for label in links)
    assert not any("Data** page" in info.value for info in home_page.info)


def main_text(at) -> str:
    return " ".join(str(getattr(element, "value", "")) for element in at.main)


def test_the_demo_home_speaks_to_a_visitor_not_to_an_operator(home, monkeypatch):
    from helpers_app import import_tiny_dataset
    from helpers_app import metric_values as metrics

    import_tiny_dataset(home.parent)  # a data set the full Home counts and the demo Home must not mention
    full = open_page()
    assert set(metrics(full)) == {"Data sets imported", "Models available", "Training"}
    assert metrics(full)["Data sets imported"] == "1" and metrics(full)["Training"] == "idle"

    demo(monkeypatch, CXR_DEMO_MAX_FILES=7, CXR_DEMO_PREDICTIONS_PER_MINUTE=12, CXR_DEMO_MAX_MB=25)
    at = open_page()
    assert not at.exception and not at.error
    assert not at.get("metric"), "no data-set, model or training status on a demo's Home"
    text = main_text(at)
    assert "data set" not in text.lower() and "training run" not in text.lower() and "idle" not in text
    # The operator's limits, as set, not the defaults.
    assert "7 files per upload" in text and "12 images per minute" in text and "25 MB" in text
    assert "population check" in text and "withholds the answer" in text
    links = [(link.proto.label, link.proto.page) for link in at.main.get("page_link")]
    assert links[0] == ("Predict on your chest X-ray", "predict")
    assert any("not a diagnostic device" in warning.value for warning in at.warning)
    # No model at all (the bundled one is missing in these tests): the visitor is told, not sent to a dead end.
    assert any("no model to predict with" in warning.value for warning in at.warning)


def test_the_demo_home_has_no_missing_model_warning_when_a_model_is_offered(home, monkeypatch):
    run_id = finished_run()
    demo(monkeypatch, CXR_DEMO_MODELS=run_id)
    at = open_page()
    assert not any("no model to predict with" in warning.value for warning in at.warning)
    assert "10 files per upload" in main_text(at) and "30 images per minute" in main_text(at)  # the defaults


def test_the_sidebar_says_it_is_a_demo_and_what_it_does_not_do(home, monkeypatch):
    assert "Public demo" not in sidebar_text(open_page(PAGES["predict"]))
    demo(monkeypatch)
    text = sidebar_text(open_page(PAGES["predict"]))
    assert "Public demo" in text and "does not train models" in text and "writes nothing you upload" in text
    assert "images in the last minute" in text


def test_a_bad_setting_stops_every_page_with_its_message(home, monkeypatch):
    monkeypatch.setenv("CXR_MODE", "dmeo")
    for page in ("train", "predict"):
        at = open_page(PAGES[page])
        messages = [error.value for error in at.error]
        assert any("misconfigured" in message and "CXR_MODE" in message and "'dmeo'" in message
                   for message in messages)
        assert not at.button and not at.file_uploader and not at.selectbox


# ------------------------------------------------------------------------------------------- models


def test_demo_offers_only_the_models_the_operator_listed(home, monkeypatch):
    listed = finished_run()
    finished_run()  # a second run the operator did not list
    full = open_page(PAGES["predict"])
    assert len(full.selectbox[0].options) == 2
    demo(monkeypatch, CXR_DEMO_MODELS=f"{listed},missing-run")
    at = open_page(PAGES["predict"])
    assert len(at.selectbox[0].options) == 1 and at.selectbox[0].value == listed
    at.switch_page(PAGES["evaluate"])
    at.run()
    assert not at.exception
    assert len(at.selectbox[0].options) == 1 and at.selectbox[0].value == listed


# --------------------------------------------------------------------------------- nothing on disk


def file_list(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder``: relative path -> (size, modification time in ns)."""
    found = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(root) / name
            stat = path.stat()
            found[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return found


def test_a_demo_prediction_writes_nothing_under_cxr_home(home, monkeypatch, tmp_path):
    import cv2
    import numpy as np

    run_id = finished_run(real_model=True)  # the real loading and prediction path, Grad-CAM included
    demo(monkeypatch, CXR_DEMO_MODELS=run_id)
    before = file_list(home)
    at = open_page(PAGES["predict"], timeout=180)
    pixels = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    upload(at, [("xray.png", cv2.imencode(".png", pixels)[1].tobytes()), ("bad.png", b"not an image")])
    table = at.dataframe[0].value
    assert table["file"].tolist() == ["xray.png", "bad.png"] and 0.0 <= table["p_pneumonia"][0] <= 1.0
    assert len(at.get("download_button")) == 1  # the results still go home with the visitor, as CSV
    at.switch_page(PAGES["evaluate"])
    at.run()
    assert not at.exception
    assert file_list(home) == before


# ------------------------------------------------------------------------------------------- limits


def test_files_per_upload_limit(home, monkeypatch):
    predictor = patched_predictor(monkeypatch)
    demo(monkeypatch, CXR_DEMO_MODELS=finished_run(), CXR_DEMO_MAX_FILES=2)
    at = open_page(PAGES["predict"])
    upload(at, [(f"{index}.png", b"\xff" * 10) for index in range(3)])
    assert any("You dropped 3 images" in text and "at most 2 per upload" in text for text in warnings_of(at))
    assert predictor.images == 0 and not at.dataframe
    upload(at, [(f"{index}.png", b"\xff" * 10) for index in range(2)])
    assert predictor.images == 2 and at.dataframe[0].value["file"].tolist() == ["0.png", "1.png"]


def test_megabytes_per_session_limit(home, monkeypatch):
    predictor = patched_predictor(monkeypatch)
    demo(monkeypatch, CXR_DEMO_MODELS=finished_run(), CXR_DEMO_MAX_MB=1)
    at = open_page(PAGES["predict"])
    upload(at, [("a.png", b"\xff" * 600_000)])
    assert predictor.images == 1
    upload(at, [("b.png", b"\x00" * 600_000)])  # 1.2 MB in all: over the session's 1 MB
    assert any("at most 1 MB of images per session" in text for text in warnings_of(at))
    assert predictor.images == 1
    upload(at, [("c.png", b"\x00" * 300_000)])  # still fits
    assert predictor.images == 2


def test_predictions_per_minute_limit(home, monkeypatch):
    predictor = patched_predictor(monkeypatch)
    demo(monkeypatch, CXR_DEMO_MODELS=finished_run(), CXR_DEMO_PREDICTIONS_PER_MINUTE=3)
    at = open_page(PAGES["predict"])
    upload(at, [("a.png", b"\xff"), ("b.png", b"\x00")])
    assert "This session: 2 of 3 images in the last minute" in sidebar_text(at)  # counts this run's images
    upload(at, [("c.png", b"\xff"), ("d.png", b"\x00")])  # 4 in a minute: refused
    assert any("at most 3 images per minute" in text and "Try again in" in text for text in warnings_of(at))
    assert predictor.images == 2
    upload(at, [("e.png", b"\xff")])  # 3 in a minute: still allowed
    assert predictor.images == 3


def test_shap_is_not_offered_on_a_demo_unless_allowed(home, monkeypatch):
    predictor = patched_predictor(monkeypatch)
    run_id = finished_run()
    full = open_page(PAGES["predict"])
    assert "SHAP (slower)" in full.button_group(key="predict_explain").options
    demo(monkeypatch, CXR_DEMO_MODELS=run_id)
    at = open_page(PAGES["predict"])
    assert "SHAP (slower)" not in at.button_group(key="predict_explain").options
    assert "Grad-CAM (fast)" in at.button_group(key="predict_explain").options
    monkeypatch.setenv("CXR_DEMO_ALLOW_SHAP", "true")
    at = open_page(PAGES["predict"])
    at.button_group(key="predict_explain").set_value("shap")
    upload(at, [("a.png", b"\xff")])
    assert predictor.images == 1 and not any("SHAP" in text for text in warnings_of(at))


def test_full_mode_has_no_limits(home, monkeypatch):
    predictor = patched_predictor(monkeypatch)
    finished_run()
    monkeypatch.setenv("CXR_DEMO_MAX_FILES", "1")  # ignored outside demo mode
    at = open_page(PAGES["predict"])
    upload(at, [(f"{index}.png", b"\xff") for index in range(5)])
    assert predictor.images == 5


# --------------------------------------------------------------------------------------- audit log


@pytest.mark.parametrize("mode", ["full", "demo"])
def test_each_prediction_leaves_one_audit_line(home, monkeypatch, tmp_path, mode):
    predictor = patched_predictor(monkeypatch)
    run_id = finished_run()
    log = tmp_path / "audit" / "audit.jsonl"
    monkeypatch.setenv("CXR_AUDIT_LOG", str(log))
    if mode == "demo":
        demo(monkeypatch, CXR_DEMO_MODELS=run_id)
    at = open_page(PAGES["predict"])
    files = [("white.png", b"\xff" * 4), ("half.png", b"\xff\x00")]
    upload(at, files)
    at.slider(key="predict_opacity").set_value(0.8)  # a redraw is not a prediction
    at.run()
    assert predictor.images == 2
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    model_sha = hashlib.sha256((runs.run_path(run_id) / "model.keras").read_bytes()).hexdigest()
    assert [line["sha256"] for line in lines] == [hashlib.sha256(data).hexdigest() for _, data in files]
    assert [line["probability"] for line in lines] == [1.0, 0.5]
    assert [line["label"] for line in lines] == ["pneumonia", "pneumonia"]
    assert {line["model_id"] for line in lines} == {run_id}
    assert {line["model_version"] for line in lines} == {model_sha[:16]}
    assert "white.png" not in log.read_text()


def test_an_unwritable_audit_log_is_reported_and_the_results_still_shown(home, monkeypatch, tmp_path):
    patched_predictor(monkeypatch)
    finished_run()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CXR_AUDIT_LOG", str(blocker / "audit.jsonl"))  # its folder cannot be made
    at = open_page(PAGES["predict"])
    upload(at, [("a.png", b"\xff")])
    assert any("could not be recorded in the server's audit log" in text for text in warnings_of(at))
    assert at.dataframe[0].value["file"].tolist() == ["a.png"]


# --------------------------------------------------------------------------------------------- Evaluate


@pytest.mark.parametrize("mode", ["full", "demo"])
def test_evaluate_shows_the_bundled_model_read_only(home, monkeypatch, mode):
    from cxr import paths

    bundled = paths.PROJECT_ROOT / "models" / "default"
    if not (bundled / "predictions.csv").is_file():
        pytest.skip("no bundled model with its evaluation in this checkout")
    monkeypatch.setattr(paths, "BUNDLED_MODEL_DIR", bundled)
    if mode == "demo":
        demo(monkeypatch)
    before = file_list(home) | {f"bundled/{name}": value for name, value in file_list(bundled).items()}
    at = open_page(PAGES["evaluate"], timeout=120)
    assert at.selectbox[0].value == "default"
    assert any(metric.label == "Saved threshold" for metric in at.metric)
    threshold = next(slider for slider in at.slider if slider.label.startswith("Call pneumonia"))
    threshold.set_value(0.9)
    at.run()
    assert not at.exception
    assert not [button for button in at.button if button.label.startswith("Save ")]
    expected = ("Saving a threshold is off on this public demo." if mode == "demo"
                else "The bundled model's threshold is not changed from the app.")
    assert any(expected in caption.value for caption in at.caption)
    after = file_list(home) | {f"bundled/{name}": value for name, value in file_list(bundled).items()}
    assert after == before
