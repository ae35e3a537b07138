"""Hostile and broken model files: whatever a ``.keras`` file names, nothing outside Keras runs, and each refusal is a
``ModelFileError`` that says what is wrong and what to do; a model whose input size differs from the images still
answers (images are resized to the model's size).

Already covered elsewhere (not repeated here): a Lambda layer refused by safe mode, a 500-byte truncated file, a
text file named ``.keras``, a legacy ``.h5`` file and a missing file (tests/test_predict.py
``test_lambda_model_is_refused_with_safe_mode_message``, ``test_damaged_and_foreign_model_files``); a colour-input
model (``test_model_with_colour_input_is_refused``); training on a data set of another image size
(tests/test_training.py ``test_image_size_mismatch_is_a_clear_error``).
"""

from __future__ import annotations

import copy
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cxr import runs
from cxr.config import TrainingConfig
from cxr.errors import ModelFileError
from cxr.model_files import load_model_file
from cxr.predict import Predictor

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def brightness_model(size: int = 24):
    """P(pneumonia) = sigmoid(10 * mean(pixels) / 255 - 5), with cxr's layer names: every answer can be computed
    by hand. The one builder shared with the load benchmark (benchmarks/load_test.py)."""
    import importlib.util
    import sys

    bench = sys.modules.get("cxr_load_test")
    if bench is None:
        spec = importlib.util.spec_from_file_location("cxr_load_test", PROJECT_ROOT / "benchmarks" / "load_test.py")
        bench = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = bench  # its dataclasses look their module up while being defined
        spec.loader.exec_module(bench)
    return bench.brightness_model(size)


def expected_probability(image: np.ndarray) -> float:
    """The brightness model's answer for the ``(s, s)`` uint8 image it saw."""
    return float(1.0 / (1.0 + np.exp(-(10.0 * float(np.asarray(image, np.float64).mean()) / 255.0 - 5.0))))


@pytest.fixture(scope="module")
def good_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "good.keras"
    brightness_model().save(path)
    return path


def archive_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def edited_model(source: Path, target: Path, edit) -> Path:
    """A copy of ``source`` whose config.json was changed by ``edit(config)`` (as an attacker would)."""
    members = archive_members(source)
    config = copy.deepcopy(json.loads(members["config.json"]))
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    return write_archive(target, members)


def layer_config(config: dict, name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["name"] == name)


@pytest.fixture
def side_effect_module(tmp_path, monkeypatch):
    """An importable module ``cxr_hostile_module`` that leaves a marker file when imported and when its
    function ``run`` is called: if either file appears, a model file made code run."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    imported, called = folder / "IMPORTED", folder / "CALLED"
    (folder / "cxr_hostile_module.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(imported)!r}).write_text('imported')\n"
        "def run(*args, **kwargs):\n"
        f"    pathlib.Path({str(called)!r}).write_text('called')\n"
        "    return args[0] if args else None\n"
        "class Layer:\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("cxr_hostile_module", None)
    yield imported, called
    sys.modules.pop("cxr_hostile_module", None)


def test_custom_layer_class_from_another_module_is_refused_without_importing_it(
        good_model_file, tmp_path, side_effect_module):
    def edit(config):
        layer = layer_config(config, "conv")
        layer.update(module="cxr_hostile_module", class_name="Layer", registered_name="hostile>Layer")

    path = edited_model(good_model_file, tmp_path / "custom.keras", edit)
    with pytest.raises(ModelFileError) as caught:
        load_model_file(path)
    message = str(caught.value)
    assert "custom.keras" in message and "custom class 'Layer'" in message and "not part of Keras" in message
    assert "re-save the model without custom objects" in message
    assert not any(marker.exists() for marker in side_effect_module)


@pytest.mark.parametrize("module, function", [("cxr_hostile_module", "run"), ("os", "system"),
                                              ("builtins", "exec")])
def test_activation_naming_a_function_outside_keras_is_refused(good_model_file, tmp_path, side_effect_module,
                                                               module, function):
    def edit(config):
        layer_config(config, "conv")["config"]["activation"] = {
            "module": module, "class_name": "function", "config": function, "registered_name": "function"}

    path = edited_model(good_model_file, tmp_path / "function.keras", edit)
    with pytest.raises(ModelFileError, match=rf"custom function '{function}' from module '{module}'"):
        Predictor.load(path)
    assert not any(marker.exists() for marker in side_effect_module)


def test_lambda_layer_in_a_run_is_refused_and_its_code_never_runs(tmp_path):
    """A run folder whose model.keras was swapped for one with a Lambda layer (code in the file): refused by
    safe mode, and the Lambda's code (which would leave a marker file) never runs."""
    import keras
    from keras import layers

    marker = tmp_path / "LAMBDA_RAN"

    def payload(tensor):
        Path(marker).write_text("ran")
        return tensor

    inputs = keras.Input((24, 24, 1))
    x = layers.Lambda(payload)(inputs)
    outputs = layers.Dense(1, activation="sigmoid")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    marker.unlink(missing_ok=True)  # building the model traced the Lambda once; only loading counts
    run_dir = runs.new_run("tiny", TrainingConfig(image_size=32, epochs=1))
    runs.write_status(run_dir, state="finished")
    model.save(run_dir / "model.keras")
    with pytest.raises(ModelFileError, match="safe mode"):
        Predictor.load(run_dir.name)
    with pytest.raises(ModelFileError, match="safe mode"):
        Predictor.load(run_dir.name)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_model_file_truncated_anywhere_is_a_clear_error(good_model_file, tmp_path, keep):
    data = good_model_file.read_bytes()
    path = tmp_path / "cut.keras"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match="cut.keras") as caught:
        load_model_file(path)
    assert "truncated" in str(caught.value) or "not a valid .keras" in str(caught.value)


