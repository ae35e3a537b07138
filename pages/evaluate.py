"""Evaluate: pick a run and read its evaluation: report, confusion matrix, ROC and PR curves, a threshold
slider, calibration, the misclassified images with heat maps, the model card, and downloads."""

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

import app_components as ui
from cxr import calibration, charts, evaluation, explain, model_folders, runs, threshold_choice
from cxr.config import CLASS_NAMES

SPLIT_TITLES = {"test": "Test (for reporting)", "val": "Validation (the threshold was chosen here)"}
IMAGES_SHOWN = 12  # the most confident first: enough to see a pattern, quick to explain
OVERLAY_ALPHA = 0.4
CURVE_HEIGHT = 420  # pixels: ROC and PR curves side by side, large enough to read an operating point
MATRIX_SELECTION = "cell"  # the confusion matrix's point selection (a click on a cell)
# Groups of images the Images section can show: a confusion-matrix cell, or every mistake.
GROUPS = {
    "misclassified": "All mistakes",
    "fn": "Missed pneumonia (false negatives)",
    "fp": "Normal called pneumonia (false positives)",
    "tp": "Pneumonia found (true positives)",
    "tn": "Normal cleared (true negatives)",
}
CELL_GROUPS = {("pneumonia", "normal"): "fn", ("normal", "pneumonia"): "fp", ("pneumonia", "pneumonia"): "tp",
               ("normal", "normal"): "tn"}  # (true, predicted) -> group


@st.cache_data(max_entries=8, show_spinner=False)
def read_predictions(run_id: str, version: float) -> pd.DataFrame:
    """``predictions.csv`` of a run (split, index, y_true, y_score); ``version`` (mtime) keys the cache."""
    del version
    return pd.read_csv(model_folders.folder_of(run_id) / "predictions.csv")


def choose_run() -> str | None:
    labels = ui.evaluation_choices()  # the bundled model first, then the runs
    if not labels:
        st.info("No training run yet: train a model on the Train page, then evaluate it here.")
        ui.link_to("train")
        return None
    ids = list(labels)
    evaluated = [run_id for run_id in ids if model_folders.metrics_of(run_id) is not None]
    wanted = st.session_state.get(ui.KEY_EVALUATION_RUN)
    if wanted not in ids:  # the newest evaluated run (what was just trained), any run, else the bundled model
        run_ids = [run_id for run_id in ids if run_id != ui.DEFAULT_MODEL]
        wanted = ([run_id for run_id in evaluated if run_id in run_ids] or run_ids or ids)[0]
    run_id = st.selectbox("Model", ids, index=ids.index(wanted), format_func=labels.get)
    st.session_state[ui.KEY_EVALUATION_RUN] = run_id
    return run_id


