"""Is an image from the population a model was trained on? One verdict per image.

Every cxr model learns from one population (the bundled model: Kermany's pediatric chest X-rays). On
anything else (an adult, a leg, a lateral view, a photograph) its probability is a confident number that
means nothing, so each prediction carries a :class:`PopulationVerdict`:

- **metadata rules**, where the file says more than the pixels: DICOM ``PatientAge`` outside the training
  ages, ``BodyPartExamined`` not chest, ``ViewPosition`` lateral, ``Modality`` not a radiograph;
- **image rules**: a colour photograph, an extreme aspect ratio;
- **a pixel detector** (``cxr.population_detector``), when the model has one: distance of the image's
  pretrained features from those of the training images, against a threshold set on held-out training
  images.

``status`` is ``"outside"`` when any rule or the detector fires, ``"in"`` when a detector exists and
nothing fires, and ``"unknown"`` when nothing fires but the model has no detector to ask.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

IN, OUTSIDE, UNKNOWN = "in", "outside", "unknown"
STATUSES = (IN, OUTSIDE, UNKNOWN)

# The Kermany images are of children aged one to five; the rule is deliberately wider (any minor) so that
# a teenager is not refused for a year's difference, while an adult (the common clinical case) is.
PEDIATRIC_AGES = (0.0, 18.0)
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "LUNGS", "CHEST_LAT", "CHEST_PA", "CHEST_AP", "TORSO")
# DR and RG are radiographs too (vendor / older spellings); OT ("other") says nothing either way.
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG", "OT")
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD")
MAX_ASPECT_RATIO = 2.0  # chest films are close to square; a 2:1 strip is a cropped or other view
# A chest film always has contrast (dark lungs, bright bones: Kermany images have a grey-level standard
# deviation near 50); a nearly blank picture lands near the training mean of pooled features, where the
# distance detector cannot see it, so a rule catches it.
MIN_CONTRAST_STD = 8.0
DEFAULT_POPULATION = "pediatric chest X-rays"


@dataclass(frozen=True)
class PopulationVerdict:
    """Whether the model can know anything about one image.

    ``status``: "in" | "outside" | "unknown" (the model has no population detector and no rule fired).
    ``score``: the detector's distance (higher = less like the training images), ``None`` without one.
    ``percentile``: where ``score`` falls among held-out training images, 0-100.
    ``threshold``: the detector's threshold on ``score``. ``reasons``: plain-language reasons, empty
    when ``status == "in"``.
    """

    status: str
    score: float | None = None
    percentile: float | None = None
    threshold: float | None = None
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"population status {self.status!r}: expected one of {', '.join(STATUSES)}")

    @property
    def outside(self) -> bool:
        return self.status == OUTSIDE

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable: the fields, ``reasons`` as a list, plus ``reason``."""
        data = dataclasses.asdict(self)
        data["reasons"] = list(self.reasons)
        data["reason"] = self.reason
        return data


