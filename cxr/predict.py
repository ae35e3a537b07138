"""A ``Predictor``: one trained model with its image size, threshold and temperature, turning images into
calibrated answers (and, on request, heat maps).

Built with ``Predictor.load(spec)`` ("default" / a run id / a run or model folder / a ``.keras`` file; found
and read by ``cxr.model_files``), or from explicit values with ``Predictor(model, threshold=...)``. Holds
state, so it is a class; it caches nothing globally (the app keeps one per model with ``st.cache_resource``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr.calibration import check_temperature, sigmoid
from cxr.config import CLASS_NAMES
from cxr.errors import CxrError, ModelFileError
from cxr.model_files import check_model_io, load_model_files
from cxr.population import DEFAULT_POPULATION, PopulationVerdict, verdict_for

EXPLAIN_METHODS = ("gradcam", "shap")
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
    ``error``: why there is no answer (the other images of the same call are unaffected);
    ``population``: whether the image is from the model's training population (``cxr.population``;
    ``None`` only when the image could not be read). For an "outside" image ``label`` is ``None``
    (withheld) unless ``predict(..., allow_outside=True)``; ``probability`` is computed all the same.
    """

    name: str
    probability: float | None = None
    label: str | None = None
    threshold: float | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    info: Any = None  # cxr.pixels.ImageInfo, or None for arrays and errors
    raw_probability: float | None = None
    explanation: str | None = None  # "gradcam" or "shap" when a heat map was made
    explain_seconds: float | None = None
    population: PopulationVerdict | None = None

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
            "population": self.population.status if self.population is not None else "",
            "population_score": self.population.score if self.population is not None else None,
            "population_reason": self.population.reason if self.population is not None else "",
        }


