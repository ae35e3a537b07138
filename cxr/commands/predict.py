"""``cxr predict FILES… [--model RUN_OR_FILE] [--explain gradcam|shap] [--csv OUT] [--heatmaps DIR]``.

Every file is decoded first, before TensorFlow and the model load, so a bad file costs a fraction of a
second: each one gets one unindented ``error: …`` line on stderr. Then the model answers the readable
files: one row each on stdout (calibrated P(pneumonia), the label at the model's saved threshold, warnings).
Exit status 0 when every file got a result, 2 when any could not be read (after the others' results are
printed and written). An image outside the model's training population (``cxr.population``) is a result,
not an error: its row says "outside" and why, and its label is left empty unless ``--allow-outside``.

Where outputs go: the table to ``--csv OUT`` (its ``file`` and ``heatmap`` paths relative to OUT's
folder, so they resolve from there); heat-map overlays (with ``--explain``) to ``--heatmaps DIR``, else
to ``<OUT's stem>_heatmaps/`` beside the CSV. ``--explain`` with neither is refused rather than writing
into the current folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from cxr.errors import CxrError

USAGE_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="P(pneumonia) for image files (JPEG, PNG, DICOM)",
        description="P(pneumonia) after calibration and the label at the model's threshold for each file. "
                    "Unreadable files are reported first, one `error:` line each (exit status 2).")
    parser.add_argument("files", nargs="+", help="image files (JPEG, PNG, BMP, TIFF or DICOM)")
    parser.add_argument("--model", default=None, help="run id, run folder or .keras file (default: the bundled model)")
    parser.add_argument(
        "--explain", choices=("gradcam", "shap"), default=None, help="also compute a heat map of what drove each answer"
    )
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    parser.add_argument("--allow-outside", action="store_true",
                        help="label every image, also those outside the model's training population "
                             "(the population column still says so)")
    parser.add_argument("--heatmaps", default=None, metavar="DIR",
                        help="folder for heat-map overlays (default with --csv: <CSV name>_heatmaps/ beside it)")
    parser.set_defaults(handler=run_predict)


def heatmap_folder(csv: str | None, heatmaps: str | None) -> Path | None:
    """Where overlays go: ``heatmaps`` if given, else ``<csv stem>_heatmaps`` beside the CSV, else None."""
    if heatmaps:
        return Path(heatmaps).expanduser()
    if csv:
        path = Path(csv).expanduser()
        return path.parent / f"{path.stem}_heatmaps"
    return None


def relative_to_folder(path: str | Path, folder: Path) -> str:
    """``path`` written relative to ``folder`` (so a CSV's entries resolve from the CSV's folder)."""
    try:
        return os.path.relpath(Path(path).expanduser().resolve(), folder.resolve())
    except ValueError:  # another drive on Windows: no relative path exists
        return str(Path(path).expanduser().resolve())


def decode_errors(files: list[str]) -> dict[str, str]:
    """``{file: message}`` for each file that cannot be decoded (no TensorFlow needed)."""
    from cxr.imaging import decode_image

    errors = {}
    for file in files:
        try:
            decode_image(file, name=file)
        except CxrError as error:
            errors[file] = str(error)
        except Exception as error:  # noqa: BLE001 - a decoder crash on one file must not stop the others
            errors[file] = (f"{file!r} could not be read ({type(error).__name__}: {error}). Expected a JPEG, "
                            f"PNG, BMP, TIFF or DICOM image; convert the file to one of them.")
    return errors


def write_overlays(results: list, method: str, folder: Path) -> dict[int, Path]:
    """Save each result's heat-map overlay as ``<file stem>_<method>.png`` in ``folder``; ``{index: path}``."""
    import cv2

    from cxr.explain import overlay

    written: dict[int, Path] = {}
    used: set[str] = set()
    for index, result in enumerate(results):
        if result.heatmap is None:
            continue
        stem = f"{Path(result.name).stem}_{method}"
        name, number = f"{stem}.png", 2
        while name in used:  # the same file name from two folders
            name, number = f"{stem}_{number}.png", number + 1
        used.add(name)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        if not cv2.imwrite(str(target), cv2.cvtColor(overlay(result.image, result.heatmap), cv2.COLOR_RGB2BGR)):
            raise CxrError(f"The heat map {str(target)!r} could not be written. Check that the folder is writable.")
        written[index] = target
    return written


