"""The command line as a user meets it, in real child processes: error lines, exit status, where files go,
and no TensorFlow chatter unless ``--verbose``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
# Start-up lines TensorFlow 2.21 writes to descriptor 2 (absl, oneDNN, CUDA probing, C++ log prefixes).
TENSORFLOW_NOISE = ("absl::InitializeLog", "oneDNN", "cuda", "cuInit", "I0000", "W0000", "E0000",
                    "cpu_feature_guard", "This TensorFlow binary")


def cli(args: list[str], cwd: Path, home: Path, *, code: str | None = None) -> subprocess.CompletedProcess:
    """``python -m cxr ARGS`` (or ``python -c CODE``) from ``cwd`` with the environment a user has: no
    TF_CPP_MIN_LOG_LEVEL, the project importable."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TF_CPP_MIN_LOG_LEVEL", "CXR_VERBOSE")}
    environment.update(CXR_HOME=str(home), PYTHONPATH=str(PROJECT_ROOT), TF_NUM_INTRAOP_THREADS="1",
                       TF_NUM_INTEROP_THREADS="1")
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "cxr", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def png(path: Path, value: int, size: int = 120) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((size, size), value, np.uint8)
    image[10:30, 10:30] = 255 - value  # some structure for Grad-CAM
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny cxr-shaped model (``(n, 32, 32, 1)`` -> ``(n, 1)``, a conv layer, a ``logit`` layer) with a
    metrics.json (threshold 0.4, temperature 1.5)."""
    import keras
    from keras import layers

    folder = tmp_path_factory.mktemp("model")
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(2, 3, padding="same", activation="relu", name="conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    logit = layers.Dense(1, name="logit")(x)
    outputs = layers.Activation("sigmoid", name="probability")(logit)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    (folder / "metrics.json").write_text(json.dumps({"threshold": 0.4, "threshold_rule": "youden",
                                                     "temperature": 1.5}))
    return folder / "model.keras"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_bad_file_alone_fails_before_tensorflow_loads(tmp_path, cxr_home):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image")
    code = ("import sys\nfrom cxr.cli import main\nstatus = main(['predict', sys.argv[1]])\n"
            "print('tensorflow loaded' if 'tensorflow' in sys.modules else 'tensorflow not loaded')\n"
            "sys.exit(status)")
    result = cli([], tmp_path, cxr_home, code=code.replace("sys.argv[1]", repr(str(bad))))
    assert result.returncode == 2, result.stderr
    assert "tensorflow not loaded" in result.stdout
    (line,) = error_lines(result.stderr)
    assert "notes.jpg" in line and "not an image" in line and "JPEG, PNG" in line, line  # received, expected
    assert "Traceback" not in result.stderr


def test_good_and_bad_files_exit_2_after_writing_the_good_results_beside_the_csv(tmp_path, cxr_home, model_file):
    inputs = tmp_path / "inputs"
    good = png(inputs / "bright.png", 200)
    bad = inputs / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    missing = inputs / "missing.png"
    work = tmp_path / "somewhere_else"
    work.mkdir()
    result = cli(["predict", str(good), str(bad), str(missing), "--model", str(model_file), "--explain", "gradcam",
                  "--csv", str(tmp_path / "out" / "results.csv")], work, cxr_home)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 2 and "broken.jpg" in lines[0] and "missing.png" in lines[1], result.stderr
    assert not any(line.startswith((" ", "\t")) and "error" in line for line in result.stderr.splitlines())
    assert "bright.png" in result.stdout
    assert list(work.iterdir()) == []  # nothing written into the current folder

    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(table) == 3 and 0 <= table.loc[0, "probability"] <= 1
    assert table["error"].isna().tolist() == [True, False, False]
    csv_folder = tmp_path / "out"
    # Every path in the CSV resolves from the CSV's own folder.
    assert (csv_folder / table.loc[0, "file"]).resolve() == good.resolve()
    assert (csv_folder / table.loc[1, "file"]).resolve() == bad.resolve()
    heatmap = csv_folder / table.loc[0, "heatmap"]
    assert heatmap.is_file() and heatmap.parent == csv_folder / "results_heatmaps"


def test_every_file_answered_exits_0_and_explicit_heatmaps_folder_is_used(tmp_path, cxr_home, model_file):
    image = png(tmp_path / "x.png", 90)
    maps = tmp_path / "maps"
    result = cli(["predict", str(image), "--model", str(model_file), "--explain", "gradcam", "--heatmaps", str(maps)],
                 tmp_path, cxr_home)
    assert result.returncode == 0, result.stderr
    assert error_lines(result.stderr) == []
    assert (maps / "x_gradcam.png").is_file()


def test_explain_without_a_place_for_heat_maps_is_refused(tmp_path, cxr_home):
    image = png(tmp_path / "x.png", 90)
    result = cli(["predict", str(image), "--explain", "gradcam"], tmp_path, cxr_home)
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert "--heatmaps DIR" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["x.png"]


def test_tensorflow_start_up_lines_are_hidden_unless_verbose(tmp_path, cxr_home, model_file):
    image = png(tmp_path / "x.png", 90)
    quiet = cli(["predict", str(image), "--model", str(model_file)], tmp_path, cxr_home)
    assert quiet.returncode == 0, quiet.stderr
    noise = [line for line in quiet.stderr.splitlines() if any(word in line for word in TENSORFLOW_NOISE)]
    assert noise == [], quiet.stderr
    assert quiet.stderr.splitlines()[0].startswith("model: ")  # the first line is ours
    # With --verbose TensorFlow speaks (so the check above can see its lines when they are there).
    verbose = cli(["predict", str(image), "--model", str(model_file), "--verbose"], tmp_path, cxr_home)
    assert verbose.returncode == 0, verbose.stderr
    assert any(word in verbose.stderr for word in TENSORFLOW_NOISE), verbose.stderr


def test_usage_errors_use_the_same_error_line(tmp_path, cxr_home):
    result = cli(["predict", "x.png", "--explain", "lime"], tmp_path, cxr_home)
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert "lime" in line and "cxr predict --help" in line
    assert not [text for text in result.stderr.splitlines() if text.startswith("usage:")]


def test_bench_runs_the_named_script_and_refuses_unknown_names(tmp_path, cxr_home):
    result = cli(["bench", "data", "--", "--help"], tmp_path, cxr_home)
    assert result.returncode == 0, result.stderr
    assert "Import benchmark" in result.stdout and "bench_data.py" in result.stderr
    unknown = cli(["bench", "gpu"], tmp_path, cxr_home)
    assert unknown.returncode == 2 and len(error_lines(unknown.stderr)) == 1


def test_evaluate_on_a_folder_reports_bad_images_and_saves_only_where_told(tmp_path, cxr_home, model_file):
    data = tmp_path / "hospital"
    for index in range(3):
        png(data / "normal" / f"n{index}.png", 40 + 20 * index)
        png(data / "pneumonia" / f"p{index}.png", 160 + 20 * index)
    (data / "normal" / "bad.png").write_text("not an image")
    work = tmp_path / "work"
    work.mkdir()
    result = cli(["evaluate", "--model", str(model_file), "--data", str(data), "--no-figures"], work, cxr_home)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    assert "bad.png" in line
    assert "add --output DIR" in result.stderr
    assert list(work.iterdir()) == []  # a model that is not a run saves nothing without --output

    saved = cli(["evaluate", "--model", str(model_file), "--data", str(data), "--no-figures",
                 "--output", str(tmp_path / "report")], work, cxr_home)
    assert saved.returncode == 2, saved.stderr
    report = json.loads((tmp_path / "report" / "external_hospital.json").read_text())
    assert report["metrics"]["n"] == 6 and len(report["errors"]) == 1


@pytest.mark.slow
def test_editable_install_gives_a_cxr_command_that_works_from_any_folder(tmp_path):
    """The README's install (`pip install -e .`), into a throw-away environment that sees the installed
    dependencies, then `cxr --help` and `cxr predict` from a folder outside the project."""
    environment_folder = tmp_path / "environment"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(environment_folder)], check=True,
                   timeout=300)
    install = subprocess.run([str(environment_folder / "bin" / "python"), "-m", "pip", "install", "--quiet",
                              "--no-deps", "--no-build-isolation", "--no-index", "-e", str(PROJECT_ROOT)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    command = environment_folder / "bin" / "cxr"
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["CXR_HOME"] = str(tmp_path / "home")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = subprocess.run([str(command), "--help"], cwd=elsewhere, env=environment, capture_output=True,
                           text=True, timeout=300)
    assert shown.returncode == 0 and "predict" in shown.stdout, shown.stderr
    bad = elsewhere / "bad.png"
    bad.write_text("no")
    refused = subprocess.run([str(command), "predict", str(bad)], cwd=elsewhere, env=environment,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.startswith("error: "), refused.stderr


def test_every_tensorflow_import_in_cxr_goes_through_the_loader():
    """A direct `import tensorflow` / `import keras` anywhere in cxr could be the first one and print
    TensorFlow's start-up lines; only cxr/tensorflow_loader.py may import them (Keras internals,
    `from keras.src …`, are reached after the loader has imported Keras)."""
    import re

    direct = re.compile(r"^\s*(import (tensorflow|keras)\b|from (tensorflow|keras)(\s|\.(?!src\b)))", re.M)
    offenders = []
    for path in sorted((PROJECT_ROOT / "cxr").rglob("*.py")):
        if path.name == "tensorflow_loader.py":
            continue
        for match in direct.finditer(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(PROJECT_ROOT)}: {match.group(0).strip()}")
    assert offenders == []


def test_loader_shows_what_was_held_back_when_the_import_fails(tmp_path, cxr_home):
    """A broken TensorFlow: the lines it wrote to descriptor 2 while failing reach the terminal."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os\nos.write(2, b'E0000 libcudart.so: cannot open shared object\\n')\n"
                                      "raise ImportError('libtensorflow_framework.so.2: cannot open')\n")
    code = "from cxr.tensorflow_loader import import_tensorflow\nimport_tensorflow()\n"
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update(CXR_HOME=str(cxr_home), PYTHONPATH=f"{tmp_path / 'fake'}:{PROJECT_ROOT}")
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "E0000 libcudart.so: cannot open shared object" in result.stderr
    assert "libtensorflow_framework.so.2" in result.stderr
