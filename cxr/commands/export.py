"""``cxr export MODEL --format savedmodel|tflite --output PATH``: the model as a SavedModel folder or a TFLite
file that takes ``(n, s, s, 1)`` 0-255 pixels and gives P(pneumonia) after the model's temperature, with a JSON
sidecar (threshold, temperature, input size, class names) beside it (see cxr/export.py). ``--format onnx``
is refused with the reason."""

from __future__ import annotations

import argparse
import sys

FORMAT_CHOICES = ("savedmodel", "tflite", "onnx")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a model as a SavedModel or TFLite file with its threshold and temperature",
        description="Export MODEL (`default` for the bundled model, a run id, a run folder or a .keras file) so "
                    "it runs without cxr: one input, (n, s, s, 1) float32 grayscale pixels 0-255 at the model's "
                    "size; one output, P(pneumonia) after temperature scaling. A JSON sidecar beside it holds "
                    "the threshold, temperature, input size and class names.")
    parser.add_argument("model", help="default, a run id, a run folder or a .keras file")
    parser.add_argument("--format", required=True, choices=FORMAT_CHOICES,
                        help="savedmodel (a folder) or tflite (a file); onnx is refused (see `cxr export --help`)")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="the new folder (savedmodel) or file (tflite); the sidecar is PATH's name + .json")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from cxr.export import check_format, export_model

    check_format(args.format)  # onnx: refused before TensorFlow loads
    from cxr.predict import Predictor
    from cxr.tensorflow_loader import import_tensorflow

    import_tensorflow()
    predictor = Predictor.load(args.model)
    result = export_model(predictor, args.format, args.output)
    description = result.description
    print(f"model: {predictor.source} -> {args.format} {result.model}")
    print(f"sidecar: {result.sidecar} (threshold {description['threshold']:.4f} [{description['threshold_rule']}], "
          f"temperature {description['temperature']:.3f}, input (n, {description['image_size']}, "
          f"{description['image_size']}, 1) pixels 0-255)")
    print("Not a diagnostic device.", file=sys.stderr)
    return 0
