"""Take a trained model elsewhere: a SavedModel or a TFLite file that gives the calibrated answer, plus a JSON
sidecar saying how to use it.

The exported model has one input and one output:
- input ``images``: float32 ``(n, s, s, 1)``, grayscale pixels 0–255 at the model's fixed size ``s`` (decode,
  convert to grayscale and resize as ``cxr.imaging.load_image`` does; no other scaling);
- output ``probability``: float32 ``(n, 1)``, P(pneumonia) AFTER the model's temperature scaling, i.e.
  ``sigmoid(logit / T)``, the same number ``cxr predict`` prints. Pneumonia when ``>= threshold``.

The sidecar (``<output>.json``) holds the threshold and its rule, the temperature, the input size and
layout, the class names and where the model came from.

ONNX is refused: the maintained converter (tf2onnx 1.17.0, March 2026) is tested with TensorFlow 2.13–2.15
and Python 3.10–3.12 only, and Keras' own ONNX export goes through it; this project runs TensorFlow 2.21.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr.config import CLASS_NAMES
from cxr.errors import CxrError

FORMATS = ("savedmodel", "tflite", "onnx")
ONNX_REFUSAL = (
    "ONNX export is not offered: the maintained converter, tf2onnx (1.17.0), is tested with TensorFlow "
    "2.13-2.15 and Python 3.10-3.12 only, and Keras' ONNX export relies on it; this project runs TensorFlow "
    "2.21. Export --format savedmodel or tflite instead (tf2onnx can convert that SavedModel on a machine "
    "with a TensorFlow version it supports)."
)
ENDPOINT = "serve"
INPUT_NAME = "images"
OUTPUT_NAME = "probability"


@dataclass(frozen=True)
class ExportResult:
    """What ``export_model`` wrote: ``model`` (a SavedModel folder or a ``.tflite`` file) and its ``sidecar``."""

    model: Path
    sidecar: Path
    description: dict[str, Any]


def check_format(format: str) -> str:
    """``format`` lower-cased if it can be exported; ``CxrError`` otherwise (ONNX: why not)."""
    name = str(format).lower()
    if name == "onnx":
        raise CxrError(ONNX_REFUSAL)
    if name not in FORMATS:
        raise CxrError(f"Export format must be one of savedmodel, tflite; received {format!r}.")
    return name


def describe(predictor, format: str) -> dict[str, Any]:
    """The sidecar's content for ``predictor`` exported as ``format``."""
    size = predictor.image_size
    return {
        "format": format,
        "source": predictor.source,
        "input": {"name": INPUT_NAME, "shape": [None, size, size, 1], "dtype": "float32", "range": [0, 255],
                  "layout": "NHWC, one grayscale channel",
                  "preprocessing": "decode, convert to grayscale and resize to a square of image_size pixels "
                                   "(cxr.imaging.load_image); pass the 0-255 pixel values unscaled"},
        "output": {"name": OUTPUT_NAME, "shape": [None, 1], "dtype": "float32",
                   "meaning": "P(pneumonia) after temperature scaling: sigmoid(logit / temperature)"},
        "image_size": size,
        "threshold": predictor.threshold,
        "threshold_rule": predictor.threshold_rule,
        "temperature": predictor.temperature,
        "class_names": list(CLASS_NAMES),
        "decision": f"{CLASS_NAMES[1]} when probability >= threshold, else {CLASS_NAMES[0]}",
        "warning": "Not a diagnostic device. Trained on pediatric chest X-rays from one hospital.",
    }


def _calibrated_endpoint(predictor):
    """``(tracked Keras model, tf.function images -> {probability})`` computing sigmoid(logit / T)."""
    from cxr.models import LOGIT_LAYER
    from cxr.tensorflow_loader import import_keras, import_tensorflow

    tf, keras = import_tensorflow(), import_keras()
    model = predictor.model
    temperature = float(predictor.temperature)
    try:
        scorer, gives_logit = keras.Model(model.inputs[0], model.get_layer(LOGIT_LAYER).output), True
    except ValueError:  # no "logit" layer: recover the logit from the probability, as cxr.calibration does
        scorer, gives_logit = model, False

    def serve(images):
        output = tf.cast(scorer(images, training=False), tf.float32)
        if not gives_logit:
            probability = tf.clip_by_value(output, 1e-7, 1.0 - 1e-7)
            output = tf.math.log(probability) - tf.math.log1p(-probability)
        return {OUTPUT_NAME: tf.sigmoid(output / temperature)}

    size = predictor.image_size
    signature = [tf.TensorSpec((None, size, size, 1), tf.float32, name=INPUT_NAME)]
    return scorer, serve, signature


def _write_savedmodel(predictor, folder: Path) -> None:
    from cxr.tensorflow_loader import import_keras

    keras = import_keras()
    scorer, serve, signature = _calibrated_endpoint(predictor)
    archive = keras.export.ExportArchive()
    archive.track(scorer)
    archive.add_endpoint(name=ENDPOINT, fn=serve, input_signature=signature)
    archive.write_out(str(folder), verbose=False)


def _tflite_bytes(predictor) -> bytes:
    from cxr.tensorflow_loader import import_tensorflow

    tf = import_tensorflow()
    with tempfile.TemporaryDirectory(prefix="cxr-export-") as scratch:
        _write_savedmodel(predictor, Path(scratch) / "model")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(scratch) / "model"), signature_keys=[ENDPOINT])
        return converter.convert()


def sidecar_path(output: Path) -> Path:
    """``model.tflite`` -> ``model.json``; a SavedModel folder ``exported/model`` -> ``exported/model.json``."""
    return output.with_suffix(".json") if output.suffix else output.parent / f"{output.name}.json"


def export_model(predictor, format: str, output) -> ExportResult:
    """Write ``predictor``'s model as ``format`` ("savedmodel": a folder; "tflite": a file) at ``output``, and
    its sidecar beside it. Refuses to overwrite an existing path (``CxrError``)."""
    format = check_format(format)
    output = Path(output).expanduser()
    sidecar = sidecar_path(output)
    for path in (output, sidecar):
        if path.exists():
            raise CxrError(f"{str(path)!r} already exists. Expected a new path for the export; choose another "
                           f"--output or delete it first.")
    output.parent.mkdir(parents=True, exist_ok=True)
    description = describe(predictor, format)
    if format == "savedmodel":
        staging = output.parent / f".{output.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            _write_savedmodel(predictor, staging)
            staging.rename(output)  # a half-written SavedModel never sits at the final path
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        staging = output.parent / f".{output.name}.partial"
        try:
            staging.write_bytes(_tflite_bytes(predictor))
            staging.rename(output)
        finally:
            staging.unlink(missing_ok=True)
    sidecar.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return ExportResult(model=output, sidecar=sidecar, description=description)


def export_zip(predictor, format: str, *, name: str = "cxr-model") -> tuple[str, bytes]:
    """``(file name, zip bytes)`` holding the exported model and its sidecar, for a download button.

    The zip holds ``<name>/`` (SavedModel) or ``<name>.tflite``, and ``<name>.json``."""
    format = check_format(format)
    with tempfile.TemporaryDirectory(prefix="cxr-export-") as scratch:
        target = Path(scratch) / (name if format == "savedmodel" else f"{name}.tflite")
        export_model(predictor, format, target)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(scratch).rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(scratch).as_posix())
    return f"{name}-{format}.zip", buffer.getvalue()


__all__ = ["FORMATS", "ONNX_REFUSAL", "ExportResult", "check_format", "describe", "export_model", "export_zip",
           "sidecar_path"]