def point_at(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict:
    counts = evaluation.confusion_counts(y_true, y_score, threshold)
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    return {"fpr": fp / (fp + tn) if fp + tn else 0.0, "tpr": tp / (tp + fn) if tp + fn else 0.0,
            "precision": tp / (tp + fp) if tp + fp else 1.0, "specificity": tn / (tn + fp) if tn + fp else 0.0,
            "counts": counts}


def threshold_key() -> str:
    return f"{ui.KEY_THRESHOLD}_{st.session_state.get(ui.KEY_EVALUATION_RUN)}"


def reset_threshold(saved: float) -> None:
    st.session_state[threshold_key()] = saved


def save_threshold(run_id: str, threshold: float) -> None:
    """Record the slider's threshold in the run (cxr.threshold_choice); the message shows after the rerun."""
    try:
        threshold_choice.save_manual_threshold(runs.run_path(run_id), threshold)
    except ValueError as error:
        st.session_state[ui.KEY_THRESHOLD_MESSAGE] = ("error", f"Saving the threshold failed: {error}")
        return
    st.session_state[ui.KEY_THRESHOLD_MESSAGE] = (
        "info", f"Saved {threshold:.2f} as this run's threshold (a manual choice, recorded in metrics.json with "
                "its validation figures). Predict uses it from now on.")


def threshold_section(run_id: str, y_true: np.ndarray, y_score: np.ndarray, saved: float, rule: str) -> float:
    st.markdown("**Threshold**")
    key = threshold_key()
    if key not in st.session_state:
        # The saved threshold itself, not rounded to the slider's step: opening the page shows no change.
        st.session_state[key] = saved
    threshold = st.slider("Call pneumonia when P(pneumonia) ≥", 0.0, 1.0, step=0.01, key=key, format="%.3f",
                          help=f"The run's saved threshold is {saved:.3f} ({rule}). Move it to see the trade-off; "
                               "the saved one is marked on the curves.")
    now, at_saved = point_at(y_true, y_score, threshold), point_at(y_true, y_score, saved)
    columns = st.columns(4)

    def change(name: str) -> str | None:
        difference = 100 * (now[name] - at_saved[name])
        return f"{difference:+.1f} pts vs saved" if abs(difference) >= 0.05 else None

    columns[0].metric("Sensitivity (pneumonia recall)", f"{100 * now['tpr']:.1f} %", delta=change("tpr"))
    columns[1].metric("Specificity (normal recall)", f"{100 * now['specificity']:.1f} %", delta=change("specificity"))
    accuracy = (now["counts"]["tp"] + now["counts"]["tn"]) / max(len(y_true), 1)
    columns[2].metric("Accuracy", f"{100 * accuracy:.1f} %")
    columns[3].metric("Saved threshold", f"{saved:.3f}", help=rule)
    moved = threshold != saved
    reset_column, save_column = st.columns(2)
    reset_column.button("Reset to the saved threshold", icon=":material/undo:", disabled=not moved,
                        on_click=reset_threshold, args=(saved,), width="stretch")
    if ui.demo_mode():  # a public demo writes nothing
        save_column.caption("Saving a threshold is off on this public demo.")
    elif run_id == ui.DEFAULT_MODEL:  # the bundled model's files belong to the installation
        save_column.caption("The bundled model's threshold is not changed from the app.")
    else:
        save_column.button(f"Save {threshold:.2f} as this run's threshold", icon=":material/save:",
                           disabled=not moved, on_click=save_threshold, args=(run_id, threshold), width="stretch",
                           help="Recorded in the run's metrics.json as a manual choice with its validation "
                                "figures; Predict uses it from then on.")
    message = st.session_state.pop(ui.KEY_THRESHOLD_MESSAGE, None)
    if message:
        (st.error if message[0] == "error" else st.info)(message[1])
    return threshold


def evaluation_section(run_id: str, metrics: dict) -> None:
    path = model_folders.folder_of(run_id)
    predictions = read_predictions(run_id, (path / "predictions.csv").stat().st_mtime)
    splits = [split for split in ("test", "val") if (predictions["split"] == split).any()]
    split = st.radio("Split", splits, format_func=lambda name: SPLIT_TITLES.get(name, name), horizontal=True)
    part = predictions[predictions["split"] == split]
    y_true = part["y_true"].to_numpy(dtype=np.int64)
    y_score = part["y_score"].to_numpy(dtype=np.float64)
    saved = float(metrics.get("threshold", evaluation.DEFAULT_THRESHOLD))
    rule = str(metrics.get("threshold_rule", "?"))
    threshold = threshold_section(run_id, y_true, y_score, saved, rule)

    report_column, matrix_column = st.columns([3, 2])
    with report_column:
        st.markdown(f"**Classification report** ({len(y_true):,} images, threshold {threshold:.2f})")
        report = evaluation.classification_report(y_true, y_score, threshold)
        st.dataframe(report.style.format({"precision": "{:.3f}", "recall": "{:.3f}", "f1-score": "{:.3f}"}))
        summary = metrics.get("test" if split == "test" else "validation") or {}
        auc = (summary.get("auc") or {})
        if auc.get("value") is not None:
            interval = (f" (95 % interval {auc['low']:.3f}–{auc['high']:.3f})"
                        if auc.get("low") is not None and auc.get("high") is not None else "")
            st.caption(f"ROC AUC {auc['value']:.3f}{interval}; temperature {metrics.get('temperature', 1.0):.2f}.")
    with matrix_column:
        matrix = evaluation.confusion_matrix(y_true, y_score, threshold).to_numpy()
        chart_key = f"evaluate_matrix_{run_id}_{split}"
        st.altair_chart(charts.confusion_matrix_chart(matrix, title=f"Confusion matrix at {threshold:.2f}",
                                                      select=MATRIX_SELECTION),
                        key=chart_key, on_select=functools.partial(show_clicked_cell, chart_key),
                        selection_mode=MATRIX_SELECTION)
        st.caption("Click a cell to see its images below.")

    now, at_saved = point_at(y_true, y_score, threshold), point_at(y_true, y_score, saved)
    roc_column, pr_column = st.columns(2)
    with roc_column:
        roc = evaluation.roc_curve(y_true, y_score).dropna()
        if len(roc) > 1:
            st.altair_chart(charts.roc_chart(
                roc["false_positive_rate"], roc["true_positive_rate"], auc=evaluation.roc_auc(y_true, y_score),
                points={f"saved {saved:.2f}": (at_saved["fpr"], at_saved["tpr"]),
                        f"slider {threshold:.2f}": (now["fpr"], now["tpr"])}).properties(height=CURVE_HEIGHT),
                width="stretch")
        else:
            st.caption("No ROC curve: this split holds one class only.")
    with pr_column:
        pr = evaluation.precision_recall_curve(y_true, y_score).dropna()
        if len(pr) > 1:
            st.altair_chart(charts.precision_recall_chart(
                pr["recall"], pr["precision"], average_precision=evaluation.average_precision(y_true, y_score),
                points={f"saved {saved:.2f}": (at_saved["tpr"], at_saved["precision"]),
                        f"slider {threshold:.2f}": (now["tpr"], now["precision"])}).properties(height=CURVE_HEIGHT),
                width="stretch")
        else:
            st.caption("No precision-recall curve: this split has no pneumonia case.")
    calibration_column, _ = st.columns(2)
    with calibration_column:
        reliability = calibration.reliability_curve(y_true, y_score)
        if len(reliability):
            st.altair_chart(charts.calibration_chart(reliability["mean_score"], reliability["fraction_positive"],
                                                     counts=reliability["count"]), width="stretch")
            st.caption(f"Expected calibration error {calibration.expected_calibration_error(y_true, y_score):.3f} "
                       "(after temperature scaling).")

    st.markdown("**Images**")
    group = st.segmented_control("Show", list(GROUPS), format_func=GROUPS.get, key=ui.KEY_EVALUATION_GROUP,
                                 help="A cell of the confusion matrix at the slider's threshold, or every mistake.")
    if group is None:
        st.caption("Click a cell of the confusion matrix, or choose a group, to see its images.")
        return
    with ui.guarded("Showing the images"):
        images_section(run_id, part, threshold, split, group)


def show_clicked_cell(chart_key: str) -> None:
    """A click on a confusion-matrix cell chooses that cell's group of images."""
    event = st.session_state.get(chart_key) or {}
    points = ((event.get("selection") or {}).get(MATRIX_SELECTION)) or []
    if points:
        group = CELL_GROUPS.get((points[0].get("true"), points[0].get("predicted")))
        if group:
            st.session_state[ui.KEY_EVALUATION_GROUP] = group


def images_in_group(part: pd.DataFrame, threshold: float, group: str) -> pd.DataFrame:
    """Rows of ``part`` in ``group`` at ``threshold``, the most confident first (for mistakes, they say most
    about what the model gets wrong; for correct answers, they are the clearest cases)."""
    predicted = (part["y_score"] >= threshold).astype(int)
    truth = part["y_true"].astype(int)
    masks = {"misclassified": predicted != truth, "fn": (truth == 1) & (predicted == 0),
             "fp": (truth == 0) & (predicted == 1), "tp": (truth == 1) & (predicted == 1),
             "tn": (truth == 0) & (predicted == 0)}
    chosen = part[masks[group]].copy()
    chosen["confidence"] = np.where(chosen["y_score"] >= threshold, chosen["y_score"], 1 - chosen["y_score"])
    return chosen.sort_values("confidence", ascending=False)


def images_section(run_id: str, part: pd.DataFrame, threshold: float, split: str, group: str) -> None:
    everything = images_in_group(part, threshold, group)
    if everything.empty:
        st.caption(f"No {split} image in \"{GROUPS[group]}\" at threshold {threshold:.2f}.")
        return
    wrong = everything.head(IMAGES_SHOWN)
    st.caption(f"{len(everything)} {split} image(s) in \"{GROUPS[group]}\" at {threshold:.2f}; the "
               f"{len(wrong)} most confident:")
    dataset_name = model_folders.dataset_of(run_id)
    if not model_folders.dataset_imported(dataset_name):
        st.caption(f"The images of data set {dataset_name!r} are not on this server, so they are not shown.")
        st.dataframe(wrong[["index", "y_true", "y_score"]], hide_index=True)
        return
    dataset = ui.load_dataset(dataset_name, ui.dataset_version(dataset_name))
    # predictions.csv indexes the split as training saw it; show pictures only when the stored split is
    # still that one (same size, same labels), never someone else's image under this caption.
    same_split = split in dataset.splits and len(dataset.labels(split)) == len(part)
    if same_split:
        labels = np.asarray(dataset.labels(split))
        same_split = bool((labels[part["index"].to_numpy(dtype=int)] == part["y_true"].to_numpy()).all())
    if not same_split:
        st.caption(f"The {split} images of data set {dataset_name!r} are not the ones this run was evaluated on "
                   "(re-imported or carved at training time), so they are not shown.")
        st.dataframe(wrong[["index", "y_true", "y_score"]], hide_index=True)
        return
    images = dataset.images(split)
    manifest = dataset.manifest
    files = manifest.loc[manifest["split"] == split, "file"].astype(str).tolist()
    if len(files) != len(images):
        files = [f"#{index}" for index in range(len(images))]
    names = {int(index): Path(files[int(index)]).name for index in wrong["index"]}
    with_heatmaps = st.toggle("Heat maps (Grad-CAM)", value=False, key=f"evaluate_heatmaps_{run_id}",
                              help="Loads the run's model; a few seconds the first time.")
    chosen = [images[int(index)] for index in wrong["index"]]
    if with_heatmaps:
        predictor = ui.load_predictor(run_id, ui.model_version(run_id))
        with st.spinner("Computing heat maps…"):
            results = predictor.predict(chosen, names=[names[int(index)] for index in wrong["index"]],
                                        explain="gradcam")
        chosen = [explain.overlay(result.image, result.heatmap, alpha=OVERLAY_ALPHA)
                  if result.heatmap is not None else result.image for result in results]
    columns = st.columns(4)
    for position, ((_, row), image) in enumerate(zip(wrong.iterrows(), chosen, strict=True)):
        caption = (f"{names[int(row['index'])]}: true {CLASS_NAMES[int(row['y_true'])]}, "
                   f"P(pneumonia) {row['y_score']:.2f}")
        columns[position % 4].image(image, caption=caption, width="stretch")


def downloads_section(run_id: str, metrics: dict) -> None:
    path = model_folders.folder_of(run_id)
    rows = []
    for split_name in ("validation", "test"):
        summary = metrics.get(split_name) or {}
        for name, value in summary.items():
            if isinstance(value, dict) and "value" in value:
                rows.append({"split": split_name, "metric": name, "value": value["value"],
                             "low": value.get("low"), "high": value.get("high")})
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"split": split_name, "metric": name, "value": value, "low": None, "high": None})
    columns = st.columns(3)
    columns[0].download_button("Metrics (CSV)", pd.DataFrame(rows).to_csv(index=False).encode(),
                               file_name=f"{run_id}-metrics.csv", mime="text/csv", on_click="ignore",
                               icon=":material/download:")
    columns[1].download_button("Metrics (JSON)", json.dumps(metrics, indent=2).encode(),
                               file_name=f"{run_id}-metrics.json", mime="application/json", on_click="ignore",
                               icon=":material/download:")
    if (path / "predictions.csv").is_file():
        columns[2].download_button("Predictions (CSV)", (path / "predictions.csv").read_bytes(),
                                   file_name=f"{run_id}-predictions.csv", mime="text/csv", on_click="ignore",
                                   icon=":material/download:")


