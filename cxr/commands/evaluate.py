"""``python -m cxr evaluate [--model RUN_OR_FILE] [--data DATASET_OR_FOLDER]``.

Without ``--data``: prints the run's report (validation and test, with intervals, the threshold and its
rule, calibration before/after scaling) and writes the figures (ROC, precision-recall, reliability,
confusion matrix; Altair ``.html`` + ``.json``) into the run folder. A run that has a model but no
``metrics.json`` yet is evaluated from its data set first (``cxr.run_results.write_run_results``).

With ``--data``: external validation on a labelled folder (``normal/``, ``pneumonia/``) or an imported
data set's test split, at the model's saved threshold and temperature, reported separately and saved
as ``external_<name>.json`` (and in ``metrics.json["external"]`` and the model card, for a run).

Where outputs go: ``--output DIR`` if given, else the run's folder; a model that is not a run (the
bundled model, a ``.keras`` file) saves nothing without ``--output`` (never the current folder). Each
unreadable image gets one ``error: …`` line and the exit status is 2; the others are still evaluated.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cxr.commands.config_flags import add_config_flags, overrides_from_args
from cxr.config import TrainingConfig
from cxr.errors import CxrError

USAGE_ERROR = 2
THRESHOLD_FIELDS = ("threshold_rule", "min_sensitivity", "fixed_threshold")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="print a model's evaluation report and write its figures")
    parser.add_argument("--model", default=None, help="run id, run folder or .keras file (default: the bundled model)")
    parser.add_argument(
        "--data", default=None, help="labelled folder (normal/, pneumonia/) or imported data set: external validation"
    )
    parser.add_argument(
        "--output", "--out", dest="output", default=None, metavar="DIR",
        help="folder for figures and reports (default: the run's folder; other models save only with this)",
    )
    parser.add_argument("--no-figures", action="store_true", help="print the report only")
    add_config_flags(parser, TrainingConfig, THRESHOLD_FIELDS,
                     title="threshold of a run (TrainingConfig fields; given, the run's threshold is chosen "
                           "again on its validation split and saved)")
    parser.set_defaults(handler=run_evaluate)


def _figures(out: Path, prefix: str, y_true, y_score, metrics: dict) -> list[Path]:
    """ROC, PR, reliability and confusion-matrix charts of one labelled set, saved as .html and .json."""
    from cxr import charts, evaluation
    from cxr.calibration import reliability_curve

    threshold = metrics["threshold"]
    roc = evaluation.roc_curve(y_true, y_score)
    pr = evaluation.precision_recall_curve(y_true, y_score)
    reliability = reliability_curve(y_true, y_score)
    sensitivity, specificity = metrics["sensitivity"]["value"], metrics["specificity"]["value"]
    figures = {
        "confusion_matrix": charts.confusion_matrix_chart(
            metrics["confusion_matrix"], title=f"Confusion matrix ({prefix}, threshold {threshold:.3f})"
        ),
        "calibration": charts.calibration_chart(
            reliability["mean_score"], reliability["fraction_positive"], counts=reliability["count"]
        ),
    }
    if metrics["auc"]["value"] is not None:
        points = (
            {f"threshold {threshold:.3f}": (1 - specificity, sensitivity)}
            if sensitivity is not None and specificity is not None
            else None
        )
        figures["roc"] = charts.roc_chart(
            roc["false_positive_rate"], roc["true_positive_rate"], auc=metrics["auc"]["value"], points=points
        )
        figures["precision_recall"] = charts.precision_recall_chart(
            pr["recall"], pr["precision"], average_precision=metrics["average_precision"]
        )
    written = []
    out.mkdir(parents=True, exist_ok=True)
    for name, chart in figures.items():
        for suffix in (".html", ".json"):
            path = out / f"{prefix}_{name}{suffix}"
            chart.save(str(path))
            written.append(path)
    return written


def run_settings(folder: Path) -> TrainingConfig:
    """The run's TrainingConfig as saved in its config.json (fields added since take their defaults)."""
    from cxr import runs

    return TrainingConfig.from_dict(runs.read_config(folder).get("training") or {})


def save_threshold_settings(folder: Path, settings: TrainingConfig) -> None:
    """Record the threshold fields in the run's config.json, so a later finalisation uses them too."""
    from cxr import runs
    from cxr.atomic import atomic_write_json

    config = runs.read_config(folder)
    config["training"] = {**(config.get("training") or {}),
                          **{name: getattr(settings, name) for name in THRESHOLD_FIELDS}}
    atomic_write_json(folder / "config.json", config)


