"""The pixel half of the population check: does an image look like the model's training images?

A detector is fitted on the training split only: pooled features of a pretrained network
(``"efficientnet_lite0"``: ImageNet EfficientNet-Lite0, ``cxr.lite0``) or of the classifier itself
(``"classifier"``: the input of its ``logit`` layer), their mean and a shrinkage covariance
(scikit-learn ``LedoitWolf``). An image's score is its Mahalanobis distance from that mean; the
threshold is a high percentile (default 99th) of the distances of held-out training images (the
patient-grouped validation split, never the test split), so about 1 % of images like the training
images are flagged by construction.

Files (in a run directory or a model folder): ``population.npz`` (``mean (d,)``, ``precision_upper``
(the upper triangle of the symmetric ``(d, d)`` precision, row-major), ``heldout_scores (m,)`` sorted;
float32) and ``population.json`` (everything else: feature extractor, input size, threshold, what it
was fitted on, measured rates).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr.errors import ModelFileError
from cxr.population import DEFAULT_POPULATION, PEDIATRIC_AGES

STEM = "population"
NPZ_FILE = f"{STEM}.npz"
JSON_FILE = f"{STEM}.json"
VERSION = 1
LITE0 = "efficientnet_lite0"
CLASSIFIER = "classifier"
EXTRACTORS = (LITE0, CLASSIFIER)
DEFAULT_PERCENTILE = 99.0
BATCH_SIZE = 32


@dataclass
class PopulationDetector:
    """A fitted detector. ``score(features)`` -> distances; ``image_scores(images, model)`` from pixels.

    ``extractor``: "efficientnet_lite0" or "classifier"; ``image_size``: the side the extractor sees.
    ``mean (d,)``, ``precision (d, d)`` float32; ``threshold``: flag when score > threshold.
    ``heldout_scores (m,)``: sorted distances of the held-out training images (for percentiles).
    ``info``: the JSON side (fitted_on, rates, population, training_ages, ...).
    """

    extractor: str
    image_size: int
    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    heldout_scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def population(self) -> str:
        return str(self.info.get("population") or DEFAULT_POPULATION)

    @property
    def via_size(self) -> int | None:
        """The side images are first resized to before ``image_size`` (a run's cached image size), so that
        prediction repeats the fit's resampling; ``None``: straight from the full-resolution image."""
        value = self.info.get("via_size")
        return None if value is None else int(value)

    def input_image(self, pixels: np.ndarray) -> np.ndarray:
        """A full-resolution ``(h, w)`` uint8 image -> the ``(image_size, image_size)`` uint8 the detector sees."""
        from cxr.imaging import resize_square

        if self.via_size is not None:
            pixels = resize_square(pixels, self.via_size)
        return resize_square(pixels, self.image_size)

    @property
    def training_ages(self) -> tuple[float, float] | None:
        ages = self.info.get("training_ages", list(PEDIATRIC_AGES))
        return None if ages is None else (float(ages[0]), float(ages[1]))

    def score(self, features: np.ndarray) -> np.ndarray:
        """``(n, d)`` features -> ``(n,)`` float64 Mahalanobis distances (>= 0)."""
        centred = np.asarray(features, np.float64) - self.mean
        # One float32 matrix product against the stored float32 precision (no 13 MB float64 copy per call,
        # several times the einsum's speed), then the row sums in float64.
        projected = centred.astype(np.float32) @ np.asarray(self.precision, np.float32)
        squared = np.sum(projected.astype(np.float64) * centred, axis=1)
        return np.sqrt(np.maximum(squared, 0.0))

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """Where each score falls among the held-out training images' scores, 0-100."""
        reference = np.asarray(self.heldout_scores, np.float64)
        if reference.size == 0:
            return np.full(np.shape(scores), np.nan)
        return 100.0 * np.searchsorted(reference, np.asarray(scores, np.float64), side="right") / reference.size

    def image_scores(self, images: np.ndarray, model: Any = None, model_images: np.ndarray | None = None) -> np.ndarray:
        """``(n, s, s)`` uint8 images (any ``s``; resized to ``image_size``) -> ``(n,)`` distances.

        ``model``: the classifier, needed only by the "classifier" extractor, which reads ``model_images``
        (the ``(n, s, s)`` images the classifier itself sees) instead of ``images`` when they are given.
        """
        if self.extractor == CLASSIFIER and model_images is not None:
            images = model_images
        return self.score(image_features(images, self.extractor, self.image_size, model=model))

    def save(self, folder: str | Path, *, stem: str = STEM) -> tuple[Path, Path]:
        """Write ``<stem>.npz`` and ``<stem>.json`` (default ``population``) into ``folder`` (atomically each)."""
        from cxr.atomic import atomic_write_json

        folder = Path(folder)
        npz_path, json_path = folder / f"{stem}.npz", folder / f"{stem}.json"
        temporary = folder / f".{stem}.npz.tmp.npz"
        # The precision is symmetric: its upper triangle alone halves the file (6 -> 3 MB at 1280 features).
        upper = self.precision.astype(np.float32)[np.triu_indices(self.mean.size)]
        np.savez_compressed(temporary, mean=self.mean.astype(np.float32), precision_upper=upper,
                            heldout_scores=np.sort(self.heldout_scores).astype(np.float32))
        temporary.replace(npz_path)
        atomic_write_json(json_path, {**self.info, "version": VERSION, "extractor": self.extractor,
                                      "image_size": int(self.image_size), "threshold": float(self.threshold)})
        return npz_path, json_path

    def describe(self) -> str:
        """One line for a model card or a terminal."""
        rates = self.info.get("rates") or {}
        parts = [f"{name.replace('_', ' ')}: {value:.1%}" for name, value in rates.items()
                 if isinstance(value, int | float)]
        return (f"{self.extractor} features at {self.image_size} px, Mahalanobis distance (Ledoit-Wolf), "
                f"threshold {self.threshold:.2f} (the {self.info.get('percentile', DEFAULT_PERCENTILE):g}th "
                f"percentile of held-out training images)" + (f"; flagged {', '.join(parts)}" if parts else ""))


def load_detector(folder: str | Path, *, stem: str = STEM) -> PopulationDetector | None:
    """The single detector saved in ``folder`` as ``<stem>.npz``/``.json``, ``None`` when it has none.
    Raises ``ModelFileError`` when damaged. (``cxr.population_check.load_check`` also reads a combined one.)"""
    folder = Path(folder)
    npz_path, json_path = folder / f"{stem}.npz", folder / f"{stem}.json"
    if not npz_path.is_file() and not json_path.is_file():
        return None
    if not npz_path.is_file() and "skipped" in (_read_json(json_path) or {}):
        return None  # fitting was skipped at the end of training; the JSON says why
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
        with np.load(npz_path, allow_pickle=False) as data:
            mean = data["mean"].astype(np.float32)
            precision = _symmetric(data["precision_upper"].astype(np.float32), mean.size)
            heldout = np.sort(data["heldout_scores"].astype(np.float32))
        extractor, image_size, threshold = str(info["extractor"]), int(info["image_size"]), float(info["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"The population detector in {folder} cannot be read ({type(error).__name__}: "
                             f"{error}); expected {npz_path.name} and {json_path.name} as cxr writes them. Delete both "
                             f"files to predict without a population check, or refit them.") from None
    if extractor not in EXTRACTORS or mean.ndim != 1 or precision.shape != (mean.size, mean.size):
        raise ModelFileError(f"The population detector in {folder} is inconsistent (extractor {extractor!r}, "
                             f"mean {mean.shape}, precision {precision.shape}); refit it or delete its files.")
    return PopulationDetector(extractor, image_size, mean, precision, threshold, heldout, info)


def _symmetric(upper: np.ndarray, size: int) -> np.ndarray:
    """The ``(size, size)`` symmetric matrix whose upper triangle (row-major) is ``upper``."""
    if upper.shape != (size * (size + 1) // 2,):
        raise ValueError(f"precision_upper holds {upper.size} values; {size * (size + 1) // 2} expected")
    matrix = np.zeros((size, size), np.float32)
    rows, columns = np.triu_indices(size)
    matrix[rows, columns] = upper
    matrix[columns, rows] = upper
    return matrix


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def record_skipped(folder: str | Path, reason: str) -> Path:
    """Write a ``population.json`` that says why no detector was fitted (the model predicts "unknown")."""
    from cxr.atomic import atomic_write_json

    path = Path(folder) / JSON_FILE
    (Path(folder) / NPZ_FILE).unlink(missing_ok=True)
    atomic_write_json(path, {"version": VERSION, "skipped": str(reason)})
    return path


def card_info(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ``population.json`` dict for a model card: without the held-out scores a combined check keeps."""
    if not info or not isinstance(info.get("either"), dict):
        return info
    return {**info, "either": {key: value for key, value in info["either"].items() if key != "heldout_scores"}}


def card_lines(info: dict[str, Any]) -> list[str]:
    """Markdown lines of the model card's "Population check" section from a ``population.json`` dict."""
    lines = ["Every prediction says whether the image looks like this model's training population; for an image "
             "outside it the label is withheld (the probability is still computed, shown only on request)."]
    if info.get("skipped"):
        return lines + [f"- No population detector was fitted: {info['skipped']}. Verdicts are \"unknown\" "
                        "unless a metadata or image rule fires."]
    ages = info.get("training_ages")
    lines += [
        f"- Population: {info.get('population', DEFAULT_POPULATION)}"
        + (f"; training ages {ages[0]:g} to under {ages[1]:g} years (DICOM PatientAge outside is flagged)"
           if ages else ""),
        f"- Detector: {info.get('extractor')} pooled features at {info.get('image_size')} px"
        + (f" (images first resized to {info['via_size']} px, as the model's training images were)"
           if info.get("via_size") else "") + ", Mahalanobis distance "
        f"from the training mean with a Ledoit-Wolf shrinkage covariance (shrinkage "
        f"{float(info.get('shrinkage', float('nan'))):.3f}, {info.get('feature_dimension')} features)",
        f"- Fitted on: {info.get('fitted_on', 'the training split')} ({info.get('num_fit')} images)",
        f"- Threshold: {float(info.get('threshold', float('nan'))):.3f} = the {float(info.get('percentile', 99)):g}th "
        f"percentile of the distances of {info.get('num_heldout')} held-out training images "
        f"({info.get('heldout_on', 'the validation split')}); never chosen on the test split",
    ]
    either = info.get("either") or {}
    if either:
        second = either.get("classifier") or {}
        lines.append(
            f"- Second detector: the classifier's own features (the input of its logit layer, "
            f"{second.get('feature_dimension')} features at {second.get('image_size')} px), Mahalanobis distance "
            f"with a Ledoit-Wolf covariance fitted on the same images, threshold "
            f"{float(second.get('threshold', 0)):.3f} "
            f"(its {float(second.get('percentile') or 99.5):g}th percentile on the same held-out images). An image is "
            "outside when **either** detector flags it; its score is the larger of the two distances divided by "
            "their thresholds (above 1: outside)")
    lines += [
        "- Rules: DICOM body part not chest, a lateral view, a modality other than a radiograph, a colour "
        "photograph, an aspect ratio beyond 2:1 or a nearly uniform image also put an image outside",
    ]
    rates = info.get("rates") or {}
    if rates:
        lines.append("- Measured: " + "; ".join(f"{name}: {100 * value:.1f} % flagged" for name, value in rates.items()
                                               if isinstance(value, int | float)))
    if info.get("weights"):
        lines.append(f"- Pretrained weights: {info['weights']}")
    return lines


@functools.lru_cache(maxsize=4)
def _lite0_extractor(image_size: int):
    """The Lite0 feature model and a compiled call of it (a graph runs about twice as fast as eager calls
    on two CPU cores; one signature with any batch size, so it is traced once)."""
    from cxr import lite0
    from cxr.tensorflow_loader import tensorflow as tf

    network = lite0.feature_extractor(image_size)
    signature = [tf.TensorSpec([None, image_size, image_size, 1], tf.float32)]
    compiled = tf.function(lambda batch: network(batch, training=False), input_signature=signature,
                           autograph=False)
    return network, compiled


def _classifier_extractor(model: Any):
    """The classifier's feature model and a compiled call of it (as for Lite0: a graph, traced once)."""
    from cxr.models import LOGIT_LAYER
    from cxr.tensorflow_loader import keras
    from cxr.tensorflow_loader import tensorflow as tf

    cached = getattr(model, "_cxr_feature_model", None)
    if cached is None:
        network = keras.Model(model.input, model.get_layer(LOGIT_LAYER).input, name="classifier_features")
        signature = [tf.TensorSpec([None, *network.input.shape[1:]], tf.float32)]
        compiled = tf.function(lambda batch: network(batch, training=False), input_signature=signature,
                               autograph=False)
        cached = (network, compiled)
        try:
            model._cxr_feature_model = cached  # one per classifier: building it again costs seconds
        except AttributeError:
            pass
    return cached


def image_features(images: np.ndarray, extractor: str, image_size: int, *, model: Any = None,
                   batch_size: int = BATCH_SIZE) -> np.ndarray:
    """``(n, s, s)`` uint8 -> ``(n, d)`` float32 pooled features at ``image_size`` px."""
    from cxr.imaging import resize_square

    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, s, s) uint8; received shape {images.shape}")
    if images.shape[1:] != (image_size, image_size):
        images = np.stack([resize_square(image, image_size) for image in images]) if len(images) else \
            np.zeros((0, image_size, image_size), np.uint8)
    if extractor == LITE0:
        network, call = _lite0_extractor(int(image_size))
    elif extractor == CLASSIFIER:
        if model is None:
            raise ValueError("the 'classifier' population features need the classifier model")
        network, call = _classifier_extractor(model)
    else:
        raise ValueError(f"unknown population feature extractor {extractor!r}; expected one of {EXTRACTORS}")
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size, ..., None].astype(np.float32)
        outputs.append(np.asarray(call(batch), np.float32).reshape(len(batch), -1))
    width = int(network.output.shape[-1])
    return np.concatenate(outputs) if outputs else np.zeros((0, width), np.float32)


def fit_detector(fit_features: np.ndarray, heldout_features: np.ndarray, *, extractor: str, image_size: int,
                 percentile: float = DEFAULT_PERCENTILE, info: dict | None = None) -> PopulationDetector:
    """Fit mean + Ledoit-Wolf precision on ``fit_features (n, d)``; threshold = ``percentile`` of the
    distances of ``heldout_features (m, d)`` (images of the training population not used in the fit)."""
    from sklearn.covariance import LedoitWolf

    fit_features = np.asarray(fit_features, np.float64)
    heldout_features = np.asarray(heldout_features, np.float64)
    if fit_features.ndim != 2 or len(fit_features) < 2 or len(heldout_features) < 1:
        raise ValueError(f"a population detector needs at least 2 fit and 1 held-out feature rows; received "
                         f"{fit_features.shape} and {heldout_features.shape}")
    estimator = LedoitWolf(assume_centered=False).fit(fit_features)
    detector = PopulationDetector(extractor, int(image_size), estimator.location_.astype(np.float32),
                                  estimator.precision_.astype(np.float32), 0.0, np.zeros(0, np.float32),
                                  dict(info or {}))
    heldout_scores = np.sort(detector.score(heldout_features))
    detector.threshold = float(np.percentile(heldout_scores, percentile))
    detector.heldout_scores = heldout_scores.astype(np.float32)
    detector.info.update({"percentile": float(percentile), "num_fit": int(len(fit_features)),
                          "num_heldout": int(len(heldout_features)), "shrinkage": float(estimator.shrinkage_),
                          "feature_dimension": int(fit_features.shape[1])})
    detector.info.setdefault("population", DEFAULT_POPULATION)
    detector.info.setdefault("training_ages", list(PEDIATRIC_AGES))
    return detector


def fit_from_images(fit_images: np.ndarray, heldout_images: np.ndarray, *, extractor: str = LITE0,
                    image_size: int = 224, model: Any = None, percentile: float = DEFAULT_PERCENTILE,
                    info: dict | None = None, max_fit_images: int | None = None, seed: int = 0,
                    heldout_features: np.ndarray | None = None) -> PopulationDetector:
    """Features of ``fit_images`` / ``heldout_images`` ``(n, s, s)`` uint8, then :func:`fit_detector`.

    ``max_fit_images``: fit on a seeded random subset at most this large (keeps runs cheap).
    ``heldout_features``: the held-out images' features when the caller already computed them (a caller
    that also needs their distances in image order); ``heldout_images`` are then not read.
    """
    started = time.perf_counter()
    if max_fit_images is not None and len(fit_images) > max_fit_images:
        chosen = np.sort(np.random.default_rng(seed).choice(len(fit_images), max_fit_images, replace=False))
        fit_images = fit_images[chosen]
    fit_features = image_features(fit_images, extractor, image_size, model=model)
    if heldout_features is None:
        heldout_features = image_features(heldout_images, extractor, image_size, model=model)
    detector = fit_detector(fit_features, heldout_features, extractor=extractor, image_size=image_size,
                            percentile=percentile, info=info)
    detector.info["fit_seconds"] = round(time.perf_counter() - started, 1)
    if extractor == LITE0:
        from cxr import lite0

        detector.info["weights"] = f"{lite0.PACKAGE} {lite0.WEIGHTS_FILE} (SHA-256 {lite0.WEIGHTS_SHA256})"
    return detector


RUN_EXTRACTOR = LITE0
RUN_IMAGE_SIZE = 224  # chosen in docs/benchmarks.md ("Population detector: choice of features and input size")
MAX_FIT_IMAGES = 3000  # the covariance of 1280 features settles well before this; keeps runs cheap
# Below these a 99th percentile and a covariance mean little (and tiny test runs stay cheap): skipped, with the reason.
MIN_FIT_IMAGES, MIN_HELDOUT_IMAGES = 100, 20