EXPORT_FORMATS = {"tflite": "TFLite", "savedmodel": "SavedModel"}


def prepare_export(run_id: str, export_format: str) -> None:
    """Export the model (cxr.export) into the session, so that the download button can serve it."""
    from cxr import export

    st.session_state.pop(ui.KEY_EXPORT, None)
    try:
        predictor = ui.load_predictor(run_id, ui.model_version(run_id))
        name, data = export.export_zip(predictor, export_format, name=f"cxr-{run_id}")
    except Exception as error:  # noqa: BLE001 - shown as a message, the traceback to the log
        ui.LOGGER.error("export of %s failed", run_id, exc_info=error)
        message = str(error) if isinstance(error, ValueError) else f"unexpected {type(error).__name__} (see the log)"
        st.session_state[ui.KEY_EXPORT] = {"error": f"Exporting the model failed: {message}"}
        return
    st.session_state[ui.KEY_EXPORT] = {"key": (run_id, ui.model_version(run_id), export_format), "name": name,
                                       "data": data}


def export_section(run_id: str) -> None:
    """The model as a file for other software: SavedModel or TFLite, giving the calibrated probability, with
    a JSON sidecar (threshold, temperature, input size)."""
    st.markdown("**Export the model**")
    if ui.demo_mode():
        st.caption("Exporting models is off on this public demo.")
        return
    format_column, action_column = st.columns([2, 1])
    export_format = format_column.segmented_control("Format", list(EXPORT_FORMATS), format_func=EXPORT_FORMATS.get,
                                                    default="tflite", key=ui.KEY_EXPORT_FORMAT,
                                                    help="TFLite: one file, for phones and edge devices. "
                                                         "SavedModel: a folder, for TensorFlow serving.") or "tflite"
    action_column.button("Prepare the export", icon=":material/package_2:", on_click=prepare_export,
                         args=(run_id, export_format), help="Takes a few seconds; then the download appears.")
    prepared = st.session_state.get(ui.KEY_EXPORT) or {}
    if prepared.get("error"):
        st.error(prepared["error"])
    elif prepared.get("key") == (run_id, ui.model_version(run_id), export_format):
        st.download_button(f"Download {prepared['name']}", prepared["data"], file_name=prepared["name"],
                           mime="application/zip", icon=":material/download:", on_click="ignore")
        st.caption("Input: grayscale pixels 0–255 at the model's size; output: the calibrated P(pneumonia). The "
                   "JSON inside gives the threshold and how to prepare images.")


