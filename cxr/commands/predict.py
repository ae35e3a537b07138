"""``python -m cxr predict FILES… [--model RUN_OR_FILE] [--explain gradcam|shap] [--csv OUT]``.

Prints one row per file: calibrated P(pneumonia), the label at the model's saved threshold, and any
warning; a file that cannot be read gets its own error row. Exit status 0 when every file was
answered, 1 when any failed. With ``--explain`` the heat maps are saved as overlays
(``--heatmaps DIR``, default ``./heatmaps``) when OpenCV can write PNGs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="P(pneumonia) for image files (JPEG, PNG, DICOM)")
    parser.add_argument("files", nargs="+", help="image files (JPEG, PNG, BMP, TIFF or DICOM)")
    parser.add_argument("--model", default=None, help="run id, run folder or .keras file (default: the bundled model)")
    parser.add_argument(
        "--explain", choices=("gradcam", "shap"), default=None, help="also compute a heat map of what drove each answer"
    )
    parser.add_argument("--heatmaps", default="heatmaps", help="folder for heat-map overlays (with --explain)")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from cxr.predict import Predictor

    predictor = Predictor.load(args.model)
    print(
        f"model: {predictor.source} (threshold {predictor.threshold:.4f} [{predictor.threshold_rule}], "
        f"temperature {predictor.temperature:.3f}). Not a diagnostic device.",
        file=sys.stderr,
    )
    for note in predictor.notes:
        print(f"note: {note}", file=sys.stderr)
    results = predictor.predict(args.files, names=[str(path) for path in args.files], explain=args.explain)
    rows = [result.to_row() for result in results]
    table = pd.DataFrame(
        rows,
        columns=[
            "file",
            "probability",
            "label",
            "threshold",
            "raw_probability",
            "warnings",
            "error",
            "explain_seconds",
        ],
    )
    if args.explain:
        table["heatmap"] = ""
        folder = Path(args.heatmaps)
        for index, result in enumerate(results):
            if result.heatmap is None:
                continue
            import cv2

            from cxr.explain import overlay

            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{Path(result.name).stem}_{args.explain}.png"
            cv2.imwrite(str(target), cv2.cvtColor(overlay(result.image, result.heatmap), cv2.COLOR_RGB2BGR))
            table.loc[index, "heatmap"] = str(target)
    # One line per file (probability, label), then its warnings or its error indented below it.
    width = min(60, max(len(str(name)) for name in table["file"]))
    print(f"{'file':{width}s}  {'P(pneumonia)':>12s}  label" + ("      heat map" if args.explain else ""))
    for index, result in enumerate(results):
        shown = str(result.name) if len(str(result.name)) <= width else "..." + str(result.name)[-(width - 3) :]
        if result.error:
            print(f"{shown:{width}s}  {'-':>12s}  ERROR")
            print(f"    error: {result.error}")
            continue
        line = f"{shown:{width}s}  {result.probability:12.4f}  {result.label:9s}"
        if args.explain:
            line += f"  {table.loc[index, 'heatmap'] or '-'}"
            if result.explain_seconds is not None:
                line += f" ({result.explain_seconds:.2f} s)"
        print(line)
        for warning in result.warnings:
            print(f"    warning: {warning}")
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"table written to {args.csv}", file=sys.stderr)
    failed = sum(1 for result in results if result.error)
    if failed:
        print(f"{failed} of {len(results)} files failed.", file=sys.stderr)
    return 1 if failed else 0
