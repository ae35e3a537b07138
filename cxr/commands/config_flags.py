"""Command-line flags generated from a settings dataclass: ``--field-name`` for every field of
``TrainingConfig`` (typed from its annotation, choices from ``cxr.config``), so a new setting gets its
flag without a translation table. Older flag names stay as aliases (``--dropout`` for ``--dropout-rate``).

Flags that were not given are absent from the parsed namespace (``argparse.SUPPRESS``), so
``overrides_from_args`` returns exactly what the user typed, to be applied over a preset and validated
by the dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from cxr import config as settings

# field -> allowed values (validated again by the dataclass; here they make --help list them).
CHOICES = {"optimizer": settings.OPTIMIZERS, "schedule": settings.SCHEDULES,
           "class_weighting": settings.CLASS_WEIGHTINGS, "strategy": settings.STRATEGIES,
           "threshold_rule": settings.THRESHOLD_RULES}
# field -> earlier flag names, kept working.
ALIASES = {"dropout_rate": ("--dropout",), "early_stopping_patience": ("--patience",),
           "rotation_degrees": ("--rotation",), "max_batches_per_epoch": ("--max-batches",)}
HELP = {
    "model": "a name of cxr.models.model_names(), e.g. fast or efficientnet_lite0",
    "image_size": "square image size in pixels (default: the data set's)",
    "early_stopping_patience": "early-stopping patience in epochs",
    "rotation_degrees": "augmentation: rotation in degrees (0 = off)",
    "zoom": "augmentation: zoom fraction (0 = off)",
    "width_shift": "augmentation: width shift fraction (0 = off)",
    "height_shift": "augmentation: height shift fraction (0 = off)",
    "brightness": "augmentation: ± fraction of full white added to every pixel (0 = off)",
    "contrast": "augmentation: contrast scaled by 1 ± this around the image mean (0 = off)",
    "photometric": "augmentation: gamma, blur/sharpen, noise, background level at random strengths up to this "
                   "(0-1; 0 = off)",
    "random_crop": "augmentation: random resized crops removing up to this fraction of the area (0 = off)",
    "label_smoothing": "targets 0/1 become s/2 and 1 - s/2 (0 = off)",
    "mixup": "alpha of mixup: pairs of training images and their targets blended by Beta(alpha, alpha) "
             "(0 = off; 0.2 is usual)",
    "seed": "integer, or 'none' for a random start",
    "strategy": "tf.distribute strategy; multi-worker reads the cluster from TF_CONFIG",
    "max_batches_per_epoch": "batches per epoch at most (smoke tests)",
    "weights": "transfer backbones: imagenet, none, or a weights file path",
    "train_backbone": "transfer backbones: also fine-tune the pretrained layers (default: train the new head only)",
    "threshold_rule": "how the decision threshold is chosen on validation: youden (balance), "
                      "sensitivity (keep --min-sensitivity), fixed (--fixed-threshold)",
    "min_sensitivity": "sensitivity rule: the validation sensitivity to keep, 0.5-1 (e.g. 0.95)",
    "fixed_threshold": "fixed rule: the threshold on P(pneumonia), 0-1",
}


def flag_of(name: str) -> str:
    """``dropout_rate`` -> ``--dropout-rate``."""
    return "--" + name.replace("_", "-")


def _optional(kind: type) -> typing.Callable[[str], Any]:
    def parse(text: str):
        return None if text.strip().lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value: …"
    return parse


def _parser_of(annotation: Any) -> tuple[Any, bool]:
    """``(argparse type, is_bool)`` for a field annotation: int, float, str, bool, or ``X | None``."""
    if annotation is bool:
        return None, True
    arguments = [item for item in typing.get_args(annotation) if item is not type(None)]
    if arguments:  # X | None
        return _optional(arguments[0]), False
    return annotation, False


def _metavar(annotation: Any) -> str:
    text = str(annotation)
    return "N" if "int" in text else "X" if "float" in text else "TEXT"


def add_config_flags(parser: argparse.ArgumentParser, cls: type = settings.TrainingConfig,
                     names: typing.Iterable[str] | None = None, *, title: str | None = None) -> None:
    """One flag per field of ``cls`` (or of ``names``): ``--field-name VALUE``, ``--field/--no-field`` for
    booleans; unset flags stay out of the namespace."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title) if title else parser
    fields = [item.name for item in dataclasses.fields(cls)]
    for name in (fields if names is None else list(names)):
        kind, is_bool = _parser_of(hints[name])
        flags = (flag_of(name), *ALIASES.get(name, ()))
        text = HELP.get(name, name.replace("_", " "))
        if is_bool:
            group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=text)
        else:
            group.add_argument(*flags, dest=name, type=kind, choices=CHOICES.get(name), default=argparse.SUPPRESS,
                               metavar=None if name in CHOICES else _metavar(hints[name]), help=text)


def overrides_from_args(args: argparse.Namespace, cls: type = settings.TrainingConfig,
                        names: typing.Iterable[str] | None = None) -> dict[str, Any]:
    """``{field: value}`` of the flags given on the command line, among ``names`` (default: every field of
    ``cls``; pass the same ``names`` as to ``add_config_flags`` when the parser has other options)."""
    fields = [item.name for item in dataclasses.fields(cls)] if names is None else list(names)
    return {name: getattr(args, name) for name in fields if hasattr(args, name)}