def print_table(results: list, heatmaps: dict[int, Path], explain: str | None) -> None:
    """One line per answered file (probability, label, population, heat map); below it, indented, why an image
    is outside the training population and its warnings."""
    answered = [(index, result) for index, result in enumerate(results) if result.error is None]
    if not answered:
        return
    width = min(60, max(len(str(result.name)) for _, result in answered))
    print(f"{'file':{width}s}  {'P(pneumonia)':>12s}  {'label':9s}  population" + ("  heat map" if explain else ""))
    for index, result in answered:
        name = str(result.name)
        shown = name if len(name) <= width else "..." + name[-(width - 3):]
        verdict = result.population
        outside = verdict is not None and verdict.outside
        label = result.label if result.label is not None else ("withheld" if outside else "-")
        population = "OUTSIDE" if outside else (verdict.status if verdict is not None else "-")
        line = f"{shown:{width}s}  {result.probability:12.4f}  {label:9s}  {population:10s}"
        if explain:
            line += f"  {heatmaps[index] if index in heatmaps else '-'}"
            if result.explain_seconds is not None:
                line += f" ({result.explain_seconds:.2f} s)"
        print(line)
        if outside:
            print(f"    outside this model's training population: {verdict.reason}")
        for warning in result.warnings:
            print(f"    warning: {warning}")


def write_csv(path: Path, results: list, heatmaps: dict[int, Path], explain: str | None) -> None:
    """The table as CSV, one row per input file in order; paths relative to the CSV's folder."""
    import pandas as pd

    folder = path.parent
    rows: list[dict[str, Any]] = []
    for index, result in enumerate(results):
        row = result.to_row()
        row["file"] = relative_to_folder(result.name, folder)
        if explain:
            row["heatmap"] = relative_to_folder(heatmaps[index], folder) if index in heatmaps else ""
        rows.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def _predict_files(readable: list[str], args: argparse.Namespace, errors: dict[str, str]) -> dict[str, Any]:
    """``{file: PredictionResult}`` of the decodable files with the model of ``args``; a file that changed or
    vanished since it was decoded is added to ``errors`` (and printed)."""
    from cxr.predict import Predictor
    from cxr.tensorflow_loader import import_tensorflow

    import_tensorflow()
    predictor = Predictor.load(args.model)
    print(f"model: {predictor.source} (threshold {predictor.threshold:.4f} [{predictor.threshold_rule}], "
          f"temperature {predictor.temperature:.3f}). Not a diagnostic device.", file=sys.stderr)
    for note in predictor.notes:
        print(f"note: {note}", file=sys.stderr)
    answers = {}
    for result in predictor.predict(readable, names=readable, explain=args.explain, allow_outside=args.allow_outside):
        answers[result.name] = result
        if result.error:
            errors[result.name] = result.error
            print(f"error: {result.error}", file=sys.stderr)
    return answers


def run_predict(args: argparse.Namespace) -> int:
    files = [str(file) for file in args.files]
    csv = Path(args.csv).expanduser() if args.csv else None
    overlays_folder = heatmap_folder(args.csv, args.heatmaps)
    if args.explain and overlays_folder is None:
        raise CxrError(f"--explain {args.explain} makes heat-map images and needs a place for them; received "
                       f"neither --heatmaps DIR nor --csv FILE. Add --heatmaps DIR (or --csv FILE: they then go "
                       f"beside it).")

    # Decode first: a bad file must not wait for TensorFlow and the model.
    errors = decode_errors(files)
    for file in files:
        if file in errors:
            print(f"error: {errors[file]}", file=sys.stderr)
    readable = [file for file in files if file not in errors]
    if not readable and csv is None:  # nothing to answer or write: done without loading anything more
        print(f"{len(errors)} of {len(files)} file(s) could not be read.", file=sys.stderr)
        return USAGE_ERROR
    from cxr.predict import PredictionResult

    answers = _predict_files(readable, args, errors) if readable else {}
    heatmaps: dict[int, Path] = {}
    results = [answers.get(file) or PredictionResult(name=file, error=errors[file]) for file in files]
    if args.explain:
        heatmaps = write_overlays(results, args.explain, overlays_folder)
    print_table(results, heatmaps, args.explain)
    if csv is not None:
        write_csv(csv, results, heatmaps, args.explain)
        print(f"table written to {csv}", file=sys.stderr)
    if heatmaps:
        print(f"{len(heatmaps)} heat map(s) written to {overlays_folder}", file=sys.stderr)
    outside = sum(1 for result in results if result.population is not None and result.population.outside)
    if outside:
        print(f"{outside} of {len(files)} image(s) outside the model's training population"
              + (" (labelled anyway: --allow-outside)." if args.allow_outside
                 else ": label withheld; --allow-outside labels them anyway."), file=sys.stderr)
    if errors:
        answered = len(files) - len(errors)
        print(f"{len(errors)} of {len(files)} file(s) could not be read"
              + (f"; the other {answered} got their results." if answered else "."), file=sys.stderr)
        return USAGE_ERROR
    return 0
