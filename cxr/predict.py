"""A ``Predictor``: one trained model with its image size, threshold and temperature, turning images into
calibrated answers (and, on request, heat maps).

Built from a run (``Predictor.from_run``), a ``.keras`` file (``Predictor.from_file``), the bundled model
(``Predictor.default``) or any of these by name (``Predictor.load``). Holds state, so it is a class; it
caches nothing globally (the app keeps one per model with ``st.cache_resource``).

A model file from elsewhere is loaded with Keras' ``safe_mode``: a file that carries Python code (a
``Lambda`` layer) is refused, because loading it would run that code.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr import paths
from cxr.calibration import check_temperature, sigmoid
from cxr.config import CLASS_NAMES
from cxr.errors import CxrError, ModelFileError, RunError

EXPLAIN_METHODS = ("gradcam", "shap")
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
BACKGROUND_FILE = "background.npy"  # optional (k, s, s) uint8 training sample beside a model, for SHAP
PREDICT_BATCH_SIZE = 32  # memory stays small at 150 px; larger batches gain little on two cores
MAX_ASPECT_RATIO = 2.0  # chest films are close to square; a 2:1 strip is likely a cropped or other view
MIN_SIDE = 100  # below 100 px lung texture is gone; the training originals are 400-2900 px
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "CHEST_LAT", "CHEST_PA", "CHEST_AP")


@dataclass
class PredictionResult:
    """The answer for one image.

    ``probability``: calibrated P(pneumonia) in [0, 1] (``None`` on error); ``raw_probability``: the
    network's own sigmoid output; ``label``: "normal" or "pneumonia" (probability >= threshold);
    ``image``: the ``(s, s)`` uint8 the model saw; ``heatmap``: ``(s, s)`` float32 in [0, 1] or ``None``;
    ``warnings``: reasons the image is unlike the training data (the answer is still given);
    ``error``: why there is no answer (the other images of the same call are unaffected).
    """

    name: str
    probability: float | None = None
    label: str | None = None
    threshold: float | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    info: Any = None  # cxr.imaging.ImageInfo, or None for arrays and errors
    raw_probability: float | None = None
    explanation: str | None = None  # "gradcam" or "shap" when a heat map was made
    explain_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_row(self) -> dict[str, Any]:
        """A flat dict for a table or a CSV row (no arrays)."""
        return {
            "file": self.name,
            "probability": self.probability,
            "label": self.label,
            "threshold": self.threshold,
            "raw_probability": self.raw_probability,
            "warnings": " | ".join(self.warnings),
            "error": self.error or "",
            "explain_seconds": self.explain_seconds,
        }


def input_warnings(info: Any = None, *, shape: tuple[int, ...] | None = None) -> list[str]:
    """Why an image looks unlike the training data (pediatric chest X-rays): never a refusal.

    ``info``: ``cxr.imaging.ImageInfo`` of a decoded file, or ``None`` for an array whose ``shape``
    (h, w) is given instead.
    """
    messages = []
    if info is not None:
        width, height = int(info.width), int(info.height)
        body_part = (getattr(info, "body_part", None) or "").strip()
        if body_part and body_part.upper().replace(" ", "_") not in CHEST_BODY_PARTS:
            messages.append(
                f"The DICOM header says body part {body_part!r}, not chest: the model only learnt "
                f"chest X-rays, so this answer means little."
            )
        modality = (getattr(info, "modality", None) or "").strip().upper()
        if modality and modality not in ("CR", "DX", "DR", "RG", "OT"):
            messages.append(
                f"The DICOM modality is {modality!r}, not a radiograph (CR/DX): the model only learnt chest X-rays."
            )
        if getattr(info, "is_color_photo", False):
            messages.append("This looks like a colour photograph, not an X-ray; the answer is likely meaningless.")
    elif shape is not None:
        height, width = int(shape[0]), int(shape[1])
    else:
        return messages
    short, long = min(width, height), max(width, height)
    if short > 0 and long / short > MAX_ASPECT_RATIO:
        messages.append(
            f"Unusual shape {width}x{height} (aspect ratio {long / short:.1f}:1); chest X-rays are "
            f"close to square and it will be stretched to a square."
        )
    if short < MIN_SIDE:
        messages.append(
            f"Very small image ({width}x{height} px); the training images were 400-2900 px, so fine detail is missing."
        )
    return messages


def _read_metrics(folder: Path) -> dict | None:
    path = folder / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
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
    import keras

    from cxr.models import register_layers

    register_layers()  # cxr's own registered layers (e.g. fast_norm's normalisation); no code in the file
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises ValueError/TypeError/KeyError/OSError depending on the damage
        text = str(error)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise ModelFileError(
                f"{path.name!r} contains Python code (a Lambda layer or a custom function), which Keras safe "
                f"mode refuses to load because loading it would run that code. Only load such a file if you "
                f"trust its author, and then do it yourself with keras.saving.load_model(path, "
                f"safe_mode=False); cxr models never need code in the file."
            ) from None
        # A class or function from a module outside Keras (a custom layer, or a config edited to point at
        # os.system): Keras stops before importing it, and the message must say so rather than "truncated".
        foreign = re.search(r"Could not locate (class|function) '([^']+)'", text)
        if foreign:
            module = re.search(r"'module': '([^']+)'", text[foreign.end():])
            origin = f" from module {module.group(1)!r}" if module else ""
            raise ModelFileError(
                f"{path.name!r} uses a custom {foreign.group(1)} {foreign.group(2)!r}{origin} that is not part "
                f"of Keras or cxr, so it was refused: loading code named by a file from elsewhere could run it. "
                f"Expected a .keras file saved by cxr (built from Keras layers only); re-save the model "
                f"without custom objects, or train one here."
            ) from None
        raise ModelFileError(
            f"{path.name!r} could not be loaded as a Keras model ({type(error).__name__}: "
            f"{text.splitlines()[0] if text else 'no details'}). It may be truncated or saved by "
            f"a newer Keras; copy it again or re-save it."
        ) from None
    check_model_io(model, name=path.name)
    return model


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


class Predictor:
    """A model ready to answer: ``predict(sources) -> list[PredictionResult]``.

    ``model``: a Keras model taking ``(n, s, s, 1)`` raw pixels and giving ``(n, 1)`` P(pneumonia);
    ``threshold``: decision threshold on the calibrated probability; ``temperature``: temperature
    scaling (1 = none); ``threshold_rule``: how the threshold was chosen (for display); ``source``:
    where the model came from; ``background``: ``(k, s, s)`` uint8 training images for SHAP, or a
    callable returning them (loaded only when SHAP is first asked for).
    """

    def __init__(
        self,
        model,
        *,
        threshold: float = 0.5,
        temperature: float = 1.0,
        threshold_rule: str = "fixed",
        source: str | None = None,
        metrics: dict | None = None,
        background: Any = None,
        notes: list[str] | None = None,
    ):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ModelFileError(
                f"threshold must be a number from 0 to 1; received {threshold!r}. Check the model's metrics.json."
            )
        check_temperature(temperature)
        self.model = model
        self.image_size = check_model_io(model, name=source or getattr(model, "name", "model"))
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.threshold_rule = threshold_rule
        self.source = source
        self.metrics = metrics
        self.notes = list(notes or [])
        self._background = background
        self.folder: Path | None = None  # the folder the model was loaded from (a run's, for from_run)
        self._scorer = None
        self._gradcam = None
        self._shap = None

    # ---------------------------------------------------------------------------------------- builders
    @classmethod
    def from_model_folder(cls, folder, *, source: str | None = None) -> Predictor:
        """A folder holding ``model.keras`` and usually ``metrics.json`` (a run, or the bundled model)."""
        folder = Path(folder)
        model = load_model_file(folder / MODEL_FILE)
        return cls._with_metrics(model, folder, source=source or str(folder))

    @classmethod
    def _with_metrics(cls, model, folder: Path, *, source: str, background: Any = None) -> Predictor:
        metrics = _read_metrics(folder)
        notes = []
        if metrics is None:
            notes.append(f"No {METRICS_FILE} beside the model: threshold 0.5, probabilities not calibrated.")
            threshold, temperature, rule = 0.5, 1.0, "fixed"
        else:
            threshold = metrics.get("threshold", 0.5)
            temperature = metrics.get("temperature", 1.0)
            rule = metrics.get("threshold_rule", "fixed")
        if background is None and (folder / BACKGROUND_FILE).is_file():
            background = folder / BACKGROUND_FILE
        predictor = cls(
            model,
            threshold=threshold,
            temperature=temperature,
            threshold_rule=rule,
            source=source,
            metrics=metrics,
            background=background,
            notes=notes,
        )
        predictor.folder = folder
        return predictor

    @classmethod
    def from_run(cls, run_id_or_dir) -> Predictor:
        """The final model of a training run, with the threshold and temperature chosen on its validation split.

        SHAP's background is a sample of the run's training images (read when SHAP is first used).
        """
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
        model = load_model_file(folder / MODEL_FILE)

        def run_background():
            config = runs.read_config(folder)
            from cxr.datasets import load_dataset
            from cxr.explain import background_sample

            # The path the run was trained from first (it may live outside $CXR_HOME), then the name.
            reference = config.get("dataset_path")
            if not reference or not Path(reference).is_dir():
                reference = config["dataset"]
            dataset = load_dataset(reference, verify=False)
            return background_sample(dataset.images("train"))

        return cls._with_metrics(
            model,
            folder,
            source=f"run {folder.name}",
            background=None if (folder / BACKGROUND_FILE).is_file() else run_background,
        )

    @classmethod
    def from_file(cls, path) -> Predictor:
        """A ``.keras`` file from anywhere, loaded in safe mode; ``metrics.json`` beside it is used if present."""
        path = Path(path).expanduser()
        model = load_model_file(path)
        return cls._with_metrics(model, path.parent, source=str(path))

    @classmethod
    def default(cls) -> Predictor:
        """The bundled model in ``models/default/`` (model.keras + metrics.json + model_card.md)."""
        folder = paths.BUNDLED_MODEL_DIR
        if not (folder / MODEL_FILE).is_file():
            raise ModelFileError(
                f"No bundled model is present ({str(folder / MODEL_FILE)!r} does not exist). "
                f"Train one (`python -m cxr train DATASET`) and pass it with --model RUN_ID, or "
                f"copy a run's model.keras, metrics.json and model_card.md into {str(folder)!r}."
            )
        return cls.from_model_folder(folder, source="bundled default model")

    @classmethod
    def load(cls, spec=None) -> Predictor:
        """``None`` -> the bundled model; a ``.keras`` path -> ``from_file``; a run folder or run id ->
        ``from_run``; a folder with ``model.keras`` -> ``from_model_folder``."""
        if spec is None or str(spec) in ("", "default"):
            return cls.default()
        path = Path(str(spec)).expanduser()
        if path.is_file():
            return cls.from_file(path)
        if path.is_dir():
            if (path / "config.json").is_file():
                return cls.from_run(path)
            if (path / MODEL_FILE).is_file():
                return cls.from_model_folder(path)
            raise ModelFileError(
                f"Folder {str(path)!r} holds no {MODEL_FILE}. Expected a run folder or a model "
                f"folder; pass the path of a .keras file or a run id."
            )
        if path.suffix.lower() in (".keras", ".h5", ".hdf5"):
            raise ModelFileError(f"No model file at {str(path)!r}. Check the path.")
        try:
            return cls.from_run(str(spec))
        except RunError as error:
            raise ModelFileError(
                f"{str(spec)!r} is neither a model file, a model folder nor a run id. {error}"
            ) from None

    # -------------------------------------------------------------------------------------- properties
    def describe(self) -> dict[str, Any]:
        """What the UI and the command line show about the model."""
        return {
            "source": self.source,
            "name": getattr(self.model, "name", None),
            "image_size": self.image_size,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "temperature": self.temperature,
            "notes": list(self.notes),
        }

    def _score_model(self):
        if self._scorer is None:
            import keras

            from cxr.models import LOGIT_LAYER

            try:
                logit = self.model.get_layer(LOGIT_LAYER).output
                self._scorer = ("logit", keras.Model(self.model.inputs[0], logit))
            except ValueError:
                self._scorer = ("probability", self.model)
        return self._scorer

    # ------------------------------------------------------------------------------------- prediction
    def raw_logits(self, images: np.ndarray) -> np.ndarray:
        """Pre-sigmoid outputs ``(n,)`` float64 for ``(n, s, s)`` uint8 images (from the probability when the
        model has no ``logit`` layer)."""
        from cxr.calibration import to_logits

        images = np.asarray(images)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim != 3 or images.shape[1:] != (self.image_size, self.image_size):
            raise CxrError(
                f"Expected (n, {self.image_size}, {self.image_size}) uint8 images; received shape "
                f"{images.shape}. Resize them with cxr.imaging.resize_square."
            )
        kind, scorer = self._score_model()
        outputs = []
        for start in range(0, images.shape[0], PREDICT_BATCH_SIZE):
            batch = images[start : start + PREDICT_BATCH_SIZE].astype(np.float32)[..., None]
            outputs.append(np.asarray(scorer(batch, training=False), dtype=np.float64).reshape(-1))
        values = np.concatenate(outputs) if outputs else np.zeros(0)
        return values if kind == "logit" else to_logits(values)

    def probabilities(self, images: np.ndarray, *, calibrated: bool = True) -> np.ndarray:
        """P(pneumonia) ``(n,)`` float64 for ``(n, s, s)`` uint8 images, after temperature scaling by default."""
        logits = self.raw_logits(images)
        return sigmoid(logits / self.temperature if calibrated else logits)

    def label_of(self, probability: float) -> str:
        return CLASS_NAMES[int(probability >= self.threshold)]

    def _prepare(self, source: Any, name: str) -> tuple[np.ndarray, Any, list[str]]:
        """One source -> ``(s, s)`` uint8, its ImageInfo (or None), warnings. Raises CxrError."""
        if isinstance(source, np.ndarray):
            pixels = source
            if pixels.ndim == 3 and pixels.shape[-1] == 1:
                pixels = pixels[..., 0]
            if pixels.ndim != 2 or pixels.dtype != np.uint8 or 0 in pixels.shape:
                raise CxrError(
                    f"{name!r}: an array image must be (h, w) uint8 grayscale; received shape "
                    f"{pixels.shape} dtype {pixels.dtype}. Convert it with cxr.imaging first."
                )
            from cxr.imaging import resize_square

            return resize_square(pixels, self.image_size), None, input_warnings(shape=pixels.shape)
        from cxr.imaging import load_image

        pixels, info = load_image(source, self.image_size, name=name)
        return pixels, info, input_warnings(info)

    def predict(self, sources, *, names: list[str] | None = None, explain: str | None = None) -> list[PredictionResult]:
        """Answers for ``sources`` (paths, bytes, file-likes such as uploads, DICOM, or ``(h, w)`` uint8
        arrays; one source alone is accepted too), in order.

        ``names``: shown in results (default: the file names, else ``image 1``, ...). ``explain``:
        ``None``, ``"gradcam"`` or ``"shap"`` adds a heat map to each answer. A source that cannot be read
        gives a result with ``error`` set; the others still get their answers.
        """
        if explain not in (None, *EXPLAIN_METHODS):
            raise CxrError(f"explain must be None, 'gradcam' or 'shap'; received {explain!r}.")
        if isinstance(sources, (str, Path, bytes, bytearray, np.ndarray)) or hasattr(sources, "read"):
            sources = [sources]
        sources = list(sources)
        if names is not None and len(names) != len(sources):
            raise CxrError(
                f"names must give one name per source; received {len(names)} names for {len(sources)} sources."
            )
        results: list[PredictionResult] = []
        for index, source in enumerate(sources):
            name = names[index] if names is not None else _default_name(source, index)
            result = PredictionResult(name=name, threshold=self.threshold)
            try:
                result.image, result.info, result.warnings = self._prepare(source, name)
                if result.info is not None:
                    result.name = names[index] if names is not None else result.info.name
            except CxrError as error:
                result.error = str(error)
            except Exception as error:  # noqa: BLE001 - a decoder crash on one file must not stop the others
                result.error = f"{name!r} could not be read ({type(error).__name__}: {error})."
            results.append(result)

        ready = [result for result in results if result.error is None]
        if ready:
            logits = self.raw_logits(np.stack([result.image for result in ready]))
            raw, calibrated = sigmoid(logits), sigmoid(logits / self.temperature)
            for result, raw_value, value in zip(ready, raw, calibrated, strict=True):
                result.raw_probability, result.probability = float(raw_value), float(value)
                result.label = self.label_of(float(value))
        if explain is not None:
            for result in ready:
                self._explain(result, explain)
        return results

    def _explain(self, result: PredictionResult, method: str) -> None:
        from cxr import explain

        started = time.perf_counter()
        try:
            if method == "gradcam":
                if self._gradcam is None:
                    self._gradcam = explain.GradCam(self.model)
                result.heatmap = self._gradcam(result.image)
            else:
                if self._shap is None:
                    self._shap = explain.ShapExplainer(self.model, self.shap_background())
                attributions, _ = self._shap(result.image)
                # As Grad-CAM does, show what argued for the answer given: the negative part for "normal".
                sign = 1.0 if result.label == CLASS_NAMES[1] else -1.0
                result.heatmap = explain.attribution_heatmap(sign * attributions)
            result.explanation = method
        except CxrError as error:
            result.warnings.append(f"No {method} heat map: {error}")
        result.explain_seconds = time.perf_counter() - started

    def shap_background(self) -> np.ndarray:
        """The ``(k, s, s)`` uint8 background for SHAP: given, loaded from ``background.npy``, or sampled from
        the run's training images. Raises ``CxrError`` when none is available."""
        background = self._background
        if callable(background):
            try:
                background = background()
            except CxrError as error:
                raise CxrError(
                    f"SHAP needs a sample of training images as background, and the run's data set "
                    f"cannot be loaded ({error})."
                ) from None
        elif isinstance(background, (str, Path)):
            background = np.load(background, allow_pickle=False)
        if background is None:
            raise CxrError(
                "SHAP needs a sample of training images as background and this model has none: use a "
                "run whose data set is imported, put a background.npy ((k, s, s) uint8) beside the "
                "model, or call predictor.set_background(images)."
            )
        self._background = np.asarray(background)
        return self._background

    def set_background(self, images: np.ndarray, *, num_images: int = 32, seed: int = 0) -> None:
        """Use a sample of ``images`` ``(n, s, s)`` uint8 (training images) as SHAP's background."""
        from cxr.explain import background_sample

        self._background = background_sample(images, num_images=num_images, seed=seed)
        self._shap = None


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")