def main() -> None:
    st.title("Evaluate")
    run_id = choose_run()
    if run_id is None:
        return
    status = model_folders.status_of(run_id)
    metrics = model_folders.metrics_of(run_id)
    if status.get("state") == "failed":
        st.error(f"Run {run_id} failed: {status.get('error') or status.get('message') or 'no reason recorded'}. "
                 "It has no evaluation; resume it on the Train page or start a new run.")
    if metrics is None:
        if status.get("state") in ui.ACTIVE_STATES:
            st.info(f"Run {run_id} is still {status.get('state')}: its evaluation appears when training ends.")
        elif status.get("state") != "failed":
            st.warning(f"Run {run_id} ({status.get('state')}) has no evaluation (metrics.json). Only a run that "
                       "finished training is evaluated; resume it on the Train page.")
        return
    for note in metrics.get("notes") or []:
        st.caption(f"Note: {note}")
    if not (model_folders.folder_of(run_id) / "predictions.csv").is_file():
        st.warning("This run has metrics but no predictions.csv, so the curves cannot be drawn.")
    else:
        evaluation_section(run_id, metrics)
    card = model_folders.folder_of(run_id) / "model_card.md"
    if card.is_file():
        with st.expander("Model card"):
            st.markdown(card.read_text(encoding="utf-8"))
    st.markdown("**Downloads**")
    downloads_section(run_id, metrics)
    if (model_folders.folder_of(run_id) / "model.keras").is_file():
        export_section(run_id)


ui.run_page(main, key="evaluate")
