"""Settings as frozen dataclasses: one place for every default, its reason, and its allowed range.

Each field's comment says why the default is what it is. ``__post_init__`` refuses a bad value with a
``ValueError`` that names the field, the value received and the range allowed, so the command line and
the pages can show the message as it is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

# Allowed ranges, shared with the UI (sliders take their bounds from here).
IMAGE_SIZE_RANGE = (32, 512)  # below 32 px lungs are a blur; above 512 px a CPU cannot train in time
VALIDATION_FRACTION_RANGE = (0.05, 0.5)
TEST_FRACTION_RANGE = (0.05, 0.5)
EPOCHS_RANGE = (1, 500)
BATCH_SIZE_RANGE = (1, 1024)
LEARNING_RATE_RANGE = (1e-7, 1.0)
DROPOUT_RANGE = (0.0, 0.9)
ROTATION_RANGE = (0.0, 180.0)
ZOOM_RANGE = (0.0, 0.9)
SHIFT_RANGE = (0.0, 0.5)
BRIGHTNESS_RANGE = (0.0, 0.9)  # beyond ±0.9·255 every image is black or white
CONTRAST_RANGE = (0.0, 0.9)  # beyond 1 ± 0.9 an image is flat or saturated
PHOTOMETRIC_RANGE = (0.0, 1.0)  # 1 = the strongest changes of cxr.photometric (gamma 0.58-1.73, ...)
RANDOM_CROP_RANGE = (0.0, 0.8)  # beyond 80 % of the area removed the lungs may be cut away
LABEL_SMOOTHING_RANGE = (0.0, 0.4)
MIXUP_RANGE = (0.0, 1.0)  # Beta(α, α): above 1 most pairs are near-even blends, which no longer look like either class

OPTIMIZERS = ("rmsprop", "adam", "sgd")
SCHEDULES = ("constant", "plateau", "cosine")
CLASS_WEIGHTINGS = ("none", "balanced")
STRATEGIES = ("default", "mirrored", "multi-worker")
THRESHOLD_RULES = ("youden", "sensitivity", "fixed")  # how run finalisation picks the decision threshold
MIN_SENSITIVITY_RANGE = (0.5, 1.0)  # below 50 % a "sensitivity" target misses most pneumonia: use youden
FIXED_THRESHOLD_RANGE = (0.0, 1.0)
CLASS_NAMES = ("normal", "pneumonia")  # label 0, label 1


def check_range(name: str, value: float, bounds: tuple[float, float], *, integer: bool = False) -> None:
    """Raise ``ValueError`` unless ``bounds[0] <= value <= bounds[1]`` (and an int when ``integer``)."""
    low, high = bounds
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {kind} from {low} to {high}; received {value!r}.")
    if integer and not float(value).is_integer():
        raise ValueError(f"{name} must be {kind} from {low} to {high}; received {value!r}.")
    if math.isnan(value) or not low <= value <= high:
        raise ValueError(f"{name} must be {kind} from {low} to {high}; received {value!r}. "
                         f"Choose a value in that range.")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; received {value!r}.")


class _Settings:
    """Shared helpers: dict/JSON round trip that refuses unknown keys."""

    def _plain_numbers(self) -> None:
        """Turn numpy scalars (from a notebook or a DataFrame) into Python numbers, so that the
        settings compare, print and serialise as plain values."""
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:
                object.__setattr__(self, item.name, value.item())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} setting(s) {unknown}; known settings are {sorted(known)}.")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class DataConfig(_Settings):
    """How a data set is imported and split."""

    image_size: int = 150  # the tutorial's size; enough detail for pneumonia, cheap on a CPU
    validation_fraction: float = 0.10  # ~520 images from Kermany train: enough to pick a threshold
    test_fraction: float = 0.15  # only used when a source has no test split of its own
    seed: int = 42  # same split every time unless asked otherwise
    max_image_pixels: int = 80_000_000  # refuse decompression bombs; largest real CXR is ~4300x4300
    max_zip_bytes: int = 4 * 1024**3  # uncompressed size limit of an imported zip (Kermany is ~1.2 GB)
    drop_test_patients_from_train: bool = True  # Kermany reuses patient ids across train/test: no leakage

    def __post_init__(self) -> None:
        self._plain_numbers()
        check_range("image_size", self.image_size, IMAGE_SIZE_RANGE, integer=True)
        check_range("validation_fraction", self.validation_fraction, VALIDATION_FRACTION_RANGE)
        check_range("test_fraction", self.test_fraction, TEST_FRACTION_RANGE)
        check_range("seed", self.seed, (0, 2**31 - 1), integer=True)
        check_range("max_image_pixels", self.max_image_pixels, (1, 10**9), integer=True)
        check_range("max_zip_bytes", self.max_zip_bytes, (1, 2**40), integer=True)


@dataclass(frozen=True)
class TrainingConfig(_Settings):
    """Everything that decides how a model is trained; saved as the run's config.json."""

    model: str = "fast"  # the CPU network; "seed" is the tutorial's VGG-like one
    image_size: int = 150  # must match the imported data set's size
    epochs: int = 12  # the tutorial's count; early stopping usually ends sooner
    batch_size: int = 32  # the tutorial's; fits every model here in a few hundred MB
    optimizer: str = "adam"  # converges faster than RMSprop on the fast network
    learning_rate: float = 1e-3  # Keras default for Adam and RMSprop
    schedule: str = "plateau"  # the tutorial's ReduceLROnPlateau
    plateau_patience: int = 2  # tutorial
    plateau_factor: float = 0.3  # tutorial
    min_learning_rate: float = 1e-6  # tutorial
    class_weighting: str = "balanced"  # train is 74 % pneumonia; weights keep normal recall up
    dropout_rate: float = 0.2  # tutorial
    early_stopping: bool = True  # stop when validation AUC stops improving, keep the best weights
    early_stopping_patience: int = 4  # longer than the plateau patience so the LR can drop first
    rotation_degrees: float = 30.0  # tutorial: rotation ±30°
    zoom: float = 0.2  # tutorial
    width_shift: float = 0.1  # tutorial
    height_shift: float = 0.1  # tutorial
    horizontal_flip: bool = True  # tutorial (hearts are on the left, but it helped there)
    brightness: float = 0.0  # ± fraction of 255 added to all pixels; 0 = off (the tutorial has none)
    contrast: float = 0.0  # contrast scaled by 1 ± this around each image's mean; 0 = off (tutorial: none)
    photometric: float = 0.0  # gamma, blur/sharpen, noise, background level at random strengths up to this; 0 = off
    random_crop: float = 0.0  # random resized crops removing up to this fraction of the area; 0 = off
    label_smoothing: float = 0.0  # targets 0/1 become s/2 and 1 - s/2: less confident on the easy shortcut
    mixup: float = 0.0  # α of mixup (images and targets of two training images blended by λ ~ Beta(α, α)); 0 = off
    validation_fraction: float = 0.10  # carved from train by patient, see DataConfig
    seed: int | None = 42  # deterministic on the CPU when set; None for a fresh random start
    strategy: str = "default"  # tf.distribute strategy: default, mirrored, multi-worker
    max_batches_per_epoch: int | None = None  # for smoke tests and benchmarks; None = whole epoch
    weights: str = "imagenet"  # transfer backbones only: "imagenet", "none" (random start) or a file path
    train_backbone: bool = False  # transfer backbones only: also fine-tune the pretrained layers (off: head only)
    # The decision threshold, chosen on the validation split at the end of the run (never on test):
    threshold_rule: str = "youden"  # max sensitivity + specificity - 1: no preference between the two errors
    min_sensitivity: float = 0.95  # "sensitivity" rule: the highest threshold keeping validation sensitivity >= this
    fixed_threshold: float = 0.5  # "fixed" rule: the tutorial's cut-off, whatever the validation scores

    def __post_init__(self) -> None:
        self._plain_numbers()
        check_range("image_size", self.image_size, IMAGE_SIZE_RANGE, integer=True)
        check_range("epochs", self.epochs, EPOCHS_RANGE, integer=True)
        check_range("batch_size", self.batch_size, BATCH_SIZE_RANGE, integer=True)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("learning_rate", self.learning_rate, LEARNING_RATE_RANGE)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_range("plateau_patience", self.plateau_patience, (1, 100), integer=True)
        check_range("plateau_factor", self.plateau_factor, (0.01, 0.99))
        check_range("min_learning_rate", self.min_learning_rate, (0.0, 1.0))
        check_choice("class_weighting", self.class_weighting, CLASS_WEIGHTINGS)
        check_range("dropout_rate", self.dropout_rate, DROPOUT_RANGE)
        check_range("early_stopping_patience", self.early_stopping_patience, (1, 100), integer=True)
        check_range("rotation_degrees", self.rotation_degrees, ROTATION_RANGE)
        check_range("zoom", self.zoom, ZOOM_RANGE)
        check_range("width_shift", self.width_shift, SHIFT_RANGE)
        check_range("height_shift", self.height_shift, SHIFT_RANGE)
        check_range("brightness", self.brightness, BRIGHTNESS_RANGE)
        check_range("contrast", self.contrast, CONTRAST_RANGE)
        check_range("photometric", self.photometric, PHOTOMETRIC_RANGE)
        check_range("random_crop", self.random_crop, RANDOM_CROP_RANGE)
        check_range("label_smoothing", self.label_smoothing, LABEL_SMOOTHING_RANGE)
        check_range("mixup", self.mixup, MIXUP_RANGE)
        check_range("validation_fraction", self.validation_fraction, VALIDATION_FRACTION_RANGE)
        if self.seed is not None:
            check_range("seed", self.seed, (0, 2**31 - 1), integer=True)
        check_choice("strategy", self.strategy, STRATEGIES)
        if self.max_batches_per_epoch is not None:
            check_range("max_batches_per_epoch", self.max_batches_per_epoch, (1, 10**7), integer=True)
        if not isinstance(self.train_backbone, bool):
            raise ValueError(f"train_backbone must be true or false; received {self.train_backbone!r}.")
        if not isinstance(self.weights, str) or not self.weights:
            raise ValueError(f"weights must be 'imagenet', 'none' or a weights file path; received "
                             f"{self.weights!r}.")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a model name such as 'fast' or 'seed'; received {self.model!r}.")
        check_choice("threshold_rule", self.threshold_rule, THRESHOLD_RULES)
        check_range("min_sensitivity", self.min_sensitivity, MIN_SENSITIVITY_RANGE)
        check_range("fixed_threshold", self.fixed_threshold, FIXED_THRESHOLD_RANGE)

    def threshold_settings(self) -> dict[str, Any]:
        """The keyword arguments of run finalisation (``threshold_rule``, ``min_sensitivity``,
        ``fixed_threshold``) that decide how the threshold is chosen on validation."""
        return {"threshold_rule": self.threshold_rule, "min_sensitivity": self.min_sensitivity,
                "fixed_threshold": self.fixed_threshold}


