"""Tests of cxr.predict: loading (safe mode), calibration and threshold applied, mixed sources, warnings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cxr import paths
from cxr.errors import CxrError, ModelFileError
from cxr.model_files import load_model_file
from cxr.predict import PredictionResult, Predictor, input_warnings

SIZE = 32
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def brightness_model(size: int = SIZE, *, conv: bool = False):
    """P(pneumonia) = sigmoid(10 * mean(pixels) / 255 - 5): hand-computable, with cxr's layer names.

    With ``conv`` a 1x1 convolution (weight 1, no bias, linear) comes first so Grad-CAM has a layer."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    if conv:
        conv_layer = layers.Conv2D(1, 1, use_bias=False, name="conv")
        x = conv_layer(x)
        conv_layer.set_weights([np.ones((1, 1, 1, 1), np.float32)])
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(1, name="logit")
    logit = dense(x)
    dense.set_weights([np.array([[10.0]], np.float32), np.array([-5.0], np.float32)])
    outputs = layers.Activation("sigmoid", name="probability")(logit)
    return keras.Model(inputs, outputs)


def expected_logit(image: np.ndarray) -> float:
    return 10.0 * float(np.asarray(image, np.float64).mean()) / 255.0 - 5.0


def save_model_folder(folder: Path, *, threshold=0.3, temperature=2.0, conv=False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    brightness_model(conv=conv).save(folder / "model.keras")
    metrics = {
        "threshold": threshold,
        "threshold_rule": "youden",
        "temperature": temperature,
        "validation": {},
        "test": {},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def png_bytes(image: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", image)
    assert ok  # test helper: encoding a valid array cannot fail
    return encoded.tobytes()


@pytest.fixture
def model_folder(tmp_path) -> Path:
    return save_model_folder(tmp_path / "model")


def test_from_file_applies_temperature_and_threshold(model_folder):
    predictor = Predictor.load(model_folder / "model.keras")
    assert predictor.image_size == SIZE and predictor.threshold == 0.3 and predictor.temperature == 2.0
    dark = np.full((SIZE, SIZE), 60, np.uint8)  # logit 10*60/255-5 = -2.65
    bright = np.full((SIZE, SIZE), 200, np.uint8)  # logit +2.84
    results = predictor.predict([dark, bright])
    for result, image in zip(results, (dark, bright), strict=True):
        z = expected_logit(image)
        assert result.raw_probability == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-5)
        assert result.probability == pytest.approx(1 / (1 + math.exp(-z / 2.0)), abs=1e-5)
        assert result.label == ("pneumonia" if result.probability >= 0.3 else "normal")
        assert result.threshold == 0.3 and result.error is None and result.image.shape == (SIZE, SIZE)
    assert results[0].label == "normal" and results[1].label == "pneumonia"
    # Calibration pulls both towards 0.5 (T = 2 > 1).
    assert (
        results[0].raw_probability < results[0].probability < 0.5 < results[1].probability < results[1].raw_probability
    )


def test_threshold_decides_the_label(tmp_path):
    # P(calibrated) of a mid-gray image (128): sigmoid(0.0196/2) ~ 0.5049: pneumonia at 0.5, normal at 0.6.
    image = np.full((SIZE, SIZE), 128, np.uint8)
    low = Predictor.load(save_model_folder(tmp_path / "a", threshold=0.5) / "model.keras")
    high = Predictor.load(save_model_folder(tmp_path / "b", threshold=0.6) / "model.keras")
    assert low.predict(image)[0].label == "pneumonia" and high.predict(image)[0].label == "normal"


def test_mixed_sources_bad_file_gets_its_own_error(model_folder, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(np.full((120, 120), 200, np.uint8)))
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    predictor = Predictor.load(model_folder / "model.keras")
    results = predictor.predict(
        [str(good), bad, png_bytes(np.full((120, 120), 30, np.uint8)), tmp_path / "missing.png"]
    )
    assert [result.ok for result in results] == [True, False, True, False]
    assert results[0].name == "good.png" and results[0].info.format == "png" and results[0].label == "pneumonia"
    assert "notes.png" in results[1].error and results[1].probability is None
    assert results[2].label == "normal" and results[2].name == "image 3"
    assert "missing.png" in results[3].error
    row = results[1].to_row()
    assert row["file"] == "notes.png" and row["error"]


def test_bad_array_and_bad_arguments(model_folder):
    predictor = Predictor.load(model_folder / "model.keras")
    (result,) = predictor.predict([np.zeros((SIZE, SIZE), np.float64)])
    assert "uint8" in result.error
    with pytest.raises(CxrError, match="explain"):
        predictor.predict([np.zeros((SIZE, SIZE), np.uint8)], explain="lime")
    with pytest.raises(CxrError, match="one name per source"):
        predictor.predict([np.zeros((SIZE, SIZE), np.uint8)], names=["a", "b"])


def test_warnings_for_inputs_unlike_training_data(model_folder, tmp_path):
    import cv2

    predictor = Predictor.load(model_folder / "model.keras")
    wide = png_bytes(np.full((120, 360), 128, np.uint8))
    small = png_bytes(np.full((50, 50), 128, np.uint8))
    generator = np.random.default_rng(0)
    photo = generator.integers(0, 256, (120, 120, 3), dtype=np.uint8)
    photo[..., 0] = 250
    photo[..., 2] = 5  # strongly coloured: far from a gray X-ray
    ok, photo_bytes = cv2.imencode(".png", photo)
    normal = png_bytes(np.full((200, 180), 128, np.uint8))
    results = predictor.predict([wide, small, photo_bytes.tobytes(), normal], names=["wide", "small", "photo", "ok"])
    assert all(result.ok for result in results)  # warned, never refused
    assert any("aspect ratio 3.0:1" in text for text in results[0].warnings)
    assert any("small" in text for text in results[1].warnings)
    assert any("photograph" in text for text in results[2].warnings)
    assert results[3].warnings == []


def test_input_warnings_for_dicom_body_part():
    from cxr.pixels import ImageInfo

    leg = ImageInfo(
        name="leg.dcm",
        format="dicom",
        width=1000,
        height=1200,
        mode="monochrome1",
        bit_depth=12,
        body_part="EXTREMITY",
        modality="CR",
    )
    chest = ImageInfo(
        name="chest.dcm",
        format="dicom",
        width=1000,
        height=1000,
        mode="monochrome2",
        bit_depth=8,
        body_part="CHEST",
        modality="CR",
    )
    assert any("EXTREMITY" in text for text in input_warnings(leg))
    assert input_warnings(chest) == []


def test_real_dicom_files(model_folder):
    dicom = SHARED_DATA / "dicom"
    if not dicom.is_dir():
        pytest.skip(f"real data not found at {dicom}")
    predictor = Predictor.load(model_folder / "model.keras")
    results = predictor.predict([dicom / "CR-MONO1-10-chest.dcm", dicom / "RG3_J2KI_tibia.dcm"])
    assert all(result.ok for result in results), [result.error for result in results]
    assert not any("body part" in text for text in results[0].warnings)
    assert any("body part" in text for text in results[1].warnings)


def test_lambda_model_is_refused_with_safe_mode_message(tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.Lambda(lambda tensor: tensor * 2.0)(inputs)
    outputs = layers.Dense(1, activation="sigmoid")(layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelFileError, match="safe mode"):
        Predictor.load(path)


def test_damaged_and_foreign_model_files(tmp_path, model_folder):
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes((model_folder / "model.keras").read_bytes()[:500])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model_file(truncated)
    text = tmp_path / "text.keras"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a valid .keras"):
        load_model_file(text)
    legacy = tmp_path / "old.h5"
    legacy.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(ModelFileError, match="safe mode"):
        load_model_file(legacy)
    with pytest.raises(ModelFileError, match="No model file"):
        load_model_file(tmp_path / "nothing.keras")


def test_model_with_colour_input_is_refused(tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(layers.GlobalAveragePooling2D()(inputs)))
    model.save(tmp_path / "rgb.keras")
    with pytest.raises(ModelFileError, match=r"\(None, s, s, 1\)"):
        load_model_file(tmp_path / "rgb.keras")


def test_default_without_bundled_model_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "BUNDLED_MODEL_DIR", tmp_path / "models" / "default")
    with pytest.raises(ModelFileError, match="No bundled model"):
        Predictor.load("default")
    save_model_folder(tmp_path / "models" / "default")
    assert Predictor.load("default").threshold == 0.3
    assert Predictor.load(None).source == "bundled default model"


def test_model_without_metrics_is_uncalibrated(tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    brightness_model().save(folder / "model.keras")
    predictor = Predictor.load(folder / "model.keras")
    assert predictor.threshold == 0.5 and predictor.temperature == 1.0 and predictor.notes


def test_from_run_and_load_by_run_id(cxr_home):
    run = cxr_home / "runs" / "20250101-000000-fast-abcd"
    save_model_folder(run, threshold=0.4, temperature=1.5)
    (run / "config.json").write_text(json.dumps({"version": 1, "dataset": "nowhere", "training": {"model": "fast"}}))
    predictor = Predictor.load(run.name)
    assert predictor.threshold == 0.4 and predictor.temperature == 1.5 and predictor.source == f"run {run.name}"
    assert Predictor.load(str(run)).threshold == 0.4
    with pytest.raises(ModelFileError, match="neither"):
        Predictor.load("no-such-run")
    # SHAP needs the run's training images; the data set is missing, so the answer comes with a warning.
    (result,) = predictor.predict([np.full((SIZE, SIZE), 90, np.uint8)], explain="shap")
    assert result.ok and result.heatmap is None and any("background" in text for text in result.warnings)


def test_explanations_attached(tmp_path):
    folder = save_model_folder(tmp_path / "conv", conv=True)
    predictor = Predictor.load(folder / "model.keras")
    image = np.full((SIZE, SIZE), 150, np.uint8)  # predicted pneumonia: the map shows what argued for it
    image[4:12, 20:28] = 250
    (result,) = predictor.predict([image], explain="gradcam")
    assert isinstance(result, PredictionResult) and result.explanation == "gradcam"
    assert result.heatmap.shape == (SIZE, SIZE) and result.explain_seconds >= 0
    # The 1x1 conv passes brightness through: the heat map is hottest on the bright patch.
    row, column = np.unravel_index(np.argmax(result.heatmap), result.heatmap.shape)
    assert 4 <= row < 12 and 20 <= column < 28
    predictor.set_background(np.random.default_rng(0).integers(0, 256, (10, SIZE, SIZE), dtype=np.uint8))
    (result,) = predictor.predict([image], explain="shap")
    assert result.explanation == "shap" and result.heatmap.shape == (SIZE, SIZE)


# ------------------------------------------------------------------------------------------ command line
def write_png(path: Path, value: int, size: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(np.full((size, size), value, np.uint8)))
    return path


def test_predict_command_rows_csv_and_exit_status(model_folder, tmp_path, capsys):
    import pandas as pd

    from cxr.cli import main

    good = write_png(tmp_path / "in" / "bright.png", 220)
    bad = tmp_path / "in" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out_csv = tmp_path / "out.csv"
    status = main(["predict", str(good), str(bad), "--model", str(model_folder / "model.keras"), "--csv", str(out_csv)])
    assert status == 2  # one file could not be read
    printed = capsys.readouterr()
    assert "bright.png" in printed.out and "pneumonia" in printed.out
    assert printed.err.startswith("error: ") and "broken.jpg" in printed.err.splitlines()[0]
    table = pd.read_csv(out_csv)
    assert table["file"].tolist() == ["in/bright.png", "in/broken.jpg"]  # relative to the CSV's folder
    assert table.loc[0, "label"] == "pneumonia" and isinstance(table.loc[1, "error"], str)
    assert main(["predict", str(good), "--model", str(model_folder / "model.keras")]) == 0


def test_predict_command_with_gradcam_writes_overlays(tmp_path):
    from cxr.cli import main

    folder = save_model_folder(tmp_path / "conv", conv=True)
    image = write_png(tmp_path / "x.png", 200)
    heatmaps = tmp_path / "maps"
    status = main(
        [
            "predict",
            str(image),
            "--model",
            str(folder / "model.keras"),
            "--explain",
            "gradcam",
            "--heatmaps",
            str(heatmaps),
        ]
    )
    assert status == 0 and (heatmaps / "x_gradcam.png").is_file()


def test_evaluate_command_on_run_and_external_folder(cxr_home, tmp_path, capsys):
    from cxr.cli import main
    from cxr.run_results import write_run_results

    run = cxr_home / "runs" / "20250101-000000-fast-eval"
    save_model_folder(run, threshold=0.5, temperature=1.0)
    (run / "config.json").write_text(json.dumps({"version": 1, "dataset": "nowhere", "training": {"model": "fast"}}))
    generator = np.random.default_rng(0)
    val_true, test_true = generator.integers(0, 2, 60), generator.integers(0, 2, 40)
    write_run_results(
        run,
        val_true=val_true,
        val_score=np.clip(0.3 + 0.4 * val_true + generator.normal(0, 0.2, 60), 0, 1),
        test_true=test_true,
        test_score=np.clip(0.3 + 0.4 * test_true + generator.normal(0, 0.2, 40), 0, 1),
    )
    assert main(["evaluate", "--model", run.name]) == 0
    printed = capsys.readouterr().out
    assert "== test ==" in printed and "PPV" in printed and "prior" in printed
    assert (run / "test_roc.html").is_file() and (run / "validation_calibration.json").is_file()

    # External folder: bright = pneumonia under the brightness model, so the external AUC is 1.
    external = tmp_path / "other_hospital"
    for index in range(4):
        write_png(external / "NORMAL" / f"n{index}.png", 30 + 10 * index)
        write_png(external / "Pneumonia" / f"p{index}.png", 180 + 10 * index)
    (external / "NORMAL" / "bad.png").write_text("not an image")
    assert main(["evaluate", "--model", run.name, "--data", str(external)]) == 2  # one unreadable file
    report = json.loads((run / "external_other_hospital.json").read_text())
    assert report["metrics"]["n"] == 8 and report["metrics"]["auc"]["value"] == 1.0
    assert len(report["errors"]) == 1 and "bad.png" in report["errors"][0]["file"]
    stored = json.loads((run / "metrics.json").read_text())
    assert "other_hospital" in stored["external"] and stored["test"]["n"] == 40
    assert "external: other_hospital" in (run / "model_card.md").read_text()


def test_labelled_folder_missing_class_is_explained(tmp_path):
    from cxr.external import labelled_folder_files

    write_png(tmp_path / "normal" / "a.png", 50)
    with pytest.raises(CxrError, match="no pneumonia folder"):
        labelled_folder_files(tmp_path)
