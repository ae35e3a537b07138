"""Model files: find a model by name, load its ``.keras`` file safely and read the files beside it.

A model folder (a run's folder, or ``models/default/``) holds ``model.keras``, usually ``metrics.json``
(threshold, temperature, rule) and optionally ``background.npy`` (SHAP's background). ``load_model_files``
turns a spec ("default" / a run id / a run or model folder / a ``.keras`` path) into a ``ModelFiles``,
from which ``cxr.predict.Predictor.load`` builds a predictor.

A model file from elsewhere is loaded with Keras' ``safe_mode``: a file that carries Python code (a
``Lambda`` layer) is refused, because loading it would run that code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr import paths
from cxr.errors import CxrError, ModelFileError, RunError

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
BACKGROUND_FILE = "background.npy"  # optional (k, s, s) uint8 training sample beside a model, for SHAP
RUN_CONFIG_FILE = "config.json"  # marks a run folder (cxr.runs.CONFIG_FILE)


@dataclass
class ModelFiles:
    """What a model folder holds, read and checked.

    ``model``: the Keras model (``(n, s, s, 1)`` -> ``(n, 1)``); ``threshold`` in [0, 1] and ``temperature``
    > 0 from ``metrics.json`` (0.5 and 1 without it); ``background``: a function returning SHAP's ``(k, s, s)``
    uint8 background (called only when SHAP is first used), or ``None`` when the model has none.
    """

    model: Any
    folder: Path
    source: str
    metrics: dict | None = None
    threshold: float = 0.5
    temperature: float = 1.0
    threshold_rule: str = "fixed"
    notes: list[str] = field(default_factory=list)
    background: Callable[[], np.ndarray] | None = None


def read_metrics(folder: Path) -> dict | None:
    """``folder/metrics.json`` as a dict, ``None`` when absent; ``ModelFileError`` when unreadable."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):  # valid JSON, but not the object training writes
            raise ValueError(f"it holds a JSON {type(metrics).__name__}, not an object")
        return metrics
    except (OSError, ValueError) as error:
        raise ModelFileError(
            f"{str(path)!r} cannot be read ({error}). Expected the metrics.json written at the "
            f"end of training; re-run `python -m cxr evaluate` or delete the file."
        ) from error