def parse_dicom_age(text: str | None) -> float | None:
    """DICOM PatientAge (``"045Y"``, ``"006M"``, ``"010W"``, ``"003D"``, or a bare number of years)
    -> age in years, ``None`` when absent or unreadable (an unreadable age is no evidence either way)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY]?)\s*", str(text).upper())
    if match is None:
        return None
    value, unit = int(match.group(1)), match.group(2) or "Y"
    return value / {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}[unit]


def _age_words(text: str) -> str:
    unit = (re.sub(r"[\d\s]", "", str(text).upper()) or "Y")[:1]
    value = int(re.sub(r"\D", "", str(text)) or 0)
    word = {"D": "day", "W": "week", "M": "month", "Y": "year"}.get(unit, "year")
    return f"{value} {word}{'' if value == 1 else 's'} old"


def _ages_words(ages: tuple[float, float]) -> str:
    low, high = ages
    if low <= 0:
        return f"patients under {high:g}"
    return f"patients aged {low:g} to {high:g}"


def metadata_reasons(info: Any, *, training_ages: tuple[float, float] | None = PEDIATRIC_AGES) -> list[str]:
    """Reasons the file's own header puts the image outside the training population.

    ``info``: a ``cxr.pixels.ImageInfo`` (or anything with ``body_part``, ``view_position``,
    ``modality``, ``patient_age``), ``None`` for none. ``training_ages``: ``(low, high)`` years, the
    patients' ages the model was trained on (``high`` excluded); ``None`` skips the age rule.
    """
    if info is None:
        return []
    reasons = []
    age_text = getattr(info, "patient_age", None)
    years = parse_dicom_age(age_text)
    if training_ages is not None and years is not None and not training_ages[0] <= years < training_ages[1]:
        reasons.append(f"DICOM says the patient is {_age_words(age_text)} "
                       f"(this model was trained on {_ages_words(tuple(training_ages))})")
    body_part = (getattr(info, "body_part", None) or "").strip()
    if body_part and body_part.upper().replace(" ", "_") not in CHEST_BODY_PARTS:
        reasons.append(f"DICOM says this is an {body_part.upper()} image" if body_part[:1].upper() in "AEIOU"
                       else f"DICOM says this is a {body_part.upper()} image")
    view = (getattr(info, "view_position", None) or "").strip().upper()
    if view in LATERAL_VIEWS or body_part.upper().replace(" ", "_") == "CHEST_LAT":
        reasons.append("DICOM says this is a lateral view (this model was trained on frontal views)")
    modality = (getattr(info, "modality", None) or "").strip().upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        reasons.append(f"DICOM says the modality is {modality}, not a radiograph (CR/DX)")
    return reasons


def image_reasons(info: Any = None, *, shape: tuple[int, ...] | None = None, pixels: Any = None) -> list[str]:
    """Reasons the picture itself is not a chest film: a colour photograph, an extreme aspect ratio, a
    nearly uniform image.

    ``info``: ``cxr.pixels.ImageInfo`` of a decoded file, or ``None`` with the array's ``shape``
    ``(h, w)`` instead. ``pixels``: the ``(s, s)`` uint8 image the model sees, for the contrast rule.
    """
    reasons = []
    if pixels is not None:
        import numpy as np

        spread = float(np.std(np.asarray(pixels, np.float32)))
        if spread < MIN_CONTRAST_STD:
            reasons.append(f"this image is nearly uniform (grey-level spread {spread:.1f}; chest X-rays have "
                           f"about 50), so there is nothing for the model to read")
    if info is not None:
        width, height = int(info.width), int(info.height)
        if getattr(info, "is_color_photo", False):
            reasons.append("this looks like a colour photograph, not an X-ray")
    elif shape is not None:
        height, width = int(shape[0]), int(shape[1])
    else:
        return reasons
    short, long = min(width, height), max(width, height)
    if short > 0 and long / short > MAX_ASPECT_RATIO:
        reasons.append(f"its shape is {width}x{height} (aspect ratio {long / short:.1f}:1); "
                       f"chest X-rays are close to square")
    return reasons


def pixel_reason(population: str = DEFAULT_POPULATION) -> str:
    """The detector's reason: the pixels look unlike the training images."""
    return f"looks unlike the {population} this model was trained on"


def combine(rule_reasons: list[str] | tuple[str, ...], *, score: float | None = None,
            percentile: float | None = None, threshold: float | None = None,
            population: str = DEFAULT_POPULATION) -> PopulationVerdict:
    """One verdict from the rules' reasons and (when the model has a detector) its score.

    ``score``/``threshold`` ``None``: no detector; then the verdict is "outside" when a rule fired,
    else "unknown". With a detector, ``score > threshold`` adds :func:`pixel_reason`.
    """
    reasons = list(dict.fromkeys(rule_reasons))  # drop repeats, keep order
    has_detector = score is not None and threshold is not None
    if has_detector and score > threshold:
        reasons.insert(0, pixel_reason(population))
    if reasons:
        status = OUTSIDE
    else:
        status = IN if has_detector else UNKNOWN
    return PopulationVerdict(status=status, score=None if score is None else float(score),
                             percentile=None if percentile is None else float(percentile),
                             threshold=None if threshold is None else float(threshold),
                             reasons=tuple(reasons))


def verdict_for(info: Any = None, *, shape: tuple[int, ...] | None = None, score: float | None = None,
                percentile: float | None = None, threshold: float | None = None,
                training_ages: tuple[float, float] | None = PEDIATRIC_AGES,
                population: str = DEFAULT_POPULATION, pixels: Any = None) -> PopulationVerdict:
    """The verdict for one image: metadata rules, image rules and the detector's score together."""
    reasons = metadata_reasons(info, training_ages=training_ages) + image_reasons(info, shape=shape, pixels=pixels)
    return combine(reasons, score=score, percentile=percentile, threshold=threshold, population=population)