# Presets: named starting points the UI and the command line offer.
PRESETS: dict[str, TrainingConfig] = {
    # The tutorial's recipe exactly: seed network, 12 epochs, batch 32, RMSprop, plateau schedule,
    # no class weights, no early stopping.
    "tutorial": TrainingConfig(model="seed", epochs=12, batch_size=32, optimizer="rmsprop",
                               learning_rate=1e-3, schedule="plateau", class_weighting="none",
                               early_stopping=False, dropout_rate=0.2, brightness=0.0, contrast=0.0),
    # The fast default, the bundled model's recipe: candidate "D" of docs/benchmarks.md ("Default model"),
    # chosen as a whole on the patient-grouped validation split (best validation AUC of the candidates
    # tried, 0.988; test never chose). The settings that differ from TrainingConfig's defaults:
    "fast": TrainingConfig(
        epochs=14,  # 3.5-6 min on 2 shared CPU cores; the cosine schedule reaches its floor at the last epoch
        schedule="cosine",  # no sudden rate drops triggered by a noisy 475-image validation split
        early_stopping_patience=5,  # (default 4) let the cosine rate decay before a noisy validation AUC stops a run
        class_weighting="none",  # "balanced" with the same settings: validation AUC 0.986 against 0.988
        brightness=0.2,  # exposure and contrast differ between machines: do not learn the label from them
        contrast=0.3,
        # The rule chosen for the bundled model on validation (docs/benchmarks.md, "Threshold rules"): Youden
        # chases validation's easy normals; keeping 95 % validation sensitivity costs less on shifted data.
        threshold_rule="sensitivity",
        min_sensitivity=0.95,
    ),
    # Transfer learning without internet: ImageNet EfficientNet-Lite0 from the offline pip package
    # (cxr.lite0). "transfer" trains a new head on the frozen backbone (a few minutes on 2 CPU cores);
    # "transfer_finetune" also fine-tunes the backbone, the recipe measured in issue 12 (4 epochs, cosine
    # Adam 3e-4: validation AUC 0.993 but test AUC 0.942 at 160 px; pretrained features follow the Kermany
    # shift more than the fast network, docs/benchmarks.md). Both run at the imported data set's size.
    "transfer": TrainingConfig(
        model="efficientnet_lite0", weights="imagenet", train_backbone=False, epochs=8, schedule="cosine",
        early_stopping_patience=3, class_weighting="none", brightness=0.2, contrast=0.3,
        threshold_rule="sensitivity", min_sensitivity=0.95,
    ),
    "transfer_finetune": TrainingConfig(
        model="efficientnet_lite0", weights="imagenet", train_backbone=True, epochs=4, learning_rate=3e-4,
        schedule="cosine", early_stopping_patience=3, class_weighting="none", brightness=0.2, contrast=0.3,
        threshold_rule="sensitivity", min_sensitivity=0.95,
    ),
}


def preset(name: str, **overrides: Any) -> TrainingConfig:
    """A copy of preset ``name`` with ``overrides`` applied (each validated)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return dataclasses.replace(PRESETS[name], **overrides)


__all__ = ["DataConfig", "TrainingConfig", "PRESETS", "preset", "CLASS_NAMES", "field"]