@pytest.mark.parametrize("damage", ["weights truncated", "weights missing", "config not json", "config missing"])
def test_model_archive_with_damaged_members_is_a_clear_error(good_model_file, tmp_path, damage):
    """A complete zip whose parts are damaged (a copy interrupted inside the archive tool, or an edited file)."""
    members = archive_members(good_model_file)
    if damage == "weights truncated":
        members["model.weights.h5"] = members["model.weights.h5"][:300]
    elif damage == "weights missing":
        del members["model.weights.h5"]
    elif damage == "config not json":
        members["config.json"] = b"{not json"
    else:
        del members["config.json"]
    path = write_archive(tmp_path / "damaged.keras", members)
    with pytest.raises(ModelFileError, match=r"'damaged.keras' could not be loaded as a Keras model"):
        load_model_file(path)


def test_model_with_two_outputs_is_refused(tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((24, 24, 1))
    outputs = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "softmax.keras")
    with pytest.raises(ModelFileError, match=r"expected \(None, 1\): P\(pneumonia\)"):
        load_model_file(tmp_path / "softmax.keras")


def test_model_input_size_differs_from_the_images_and_answers_are_on_the_models_size(good_model_file, tmp_path):
    """A 24 px model given a 48 px PNG, a 300x120 array and a 16 px array: every image is resized to
    24 px and the answer is the model's formula on that resized image."""
    import cv2

    from cxr.imaging import resize_square

    predictor = Predictor.load(good_model_file)
    assert predictor.image_size == 24
    generator = np.random.default_rng(3)
    large = generator.integers(0, 255, (48, 48), dtype=np.uint8)
    wide = generator.integers(0, 255, (120, 300), dtype=np.uint8)
    small = np.full((16, 16), 200, np.uint8)
    ok, encoded = cv2.imencode(".png", large)
    assert ok
    results = predictor.predict([encoded.tobytes(), wide, small], names=["large.png", "wide", "small"])
    assert all(result.ok for result in results), [result.error for result in results]
    for result, source in zip(results, [large, wide, small], strict=True):
        assert result.image.shape == (24, 24)
        np.testing.assert_array_equal(result.image, resize_square(source, 24))
        # No metrics.json beside the file: temperature 1, so calibrated and raw answers are the formula's.
        assert result.probability == pytest.approx(expected_probability(result.image), abs=1e-5)
    assert any("Unusual shape 300x120" in warning for warning in results[1].warnings)


def test_external_validation_of_a_data_set_of_another_size_resizes_to_the_model(good_model_file, cxr_home):
    from cxr import datasets
    from cxr.config import DataConfig
    from cxr.external import external_validation

    generator = np.random.default_rng(0)
    path = cxr_home / "tiny32.npz"
    images = generator.integers(0, 255, (8, 32, 32), dtype=np.uint8)
    np.savez(path, train_images=images, train_labels=np.arange(8) % 2, test_images=images,
             test_labels=np.arange(8) % 2)
    datasets.import_dataset(path, name="tiny32", config=DataConfig(image_size=32))
    predictor = Predictor.load(good_model_file)
    report = external_validation(predictor, "tiny32")
    dataset = datasets.load_dataset("tiny32")
    from cxr.imaging import resize_square

    expected = [expected_probability(resize_square(image, 24)) for image in dataset.images("test")]
    np.testing.assert_allclose(report["predictions"]["y_score"], expected, atol=1e-5)