def labelled_folder_files(folder) -> list[tuple[Path, int]]:
    """``(path, label)`` of every image in ``folder/{normal,pneumonia}/`` (class names case-insensitive,
    sub-folders included), sorted. A folder whose only class folders sit under one ``test/`` is accepted.

    Raises ``CxrError`` when a class folder is missing or holds no image.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CxrError(
            f"{str(folder)!r} is not a folder. Expected a folder holding normal/ and pneumonia/ "
            f"sub-folders of labelled images."
        )

    def class_folders(root: Path) -> dict[str, Path]:
        return {
            child.name.lower(): child
            for child in root.iterdir()
            if child.is_dir() and child.name.lower() in CLASS_NAMES
        }

    found = class_folders(folder)
    if not found:
        nested = [child for child in folder.iterdir() if child.is_dir() and child.name.lower() == "test"]
        if len(nested) == 1:
            folder, found = nested[0], class_folders(nested[0])
    missing = [name for name in CLASS_NAMES if name not in found]
    if missing:
        present = sorted(child.name for child in folder.iterdir() if child.is_dir())
        raise CxrError(
            f"{str(folder)!r} has no {' or '.join(missing)} folder (sub-folders found: {present or 'none'}). "
            f"Expected normal/ and pneumonia/ sub-folders (any case) of labelled images."
        )
    files = []
    for label, name in enumerate(CLASS_NAMES):
        class_files = sorted(
            path
            for path in found[name].rglob("*")
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        )
        if not class_files:
            raise CxrError(
                f"{str(found[name])!r} holds no image ({', '.join(IMAGE_SUFFIXES)}). Put the {name} images there."
            )
        files += [(path, label) for path in class_files]
    return files


def external_validation(predictor: Predictor, source, *, progress=None) -> dict[str, Any]:
    """Evaluate ``predictor`` on a labelled folder or an imported data set's test split (external validation).

    ``source``: a folder (``normal/``, ``pneumonia/``) or an imported data set name/path. Uses the
    predictor's own threshold and temperature (nothing is refitted on external data). Returns
    ``{"name", "source", "metrics": binary_metrics(...), "errors": [{"file", "error"}], "warnings":
    {file: [..]}, "predictions": DataFrame(file, y_true, y_score, y_score_raw)}``; unreadable files are
    listed in ``errors`` and left out.
    """
    import pandas as pd

    from cxr.evaluation import binary_metrics

    path = Path(str(source)).expanduser()
    errors, warnings_by_file = [], {}
    if path.is_dir() and not (path / "dataset.json").is_file():
        files = labelled_folder_files(path)
        kept_files, labels, images = [], [], []
        for done, (file, label) in enumerate(files, start=1):
            if progress is not None:
                progress(done, len(files))
            try:
                pixels, _info, messages = predictor._prepare(file, file.name)
            except CxrError as error:
                errors.append({"file": str(file), "error": str(error)})
                continue
            if messages:
                warnings_by_file[str(file)] = messages
            kept_files.append(str(file.relative_to(path)))
            labels.append(label)
            images.append(pixels)
        name = path.name
        if not images:
            raise CxrError(
                f"No image of {str(path)!r} could be read ({len(errors)} errors; first: "
                f"{errors[0]['error'] if errors else 'none'})."
            )
        images = np.stack(images)
    else:
        from cxr.datasets import load_dataset

        dataset = load_dataset(str(source), verify=False)
        split = "test" if "test" in dataset.splits else dataset.splits[-1]
        images, labels = dataset.images(split), dataset.labels(split)
        if dataset.image_size != predictor.image_size:
            from cxr.imaging import resize_square

            images = np.stack([resize_square(image, predictor.image_size) for image in images])
        part = dataset.manifest[dataset.manifest["split"] == split]
        kept_files = (
            part["file"].astype(str).tolist()
            if len(part) == len(labels)
            else [f"{split}/{index}" for index in range(len(labels))]
        )
        name = f"{dataset.name}-{split}"
    labels = np.asarray(labels, dtype=np.int64)
    logits = predictor.raw_logits(images)
    raw, calibrated = sigmoid(logits), sigmoid(logits / predictor.temperature)
    return {
        "name": name,
        "source": str(source),
        "metrics": binary_metrics(labels, calibrated, predictor.threshold),
        "errors": errors,
        "warnings": warnings_by_file,
        "predictions": pd.DataFrame({"file": kept_files, "y_true": labels, "y_score": calibrated, "y_score_raw": raw}),
    }


def _default_name(source: Any, index: int) -> str:
    if isinstance(source, (str, Path)):
        return Path(source).name or str(source)
    source_name = getattr(source, "name", None)
    if isinstance(source_name, str) and source_name:
        return Path(source_name).name
    return f"image {index + 1}"


__all__ = [
    "labelled_folder_files",
    "external_validation",
    "Predictor",
    "PredictionResult",
    "load_model_file",
    "check_model_io",
    "input_warnings",
    "EXPLAIN_METHODS",
]