def input_warnings(info: Any = None, *, shape: tuple[int, ...] | None = None) -> list[str]:
    """Why an image looks unlike the training data (pediatric chest X-rays): never a refusal.

    ``info``: ``cxr.pixels.ImageInfo`` of a decoded file, or ``None`` for an array whose ``shape``
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


class Predictor:
    """A model ready to answer: ``predict(sources) -> list[PredictionResult]``.

    ``model``: a Keras model taking ``(n, s, s, 1)`` raw pixels and giving ``(n, 1)`` P(pneumonia);
    ``threshold``: decision threshold on the calibrated probability; ``temperature``: temperature
    scaling (1 = none); ``threshold_rule``: how the threshold was chosen (for display); ``source``:
    where the model came from; ``folder``: the folder it was loaded from; ``background``: a function returning
    ``(k, s, s)`` uint8 training images for SHAP, called only when SHAP is first asked for (images at hand go
    to ``set_background``); ``population``: the model's ``cxr.population_detector.PopulationDetector`` or
    ``None`` (verdicts are then "unknown" unless a metadata or image rule fires).
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
        notes: list[str] | None = None,
        folder: Path | None = None,
        background: Callable[[], np.ndarray] | None = None,
        population: Any = None,
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
        self.folder = folder
        self._load_background = background
        self.population = population
        self._background: np.ndarray | None = None
        self._scorer = None
        self._gradcam = None
        self._shap = None

    @classmethod
    def load(cls, spec=None) -> Predictor:
        """The model named by ``spec``: ``None`` or "default" (the bundled model), a run id, a run or model
        folder, or a ``.keras`` file (see ``cxr.model_files.load_model_files``)."""
        from cxr.population_check import load_usable_detector

        files = load_model_files(spec)
        population, note = load_usable_detector(files.folder) if files.folder is not None else (None, None)
        return cls(
            files.model,
            threshold=files.threshold,
            temperature=files.temperature,
            threshold_rule=files.threshold_rule,
            source=files.source,
            metrics=files.metrics,
            notes=files.notes,
            folder=files.folder,
            background=files.background,
            population=population,
        )

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
            "population": self.population.describe() if self.population is not None else None,
        }

    def _score_model(self):
        if self._scorer is None:
            from cxr.models import LOGIT_LAYER
            from cxr.tensorflow_loader import keras

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
        image, info, warnings, _ = self._prepare_both(source, name)
        return image, info, warnings

    def _prepare_both(self, source: Any, name: str) -> tuple[np.ndarray, Any, list[str], np.ndarray | None]:
        """As ``_prepare``, plus the image the population detector sees (``None`` without a detector);
        the file is decoded once for both."""
        from cxr.imaging import resize_square

        pixels, info = self._decode(source, name)
        warnings = input_warnings(info) if info is not None else input_warnings(shape=pixels.shape)
        detector_image = self.population.input_image(pixels) if self.population is not None else None
        return resize_square(pixels, self.image_size), info, warnings, detector_image

    def _decode(self, source: Any, name: str) -> tuple[np.ndarray, Any]:
        """One source -> full-resolution ``(h, w)`` uint8 and its ImageInfo (``None`` for an array)."""
        if isinstance(source, np.ndarray):
            pixels = source
            if pixels.ndim == 3 and pixels.shape[-1] == 1:
                pixels = pixels[..., 0]
            if pixels.ndim != 2 or pixels.dtype != np.uint8 or 0 in pixels.shape:
                raise CxrError(
                    f"{name!r}: an array image must be (h, w) uint8 grayscale; received shape "
                    f"{pixels.shape} dtype {pixels.dtype}. Convert it with cxr.imaging first."
                )
            return pixels, None
        from cxr.imaging import decode_image

        decoded = decode_image(source, name=name)
        return decoded.pixels, decoded.info

    def predict(self, sources, *, names: list[str] | None = None, explain: str | None = None,
                allow_outside: bool = False) -> list[PredictionResult]:
        """Answers for ``sources`` (paths, bytes, file-likes such as uploads, DICOM, or ``(h, w)`` uint8
        arrays; one source alone is accepted too), in order.

        ``names``: shown in results (default: the file names, else ``image 1``, ...). ``explain``:
        ``None``, ``"gradcam"`` or ``"shap"`` adds a heat map to each answer. A source that cannot be read
        gives a result with ``error`` set; the others still get their answers. Every answer carries a
        population verdict; the label of an image outside the training population is withheld (``None``)
        unless ``allow_outside``.
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
        results, detector_images, array_shapes = self._read_all(sources, names)
        ready = [result for result in results if result.error is None]
        if ready:
            self._answer(ready, detector_images, array_shapes, allow_outside=allow_outside)
        if explain is not None:
            for result in ready:
                self._explain(result, explain)
        return results

    def _read_all(self, sources: list, names: list[str] | None) -> tuple[list[PredictionResult], dict, dict]:
        """One result per source, with its model image, info and warnings, or its ``error``; beside them, by
        ``id(result)``, the population detector's image and (for arrays) the full-size shape."""
        results: list[PredictionResult] = []
        detector_images: dict[int, np.ndarray | None] = {}
        array_shapes: dict[int, tuple[int, ...]] = {}
        for index, source in enumerate(sources):
            name = names[index] if names is not None else _default_name(source, index)
            result = PredictionResult(name=name, threshold=self.threshold)
            try:
                result.image, result.info, result.warnings, detector_images[id(result)] = self._prepare_both(
                    source, name)
                if isinstance(source, np.ndarray):
                    array_shapes[id(result)] = source.shape[:2]
                if result.info is not None:
                    result.name = names[index] if names is not None else result.info.name
            except CxrError as error:
                result.error = str(error)
            except Exception as error:  # noqa: BLE001 - a decoder crash on one file must not stop the others
                result.error = f"{name!r} could not be read ({type(error).__name__}: {error})."
            results.append(result)
        return results, detector_images, array_shapes

    def _answer(self, ready: list[PredictionResult], detector_images: dict, array_shapes: dict, *,
                allow_outside: bool) -> None:
        """Probabilities (raw and calibrated), population verdicts and labels for the readable ``ready``
        results, in one model call; an outside image's label stays ``None`` unless ``allow_outside``."""
        logits = self.raw_logits(np.stack([result.image for result in ready]))
        raw, calibrated = sigmoid(logits), sigmoid(logits / self.temperature)
        verdicts = self.population_verdicts([result.info for result in ready],
                                            [detector_images.get(id(result)) for result in ready],
                                            shapes=[array_shapes.get(id(result)) for result in ready],
                                            images=[result.image for result in ready])
        for result, raw_value, value, verdict in zip(ready, raw, calibrated, verdicts, strict=True):
            result.raw_probability, result.probability = float(raw_value), float(value)
            result.population = verdict
            result.label = None if verdict.outside and not allow_outside else self.label_of(float(value))

    def population_verdicts(self, infos: list, detector_images: list | None = None, *,
                            shapes: list | None = None, images: Any = None) -> list[PopulationVerdict]:
        """One verdict per image: metadata and image rules from ``infos`` (``ImageInfo`` or ``None``; for
        ``None`` the full-size ``shapes`` (h, w) give the aspect rule) and, with a detector, the distance of
        ``detector_images`` (``(s, s)`` uint8 from ``population.input_image``) and the contrast rule on
        ``images`` (the ``(s, s)`` uint8 the model sees)."""
        detector = self.population
        count = len(infos)
        scores = percentiles = [None] * count
        if detector is not None and count:
            if detector_images is None or any(image is None for image in detector_images):
                raise CxrError("population_verdicts needs the detector's image of every input "
                               "(population.input_image of the full-size pixels).")
            scores = detector.image_scores(np.stack(detector_images), self.model,
                                           model_images=None if images is None else np.stack(images))
            percentiles = detector.percentile(scores)
        return [
            verdict_for(info, shape=(shapes[index] if shapes is not None and info is None else None),
                        score=None if scores[index] is None else float(scores[index]),
                        percentile=None if percentiles[index] is None else float(percentiles[index]),
                        threshold=detector.threshold if detector is not None else None,
                        training_ages=detector.training_ages if detector is not None else None,
                        population=detector.population if detector is not None else DEFAULT_POPULATION,
                        # The contrast rule covers the detector's blind spot (a blank image lands near the
                        # training mean): part of the pixel check, so only with a detector.
                        pixels=None if images is None or detector is None else images[index])
            for index, info in enumerate(infos)
        ]

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
        """The ``(k, s, s)`` uint8 background for SHAP: set with ``set_background``, or loaded once (from
        ``background.npy`` or the run's training images). Raises ``CxrError`` when none is available."""
        if self._background is None:
            if self._load_background is None:
                raise CxrError(
                    "SHAP needs a sample of training images as background and this model has none: use a "
                    "run whose data set is imported, put a background.npy ((k, s, s) uint8) beside the "
                    "model, or call predictor.set_background(images)."
                )
            self._background = np.asarray(self._load_background())
        return self._background

    def set_background(self, images: np.ndarray, *, num_images: int = 32, seed: int = 0) -> None:
        """Use a sample of ``images`` ``(n, s, s)`` uint8 (training images) as SHAP's background."""
        from cxr.explain import background_sample

        self._background = background_sample(images, num_images=num_images, seed=seed)
        self._shap = None


def _default_name(source: Any, index: int) -> str:
    if isinstance(source, (str, Path)):
        return Path(source).name or str(source)
    source_name = getattr(source, "name", None)
    if isinstance(source_name, str) and source_name:
        return Path(source_name).name
    return f"image {index + 1}"


__all__ = ["Predictor", "PredictionResult", "input_warnings", "EXPLAIN_METHODS"]
