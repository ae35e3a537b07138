"""Export round trips: each exported format is loaded back with TensorFlow's own loaders and must give the
Predictor's calibrated probabilities (SavedModel within 1e-4, TFLite within 0.02); the sidecar says how."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cxr.errors import CxrError
from cxr.export import export_model, export_zip
from cxr.predict import Predictor

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
THRESHOLD, TEMPERATURE = 0.4, 1.7


def tiny_model(*, with_logit: bool = True):
    """A small conv net of cxr's shape contract, with non-trivial weights (seeded)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(1, name="score")(x)
    # A large weight spreads the probabilities over (0, 1) so the comparison is not all near 0.5.
    dense = layers.Dense(1, name="logit" if with_logit else "spread")
    logit = dense(x)
    dense.set_weights([np.array([[40.0]], np.float32), np.array([0.0], np.float32)])
    outputs = layers.Activation("sigmoid", name="probability")(logit)
    return keras.Model(inputs, outputs)


def model_folder(folder: Path, *, with_logit: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tiny_model(with_logit=with_logit).save(folder / "model.keras")
    (folder / "metrics.json").write_text(json.dumps({"threshold": THRESHOLD, "threshold_rule": "youden",
                                                     "temperature": TEMPERATURE}))
    return folder


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    return Predictor.load(model_folder(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    generator = np.random.default_rng(5)
    base = generator.integers(0, 256, (12, SIZE, SIZE), dtype=np.uint8)
    base[:6] //= 3  # darker half: a spread of answers
    return base


def savedmodel_probabilities(folder: Path, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(str(folder)).signatures["serve"]
    output = serve(images=tf.constant(images[..., None].astype(np.float32)))
    assert list(output) == ["probability"]
    return output["probability"].numpy().reshape(-1)


def tflite_probabilities(content: bytes, images: np.ndarray) -> np.ndarray:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = Interpreter(model_content=content)
    (input_detail,), (output_detail,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(input_detail["shape_signature"]) == [-1, SIZE, SIZE, 1] and input_detail["dtype"] == np.float32
    # The batch dimension is free: one call for all images.
    interpreter.resize_tensor_input(input_detail["index"], [len(images), SIZE, SIZE, 1])
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], images[..., None].astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(output_detail["index"]).reshape(-1).astype(np.float64)


def test_savedmodel_gives_the_predictors_calibrated_probability(predictor, images, tmp_path):
    expected = predictor.probabilities(images)
    assert expected.max() - expected.min() > 0.2  # the images get different answers
    assert not np.allclose(expected, predictor.probabilities(images, calibrated=False), atol=1e-3)  # T matters
    result = export_model(predictor, "savedmodel", tmp_path / "exported" / "model")
    got = savedmodel_probabilities(result.model, images)
    assert np.max(np.abs(got - expected)) <= 1e-4
    sidecar = json.loads((tmp_path / "exported" / "model.json").read_text())
    assert sidecar["threshold"] == THRESHOLD and sidecar["temperature"] == TEMPERATURE
    assert sidecar["image_size"] == SIZE and sidecar["input"]["shape"] == [None, SIZE, SIZE, 1]
    assert sidecar["class_names"] == ["normal", "pneumonia"]


def test_tflite_gives_the_predictors_calibrated_probability(predictor, images, tmp_path):
    result = export_model(predictor, "tflite", tmp_path / "model.tflite")
    assert result.sidecar == tmp_path / "model.json"
    got = tflite_probabilities(result.model.read_bytes(), images)
    assert np.max(np.abs(got - predictor.probabilities(images))) <= 0.02


def test_a_model_without_a_logit_layer_is_exported_from_its_probability(images, tmp_path):
    predictor = Predictor.load(model_folder(tmp_path / "plain", with_logit=False))
    result = export_model(predictor, "savedmodel", tmp_path / "plain_export")
    got = savedmodel_probabilities(result.model, images)
    assert np.max(np.abs(got - predictor.probabilities(images))) <= 1e-4


def test_zip_for_a_download_holds_a_loadable_model_and_its_sidecar(predictor, images, tmp_path):
    name, content = export_zip(predictor, "tflite", name="run-x")
    assert name == "run-x-tflite.zip"
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert sorted(archive.namelist()) == ["run-x.json", "run-x.tflite"]
        model_bytes = archive.read("run-x.tflite")
        assert json.loads(archive.read("run-x.json"))["temperature"] == TEMPERATURE
    got = tflite_probabilities(model_bytes, images)
    assert np.max(np.abs(got - predictor.probabilities(images))) <= 0.02


def test_onnx_is_refused_with_the_reason_and_nothing_is_overwritten(predictor, tmp_path):
    with pytest.raises(CxrError, match="tf2onnx .* TensorFlow 2.13-2.15"):
        export_model(predictor, "onnx", tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
    (tmp_path / "taken.tflite").write_text("mine")
    with pytest.raises(CxrError, match="already exists"):
        export_model(predictor, "tflite", tmp_path / "taken.tflite")
    assert (tmp_path / "taken.tflite").read_text() == "mine"


def run_cli(args, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update(CXR_HOME=str(home), PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.run([sys.executable, "-m", "cxr", *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=600)


def test_export_command_takes_a_run_id(cxr_home, images, tmp_path):
    run = model_folder(cxr_home / "runs" / "20250101-000000-fast-export")
    (run / "config.json").write_text(json.dumps({"version": 1, "dataset": "nowhere", "training": {}}))
    result = run_cli(["export", run.name, "--format", "savedmodel", "--output", str(tmp_path / "out" / "m")],
                     cxr_home, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sidecar:" in result.stdout and "I0000" not in result.stderr
    expected = Predictor.load(run).probabilities(images)
    assert np.max(np.abs(savedmodel_probabilities(tmp_path / "out" / "m", images) - expected)) <= 1e-4
    refused = run_cli(["export", run.name, "--format", "onnx", "--output", str(tmp_path / "m.onnx")], cxr_home,
                      tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ONNX export is not offered")
