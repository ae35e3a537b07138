"""Every numeric setting at its bounds and beyond: accepted at the bounds, refused beyond them with a message that
names the setting, the value received and the allowed range; from Python, from the command line (exit status 2,
one ``error:`` line, no traceback) and from the pages (whose widgets cannot hold a value outside the range, even
when a forged value is sent to the server).

The bounds below are written out by hand on purpose (not read back from ``cxr.config``): a change of a range in
the code must be a deliberate change here too. ``test_every_numeric_setting_is_covered`` fails when a numeric field
is added to ``TrainingConfig`` or ``DataConfig`` without a line here.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_app import import_tiny_dataset, open_page, prepare_app

from cxr import cli
from cxr.config import DataConfig, TrainingConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# field -> (low, high, integer)
TRAINING_BOUNDS = {
    "image_size": (32, 512, True),
    "epochs": (1, 500, True),
    "batch_size": (1, 1024, True),
    "learning_rate": (1e-7, 1.0, False),
    "plateau_patience": (1, 100, True),
    "plateau_factor": (0.01, 0.99, False),
    "min_learning_rate": (0.0, 1.0, False),
    "dropout_rate": (0.0, 0.9, False),
    "early_stopping_patience": (1, 100, True),
    "rotation_degrees": (0.0, 180.0, False),
    "zoom": (0.0, 0.9, False),
    "width_shift": (0.0, 0.5, False),
    "height_shift": (0.0, 0.5, False),
    "brightness": (0.0, 0.9, False),
    "contrast": (0.0, 0.9, False),
    "photometric": (0.0, 1.0, False),
    "random_crop": (0.0, 0.8, False),
    "label_smoothing": (0.0, 0.4, False),
    "mixup": (0.0, 1.0, False),
    "validation_fraction": (0.05, 0.5, False),
    "seed": (0, 2**31 - 1, True),
    "max_batches_per_epoch": (1, 10**7, True),
    "min_sensitivity": (0.5, 1.0, False),
    "fixed_threshold": (0.0, 1.0, False),
}
DATA_BOUNDS = {
    "image_size": (32, 512, True),
    "validation_fraction": (0.05, 0.5, False),
    "test_fraction": (0.05, 0.5, False),
    "seed": (0, 2**31 - 1, True),
    "max_image_pixels": (1, 10**9, True),
    "max_zip_bytes": (1, 2**40, True),
}
# The examples named in the issue, each with the range the message must state.
ISSUE_EXAMPLES = [("epochs", -1, "from 1 to 500"), ("batch_size", 0, "from 1 to 1024"),
                  ("learning_rate", 1e9, "from 1e-07 to 1.0"), ("image_size", 4096, "from 32 to 512")]
# Command-line flag of each numeric TrainingConfig field: `cxr train` names its flags after the fields.
CLI_FLAGS = {field: "--" + field.replace("_", "-") for field in TRAINING_BOUNDS}


def numeric_fields(cls) -> set[str]:
    defaults = cls()
    return {field.name for field in dataclasses.fields(cls)
            if isinstance(getattr(defaults, field.name), (int, float))
            and not isinstance(getattr(defaults, field.name), bool)} | (
        {"max_batches_per_epoch"} if cls is TrainingConfig else set())


def beyond(low, high, integer):
    """Values just outside ``[low, high]`` and absurd ones."""
    step_low = 1 if integer else max(abs(low) * 0.5, 1e-9)
    step_high = 1 if integer else max(abs(high) * 0.01, 1e-9)
    return [low - step_low, high + step_high, -1e15, 1e15]


def cases(bounds):
    return [(name, *values) for name, values in bounds.items()]


def test_every_numeric_setting_is_covered():
    assert numeric_fields(TrainingConfig) == set(TRAINING_BOUNDS)
    assert numeric_fields(DataConfig) == set(DATA_BOUNDS)
    # The command line offers the settings a researcher tunes (the plateau details come with the preset).
    assert {"epochs", "batch_size", "learning_rate", "image_size", "dropout_rate"} <= set(CLI_FLAGS)


@pytest.mark.parametrize("cls, name, low, high, integer",
                         [(TrainingConfig, *case) for case in cases(TRAINING_BOUNDS)]
                         + [(DataConfig, *case) for case in cases(DATA_BOUNDS)])
def test_bounds_are_accepted_and_beyond_is_refused_with_the_range(cls, name, low, high, integer):
    for value in (low, high):
        assert getattr(cls(**{name: value}), name) == value
    for value in beyond(low, high, integer):
        with pytest.raises(ValueError) as caught:
            cls(**{name: value})
        message = str(caught.value)
        assert message.startswith(f"{name} must be"), message
        assert f"from {low} to {high}" in message, message
        assert repr(value) in message, message  # what was received


@pytest.mark.parametrize("cls, name, low, high, integer",
                         [(TrainingConfig, *case) for case in cases(TRAINING_BOUNDS)]
                         + [(DataConfig, *case) for case in cases(DATA_BOUNDS)])
def test_not_a_number_infinity_text_and_bool_are_refused(cls, name, low, high, integer):
    bad = [math.nan, math.inf, -math.inf, "5", True, None]
    if integer:
        bad.append(low + 0.5)
    if name in ("seed", "max_batches_per_epoch") and cls is TrainingConfig:
        bad.remove(None)  # None is meaningful there: a random seed, or the whole epoch
    for value in bad:
        with pytest.raises(ValueError, match=rf"^{name} must be"):
            cls(**{name: value})


@pytest.mark.parametrize("name, value, allowed", ISSUE_EXAMPLES)
def test_issue_examples_from_python(name, value, allowed):
    with pytest.raises(ValueError, match=rf"{name} must be an? \w+ {allowed}; received {value!r}"):
        TrainingConfig(**{name: value})


def test_settings_from_a_json_file_are_validated_too():
    with pytest.raises(ValueError, match="epochs must be an integer from 1 to 500; received -3"):
        TrainingConfig.from_dict({"epochs": -3})
    with pytest.raises(ValueError, match="Unknown TrainingConfig setting"):
        TrainingConfig.from_dict({"epochz": 3})


# ------------------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("npz") / "tiny.npz"
    generator = np.random.default_rng(0)
    np.savez(path, train_images=generator.integers(0, 255, (8, 32, 32), dtype=np.uint8),
             train_labels=np.arange(8) % 2, test_images=generator.integers(0, 255, (4, 32, 32), dtype=np.uint8),
             test_labels=np.arange(4) % 2)
    return path


def run_main(argv, capsys) -> tuple[int, str]:
    status = cli.main(argv)
    return status, capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(CLI_FLAGS))
def test_command_line_refuses_each_setting_beyond_its_bounds(name, tiny_npz, capsys, cxr_home):
    low, high, integer = TRAINING_BOUNDS[name]
    for value in beyond(low, high, integer)[:2]:
        text = str(int(value)) if integer else repr(float(value))
        # "--flag=value": argparse would read a lone "-1e-09" as an option, not a value.
        status, err = run_main(["train", str(tiny_npz), f"{CLI_FLAGS[name]}={text}"], capsys)
        lines = err.strip().splitlines()
        assert status == 2, err
        assert len(lines) == 1 and lines[0].startswith(f"error: {name} must be"), err
        assert f"from {low} to {high}" in lines[0]
    # Nothing was created: a refused setting starts no run.
    assert not (cxr_home / "runs").exists() or not any((cxr_home / "runs").iterdir())


def test_command_line_refuses_text_where_a_number_is_expected(tiny_npz, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["train", str(tiny_npz), "--batch-size", "many"])
    assert caught.value.code == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_data_import_command_refuses_a_size_beyond_range(tiny_npz, capsys, cxr_home):
    status, err = run_main(["data", "import", str(tiny_npz), "--size", "4096"], capsys)
    assert status == 2 and err.strip() == ("error: image_size must be an integer from 32 to 512; received 4096. "
                                           "Choose a value in that range.")
    status, err = run_main(["data", "import", str(tiny_npz), "--validation-fraction", "0.9"], capsys)
    assert status == 2 and "validation_fraction must be a number from 0.05 to 0.5" in err
    assert not (cxr_home / "datasets").exists() or not any((cxr_home / "datasets").iterdir())


@pytest.mark.parametrize("flag, value, allowed", [("--epochs", "-1", "from 1 to 500"),
                                                  ("--learning-rate", "1e9", "from 1e-07 to 1.0")])
def test_command_line_in_a_real_process_prints_one_line_and_no_traceback(flag, value, allowed, tiny_npz, cxr_home):
    environment = {"PATH": "/usr/bin:/bin", "CXR_HOME": str(cxr_home), "PYTHONPATH": str(PROJECT_ROOT),
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "cxr", "train", str(tiny_npz), flag, value], cwd=PROJECT_ROOT,
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and allowed in error_lines[0], result.stderr


# -------------------------------------------------------------------------------------------------- pages
@pytest.fixture
def app_home(cxr_home, monkeypatch):
    import streamlit as st

    prepare_app(monkeypatch)
    import_tiny_dataset(cxr_home)
    yield cxr_home
    st.cache_resource.clear()


def setting_widget(at, kind: str, field: str):
    """The Train page's widget for a TrainingConfig field, found by its session key (labels carry units and
    help wording that may change; the key is the contract: ``setting_<field>``)."""
    return next(item for item in getattr(at, kind) if item.key == f"setting_{field}")


# Train page widgets -> TrainingConfig fields they set.
TRAIN_SLIDERS = ("epochs", "plateau_patience", "plateau_factor", "dropout_rate", "early_stopping_patience",
                 "rotation_degrees", "zoom", "width_shift", "height_shift", "validation_fraction", "mixup")
TRAIN_SELECT_SLIDERS = ("batch_size", "learning_rate", "min_learning_rate")


def test_train_page_widgets_only_offer_values_inside_the_allowed_ranges(app_home):
    at = open_page("pages/train.py")
    for name in TRAIN_SLIDERS:
        low, high, _ = TRAINING_BOUNDS[name]
        slider = setting_widget(at, "slider", name)
        assert low <= slider.proto.min <= slider.proto.max <= high, name
    for name in TRAIN_SELECT_SLIDERS:
        low, high, _ = TRAINING_BOUNDS[name]
        assert all(low <= float(option) <= high for option in setting_widget(at, "select_slider", name).options), name
    seed = setting_widget(at, "number_input", "seed")
    assert (seed.proto.min, seed.proto.max) == (0, 2**31 - 1)


@pytest.mark.parametrize("kind, field, value", [
    ("slider", "epochs", -1), ("slider", "epochs", 600), ("slider", "dropout_rate", 5.0),
    ("slider", "validation_fraction", 0.0), ("number_input", "seed", -5), ("number_input", "seed", 2**40),
])
def test_train_page_forged_values_beyond_range_never_reach_a_run(app_home, kind, field, value):
    """A hostile client can send any number over the websocket (AppTest does the same): Streamlit refuses
    the value server-side and the widget keeps a value inside its range; no exception, no run starts."""
    at = open_page("pages/train.py")
    setting_widget(at, kind, field).set_value(value)
    at.run()
    assert not at.exception
    widget = setting_widget(at, kind, field)
    assert widget.proto.min <= widget.value <= widget.proto.max
    assert widget.value != value
    assert any(item.label == "Start training" for item in at.button) and not (app_home / "runs").exists()


def test_train_page_out_of_range_values_in_session_state_are_clamped_not_a_crash(app_home):
    """Values outside the sliders' ranges put into the session (as a page bug or a stale session could) do not
    crash the page: Streamlit puts the widget back inside its range, so the config the page builds is valid."""
    at = open_page("pages/train.py")
    at.session_state["setting_early_stopping_patience"] = 0
    at.session_state["setting_epochs"] = 600
    at.run()
    assert not at.exception and not at.error
    for name in ("early_stopping_patience", "epochs"):
        low, high, _ = TRAINING_BOUNDS[name]
        assert low <= setting_widget(at, "slider", name).value <= high


def test_data_page_image_size_cannot_exceed_the_range(app_home):
    at = open_page("pages/data.py")
    size = next(item for item in at.number_input if item.label.startswith("Image size"))
    assert (size.proto.min, size.proto.max) == DATA_BOUNDS["image_size"][:2]
    size.set_value(4096)
    at.run()
    assert not at.exception
    size = next(item for item in at.number_input if item.label.startswith("Image size"))
    assert 32 <= size.value <= 512