def load_model_file(path) -> Any:
    """Load a ``.keras`` model with ``safe_mode=True`` and ``compile=False``; ``ModelFileError`` on any problem.

    Refused: a missing file, a format other than ``.keras`` (legacy ``.h5``/SavedModel cannot be
    checked by safe mode), a file holding Python code (``Lambda`` layers), a truncated or non-model
    file, and a model whose input is not ``(n, s, s, 1)`` with one ``(n, 1)`` output.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelFileError(
            f"No model file at {str(path)!r}. Expected a .keras file saved by cxr (a run's "
            f"model.keras); check the path or train a model first."
        )
    if path.suffix.lower() != ".keras":
        raise ModelFileError(
            f"{path.name!r} is not a .keras file. Only the Keras 3 .keras format is loaded, "
            f"because only it can be checked by Keras safe mode; re-save the model with "
            f"model.save('model.keras')."
        )
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path.name!r} is not a valid .keras file (a .keras file is a zip archive; this one "
            f"is truncated or something else). Copy the file again or re-save the model."
        )
    from cxr.models import register_layers
    from cxr.tensorflow_loader import keras

    register_layers()  # cxr's own registered layers (e.g. fast_norm's normalisation); no code in the file
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises ValueError/TypeError/KeyError/OSError depending on the damage
        raise _load_error(path, error) from None
    check_model_io(model, name=path.name)
    return model


def _load_error(path: Path, error: Exception) -> ModelFileError:
    """The message for a ``.keras`` file Keras refused or failed to load."""
    text = str(error)
    if "safe_mode" in text or "Lambda" in text or "lambda" in text:
        return ModelFileError(
            f"{path.name!r} contains Python code (a Lambda layer or a custom function), which Keras safe "
            f"mode refuses to load because loading it would run that code. Only load such a file if you "
            f"trust its author, and then do it yourself with keras.saving.load_model(path, "
            f"safe_mode=False); cxr models never need code in the file."
        )
    # A class or function from a module outside Keras (a custom layer, or a config edited to point at
    # os.system): Keras stops before importing it, and the message must say so rather than "truncated".
    foreign = re.search(r"Could not locate (class|function) '([^']+)'", text)
    if foreign:
        module = re.search(r"'module': '([^']+)'", text[foreign.end():])
        origin = f" from module {module.group(1)!r}" if module else ""
        return ModelFileError(
            f"{path.name!r} uses a custom {foreign.group(1)} {foreign.group(2)!r}{origin} that is not part "
            f"of Keras or cxr, so it was refused: loading code named by a file from elsewhere could run it. "
            f"Expected a .keras file saved by cxr (built from Keras layers only); re-save the model "
            f"without custom objects, or train one here."
        )
    return ModelFileError(
        f"{path.name!r} could not be loaded as a Keras model ({type(error).__name__}: "
        f"{text.splitlines()[0] if text else 'no details'}). It may be truncated or saved by "
        f"a newer Keras; copy it again or re-save it."
    )


def check_model_io(model, *, name: str = "model") -> int:
    """The square image size ``s`` of a model taking ``(n, s, s, 1)`` and giving ``(n, 1)``; else ModelFileError."""
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or not outputs or len(inputs) != 1 or len(outputs) != 1:
        raise ModelFileError(
            f"{name!r} must have one image input and one output; it has "
            f"{len(inputs or [])} inputs and {len(outputs or [])} outputs."
        )
    in_shape, out_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(in_shape) != 4 or in_shape[3] != 1 or in_shape[1] is None or in_shape[1] != in_shape[2]:
        raise ModelFileError(
            f"{name!r} takes input of shape {in_shape}; expected (None, s, s, 1): square "
            f"grayscale images of raw 0-255 pixels, as every cxr model does."
        )
    if out_shape[1:] != (1,):
        raise ModelFileError(f"{name!r} gives output of shape {out_shape}; expected (None, 1): P(pneumonia).")
    return int(in_shape[1])


# ------------------------------------------------------------------------------------------ model folders
def read_model_folder(
    folder: Path,
    *,
    source: str,
    model_path: Path | None = None,
    background: Callable[[], np.ndarray] | None = None,
) -> ModelFiles:
    """Load ``model_path`` (default ``folder/model.keras``) and read ``metrics.json`` and ``background.npy``
    beside it; ``background`` is used when the folder has no ``background.npy``."""
    folder = Path(folder)
    model = load_model_file(model_path or folder / MODEL_FILE)
    files = ModelFiles(model=model, folder=folder, source=source, metrics=read_metrics(folder))
    if files.metrics is None:
        files.notes.append(f"No {METRICS_FILE} beside the model: threshold 0.5, probabilities not calibrated.")
    else:
        files.threshold = files.metrics.get("threshold", 0.5)
        files.temperature = files.metrics.get("temperature", 1.0)
        files.threshold_rule = files.metrics.get("threshold_rule", "fixed")
    background_file = folder / BACKGROUND_FILE
    files.background = _npy_loader(background_file) if background_file.is_file() else background
    return files


def _npy_loader(path: Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ModelFileError(
                f"{str(path)!r} cannot be read ({error}). Expected (k, s, s) uint8 training images saved "
                f"with numpy.save; delete the file or save it again."
            ) from None

    return load


def bundled_model_files() -> ModelFiles:
    """The bundled model in ``models/default/`` (model.keras + metrics.json + model_card.md)."""
    folder = paths.BUNDLED_MODEL_DIR
    if not (folder / MODEL_FILE).is_file():
        raise ModelFileError(
            f"No bundled model is present ({str(folder / MODEL_FILE)!r} does not exist). "
            f"Train one (`python -m cxr train DATASET`) and pass it with --model RUN_ID, or "
            f"copy a run's model.keras, metrics.json and model_card.md into {str(folder)!r}."
        )
    return read_model_folder(folder, source="bundled default model")


def run_model_files(run_id_or_dir) -> ModelFiles:
    """The final model of a training run, with the threshold and temperature chosen on its validation split.

    SHAP's background is a sample of the run's training images (read when SHAP is first used)."""
    from cxr import runs

    folder = runs.run_path(run_id_or_dir)
    if not (folder / MODEL_FILE).is_file():
        try:
            state = runs.read_status(folder).get("state", "unknown")
        except Exception:  # noqa: BLE001 - the message below is what matters
            state = "unknown"
        raise RunError(
            f"Run {folder.name!r} has no {MODEL_FILE} yet (state: {state}). Wait for it to finish, "
            f"or resume it with `python -m cxr train --resume {folder.name}`."
        )
    return read_model_folder(folder, source=f"run {folder.name}", background=lambda: _run_background(folder))


def _run_background(folder: Path) -> np.ndarray:
    from cxr import runs
    from cxr.datasets import load_dataset
    from cxr.explain import background_sample

    try:
        config = runs.read_config(folder)
        # The path the run was trained from first (it may live outside $CXR_HOME), then the name.
        reference = config.get("dataset_path")
        if not reference or not Path(reference).is_dir():
            reference = config["dataset"]
        dataset = load_dataset(reference, verify=False)
    except CxrError as error:
        raise CxrError(
            f"SHAP needs a sample of training images as background, and the run's data set "
            f"cannot be loaded ({error})."
        ) from None
    return background_sample(dataset.images("train"))


def load_model_files(spec=None) -> ModelFiles:
    """``None`` or "default" -> the bundled model; a ``.keras`` path -> that file (with the ``metrics.json``
    beside it); a run folder or run id -> the run's model; a folder with ``model.keras`` -> that folder."""
    if spec is None or str(spec) in ("", "default"):
        return bundled_model_files()
    path = Path(str(spec)).expanduser()
    if path.is_file():
        return read_model_folder(path.parent, source=str(path), model_path=path)
    if path.is_dir():
        if (path / RUN_CONFIG_FILE).is_file():
            return run_model_files(path)
        if (path / MODEL_FILE).is_file():
            return read_model_folder(path, source=str(path))
        raise ModelFileError(
            f"Folder {str(path)!r} holds no {MODEL_FILE}. Expected a run folder or a model "
            f"folder; pass the path of a .keras file or a run id."
        )
    if path.suffix.lower() in (".keras", ".h5", ".hdf5"):
        raise ModelFileError(f"No model file at {str(path)!r}. Check the path.")
    from cxr import runs

    try:
        folder = runs.run_path(str(spec))
    except RunError as error:
        raise ModelFileError(f"{str(spec)!r} is neither a model file, a model folder nor a run id. {error}") from None
    return run_model_files(folder)


__all__ = [
    "ModelFiles",
    "load_model_files",
    "load_model_file",
    "check_model_io",
    "read_metrics",
    "read_model_folder",
    "bundled_model_files",
    "run_model_files",
    "MODEL_FILE",
    "METRICS_FILE",
    "BACKGROUND_FILE",
]