def refinalize_from_predictions(folder: Path, settings: TrainingConfig) -> dict | None:
    """Choose the threshold again (and refit the temperature) from the run's predictions.csv, without the
    model or the data set; ``None`` when the run has no such file."""
    import pandas as pd

    from cxr.run_results import write_run_results

    path = folder / "predictions.csv"
    if not path.is_file():
        return None
    predictions = pd.read_csv(path)
    if "y_score_raw" not in predictions.columns:
        return None
    val, test = predictions[predictions["split"] == "val"], predictions[predictions["split"] == "test"]
    return write_run_results(
        folder, val_true=val["y_true"].to_numpy(), val_score=val["y_score_raw"].to_numpy(),
        test_true=test["y_true"].to_numpy() if len(test) else None,
        test_score=test["y_score_raw"].to_numpy() if len(test) else None, **settings.threshold_settings())


def _finalize_from_dataset(folder: Path, predictor, settings: TrainingConfig) -> dict:
    """Compute a run's metrics.json from its model and its data set's val/test splits."""
    import numpy as np

    from cxr import runs
    from cxr.datasets import load_dataset
    from cxr.run_results import write_run_results

    config = runs.read_config(folder)
    reference = config.get("dataset_path")
    if not reference or not Path(reference).is_dir():
        reference = config["dataset"]
    dataset = load_dataset(reference, verify=False)
    val_logits = predictor.raw_logits(dataset.images("val"))
    has_test = "test" in dataset.splits
    test_logits = predictor.raw_logits(dataset.images("test")) if has_test else np.zeros(0)
    from cxr.calibration import sigmoid

    return write_run_results(
        folder,
        val_true=dataset.labels("val"),
        val_score=sigmoid(val_logits),
        test_true=dataset.labels("test") if has_test else None,
        test_score=sigmoid(test_logits) if has_test else None,
        val_logits=val_logits,
        test_logits=test_logits if has_test else None,
        **settings.threshold_settings(),
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "external"


def run_evaluate(args: argparse.Namespace) -> int:
    from cxr.predict import Predictor
    from cxr.tensorflow_loader import import_tensorflow

    import_tensorflow()
    predictor = Predictor.load(args.model)
    folder = predictor.folder
    is_run = folder is not None and (folder / "config.json").is_file()
    threshold_overrides = overrides_from_args(args, TrainingConfig, THRESHOLD_FIELDS)
    if threshold_overrides:
        predictor = _choose_threshold_again(predictor, is_run, threshold_overrides)
    out = Path(args.output).expanduser() if args.output else (folder if is_run else None)
    print(
        f"model: {predictor.source} ({predictor.image_size} px; threshold {predictor.threshold:.4f} "
        f"[{predictor.threshold_rule}], temperature {predictor.temperature:.3f})"
    )
    for note in predictor.notes:
        print(f"note: {note}")
    if args.data is None:
        return _evaluate_saved(predictor, is_run, out, figures=not args.no_figures)
    return _evaluate_external(predictor, args.data, is_run, out, into_run=is_run and args.output is None,
                              figures=not args.no_figures)


def _choose_threshold_again(predictor, is_run: bool, overrides: dict):
    """Choose a run's threshold again on its validation split with ``overrides`` (threshold fields); returns
    the run's Predictor with it. ``CxrError`` for a model that is not a run."""
    from cxr.predict import Predictor

    folder = predictor.folder
    if not is_run:
        raise CxrError(
            f"--threshold-rule, --min-sensitivity and --fixed-threshold choose a run's threshold on its "
            f"validation split; {predictor.source} is not a run. Pass --model RUN_ID (see `cxr runs`).")
    settings = run_settings(folder).replace(**overrides)
    had_external = bool((predictor.metrics or {}).get("external"))
    metrics = refinalize_from_predictions(folder, settings)
    if metrics is None:
        metrics = _finalize_from_dataset(folder, predictor, settings)
    save_threshold_settings(folder, settings)
    print(f"threshold chosen again on validation: {metrics['threshold']:.4f} [{metrics['threshold_rule']}]")
    if had_external:
        print("note: external validations were made at the previous threshold and were dropped; run "
              "`cxr evaluate --data …` again.")
    return Predictor.load(folder)


def _evaluate_saved(predictor, is_run: bool, out: Path | None, *, figures: bool) -> int:
    """Print the model's validation and test metrics (evaluating a run first when it has none) and write
    their figures into ``out``."""
    import pandas as pd

    from cxr import reports

    folder, metrics = predictor.folder, predictor.metrics
    if metrics is None:
        if not is_run:
            print(
                "error: this model has no metrics.json and no run to evaluate it on; pass --data FOLDER "
                "for an evaluation on labelled images.",
                file=sys.stderr,
            )
            return USAGE_ERROR
        print("no metrics.json yet: evaluating the run's validation and test splits ...")
        metrics = _finalize_from_dataset(folder, predictor, run_settings(folder))
    print(reports.format_run_metrics(metrics))
    if out is not None and folder is not None and figures and (folder / "predictions.csv").is_file():
        predictions = pd.read_csv(folder / "predictions.csv")
        written = []
        for split, key in (("val", "validation"), ("test", "test")):
            part = predictions[predictions["split"] == split]
            if len(part) and metrics.get(key):
                written += _figures(out, key, part["y_true"].to_numpy(), part["y_score"].to_numpy(), metrics[key])
        print(f"\nfigures: {len(written)} files in {out} ({', '.join(sorted({p.stem for p in written}))})")
    return 0


def _progress(done: int, total: int) -> None:
    if done == total or done % 100 == 0:
        print(f"\r  read {done}/{total} images", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _evaluate_external(predictor, data: str, is_run: bool, out: Path | None, *, into_run: bool,
                       figures: bool) -> int:
    """Evaluate ``data`` (a labelled folder or an imported data set) at the model's own threshold; write the
    report, predictions and figures into ``out`` and, ``into_run``, the run's metrics.json and model card.
    Returns 2 when there is nowhere to save or any image was unreadable, else 0."""
    from cxr import reports
    from cxr.atomic import atomic_write_json, atomic_write_text
    from cxr.external import external_validation

    result = external_validation(predictor, data, progress=_progress)
    name = _safe_name(result["name"])
    metrics = result["metrics"]
    print(reports.format_metrics(metrics, title=f"== external validation: {result['name']} ({result['source']}) =="))
    print("(threshold and temperature as saved with the model: nothing was refitted on these images)")
    print_population(result.get("population"))
    for error in result["errors"]:
        print(f"error: {error['error']}", file=sys.stderr)
    if result["warnings"]:
        print(f"{len(result['warnings'])} images had warnings (unlike the training data); see the JSON report.")
    if out is None:
        print("not saved: this model is not a run, so there is no run folder to save into; add --output DIR to "
              "save the JSON report, the predictions CSV and the figures.", file=sys.stderr)
        return USAGE_ERROR if result["errors"] else 0
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "name": result["name"],
        "source": result["source"],
        "model": predictor.describe(),
        "metrics": metrics,
        "errors": result["errors"],
        "warnings": result["warnings"],
        "population": result.get("population"),
    }
    atomic_write_json(out / f"external_{name}.json", report)
    atomic_write_text(out / f"external_{name}_predictions.csv", result["predictions"].to_csv(index=False))
    if into_run and predictor.metrics is not None:
        # Kept beside validation and test, in its own section, so the model card lists it separately.
        stored = dict(predictor.metrics)
        stored["external"] = {**(stored.get("external") or {}), result["name"]: metrics}
        atomic_write_json(predictor.folder / "metrics.json", stored)
        from cxr.model_card import write_model_card

        write_model_card(predictor.folder, stored)
    if figures:
        predictions = result["predictions"]
        _figures(out, f"external_{name}", predictions["y_true"].to_numpy(), predictions["y_score"].to_numpy(), metrics)
    print(f"report: {out / f'external_{name}.json'}")
    if result["errors"]:
        print(f"{len(result['errors'])} image(s) could not be read and were left out.", file=sys.stderr)
        return USAGE_ERROR
    return 0


def print_population(population: dict | None) -> None:
    """The population check's share of an external set, and the metrics of the images it keeps."""
    from cxr import reports

    if not population:
        return
    print(f"\npopulation check: {population['num_outside']} of {population['num_images']} image(s) "
          f"({100 * population['fraction_outside']:.1f} %) outside the model's training population"
          + ("" if population.get("detector") else " (no population detector with this model: metadata and "
             "image rules only)"))
    if population.get("in_population"):
        print(reports.format_metrics(population["in_population"],
                                     title="== in-population part (images the check keeps) =="))
    elif population.get("note"):
        print(population["note"])
